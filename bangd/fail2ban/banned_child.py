"""The ban list reader process (`banned_process`): which of the entries it is given
fail2ban holds, read off fail2ban's `get JAIL banned` reply as it arrives.

To it: a frame with the request (JSON: held or not held wanted, and fail2ban's count of
bans, which says which side is kept whole), a frame with the entries one per line, then the
reply's bytes to the end of its input. From it: the outcome (JSON: null, or the error
fail2ban answered), then the entries wanted, one per line, in the order they were given.
"""

from __future__ import annotations

import json
from collections.abc import Container, Iterable, Iterator, Sequence
from itertools import islice
from typing import BinaryIO, Final

from bangd import windows
from bangd.child import read_frame, write_frame, write_pieces
from bangd.entries import SortedText
from bangd.errors import Fail2banProtocolError
from bangd.fail2ban.banlist_scan import NotScannable, Unframed, scan_bans
from bangd.fail2ban.wire import RemoteError, decode_reply
from bangd.lines import TextLines

# Bans given to SortedText at a time: each bucket's share of a chunk is one string, and
# with 8k a chunk those were ~8 bans each, their overhead a third more memory.
_SORT_CHUNK: Final = 1 << 16
_SET_COST: Final = 6  # an entry in a set takes about as much memory as this many sorted bans


def child_main(request: BinaryIO, answer: BinaryIO) -> None:
    wanted, entries = read_frame(request), read_frame(request)
    if wanted is None or entries is None:
        raise EOFError("the daemon's request ended early")
    settings = json.loads(wanted)
    held: bool = settings["held"]
    reply = Unframed(request)
    try:
        presence = _presence(entries, map(bytes.decode, scan_bans(reply)), settings["bans"])
    except NotScannable:  # handled below: here the traceback would keep the half-read bans
        presence = None
    if presence is None:  # not the shape fail2ban gives a ban list: unpickled, then
        try:
            banned = banned_of(reply.original(), settings["what"])
        except Fail2banProtocolError as exc:
            write_frame(answer, json.dumps({"error": str(exc)}).encode())
            return
        if isinstance(banned, RemoteError):
            write_frame(answer, json.dumps(
                {"remote": [banned.name, banned.message,
                            *(a for a in banned.args[:1] if type(a) is str)]}
            ).encode())
            return
        # Any text may be a ban here: only one that could be an entry's line is compared
        # (a newline in one would be two lines of the sorted bans, out of order).
        presence = _presence(entries, filter(_one_line, banned), settings["bans"])
        del banned
    del reply
    write_frame(answer, b"null")
    write_pieces(answer, (
        piece for part, present in presence
        for piece in windows.lines_pieces([e for e in part if (e in present) is held])
    ))


Presence = Iterator[tuple[Sequence[str], Container[str]]]


def _one_line(ban: str) -> bool:
    return bool(ban) and ban.isascii() and "\n" not in ban


def _presence(entries: bytes, bans: Iterable[str], count: int) -> Presence:
    """The given entries (one per line) a window at a time, each with a container that
    holds those of them fail2ban holds. Every ban is read before this returns (a reply found
    not to be scannable halfway is so found before anything is answered).

    What costs less memory is kept whole, as fail2ban's count (`count`) says: a set of the
    given entries (~100 bytes each), the bans read through it, where they are a small
    share of the bans (a refresh's new entries); otherwise (a reconciliation, where
    fail2ban holds what bangd expects and maybe more) the bans as one sorted text
    (`SortedText`, ~18 bytes each), compared with the given entries window by window. A set
    of 1M took this process to 137 MiB. The entries are kept as their text (`TextLines`).
    """
    lines = entries.count(b"\n") + (not entries.endswith(b"\n") and bool(entries))
    if lines * _SET_COST < count:
        given = TextLines.of(entries)
        asked = set(given)
        found = set(filter(asked.__contains__, bans))
        del asked
        return ((given[start : start + windows.SLICE], found)
                for start in range(0, len(given), windows.SLICE))
    ordered, reading = SortedText(), iter(bans)
    for part in iter(lambda: list(islice(reading, _SORT_CHUNK)), []):
        ordered.add(part)
    return _merged(entries, ordered)


def _merged(entries: bytes, bans: SortedText) -> Presence:
    """The bans sorted, and the entries indexed, once the caller has let go of the reply
    (22 MB at 1M bans)."""
    sorted_bans, _ = bans.finish()
    given = TextLines.of(entries)
    if not windows.in_key_order(given):  # not bangd's key order: the bans as a set, then
        every = set(sorted_bans)
        del sorted_bans
        for start in range(0, len(given), windows.SLICE):
            yield given[start : start + windows.SLICE], every
        return
    for part, bans_part in windows.aligned_windows(given, sorted_bans):
        yield part, set(bans_part)


def banned_of(reply: bytes, what: str) -> list[str] | RemoteError:
    """The ban list in fail2ban's reply, or the error it answered (any error reply: what
    is not one of fail2ban's exceptions is told as an unknown one)."""
    code, result = decode_reply(reply)
    if code != 0:
        if isinstance(result, RemoteError):
            return result
        return RemoteError("unknown", f"unexpected error reply {result!r:.200}")
    if not isinstance(result, list) or not all(type(item) is str for item in result):
        raise Fail2banProtocolError(
            f"fail2ban's `{what}` is not a list of strings: {type(result).__name__}"
        )
    return result
