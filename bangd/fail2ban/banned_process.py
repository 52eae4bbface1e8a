"""Which of some entries fail2ban holds, read from its `get JAIL banned` reply in a child.

With a million bans that reply is 22 MB of pickle, and decoding it is one C call that
holds the GIL for the whole of it (80-130 ms: status answers stalled that long during a
refresh) and leaves a million strings in the daemon (the decode took its resident size
from 126 to 334 MiB). fail2ban's own test for a few addresses (`get JAIL banned IP...`)
scans its whole ban list once per address, so it is no way out at a million.

So where fail2ban counts CHILD_MIN_BANS or more bans, a child is started and given the
entries before the list is asked for (fail2ban's timeout then measures fail2ban alone),
and the reply goes on to it as it comes from fail2ban's socket. The child reads the bans
off the reply's bytes where it has the one shape fail2ban gives a ban list
(`banlist_scan`: unpickled, 1M bans took it to 214 MiB, mostly the unpickler's own
objects), and unpickles any other reply with the same refusing unpickler as the daemon
(`wire.decode_reply`). It keeps of the entries it was given those fail2ban holds (or does
not), and answers only them. The daemon never holds the whole reply. A smaller list is
read here, as is any where no child can start.

To the child: a frame with the request (JSON: held or not held wanted, and fail2ban's
count of bans, which says which side becomes the set), a frame with the
entries one per line, then the reply's bytes to the end of its input. From the child: the
outcome (JSON: null, or the error fail2ban answered), then the entries, one per line, in
the order they were given.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Container, Iterable, Iterator, Sequence
from itertools import islice
from types import TracebackType
from typing import BinaryIO, Final

from bangd import slices
from bangd.children import (
    Child,
    ChildFailed,
    read_frame,
    write_frame,
    write_pieces,
)
from bangd.entries import SortedText
from bangd.errors import BanListUnread, Fail2banProtocolError
from bangd.fail2ban.banlist_scan import NotScannable, Unframed, scan_bans
from bangd.fail2ban.wire import RemoteError, decode_reply
from bangd.lines import TextLines

CHILD_MIN_BANS: Final = 50_000  # ~1 MiB of reply: from here on a child reads it
_DECODE_HERE_MAX: Final = 256 * 1024  # bytes of reply decoded in the loop; more in a thread
# A reply read here beyond this is refused, not kept: fail2ban's count said it was small.
KEPT_MAX: Final = 512 * 1024 * 1024
ROLE: Final = "the ban list reader process"
# Bans given to SortedText at a time: each bucket's share of a chunk is one string, and
# with 8k a chunk those were ~8 bans each, their overhead a third more memory.
_SORT_CHUNK: Final = 1 << 16
log = logging.getLogger(__name__)


class BanListReader:
    """The daemon's side: `start` one (fail2ban's count of bans says where the list is
    read), `feed` it the reply as it comes, then `answer`."""

    def __init__(
        self, what: str, entries: Sequence[str], *, held: bool, child: Child | None
    ) -> None:
        self._what = what  # the command, for errors: "get bl banned"
        self._entries = entries
        self._held = held
        self._child = child
        self._kept = bytearray()

    @classmethod
    async def start(
        cls, what: str, entries: Sequence[str], *, held: bool, bans: int
    ) -> BanListReader:
        if bans < CHILD_MIN_BANS:
            return cls(what, entries, held=held, child=None)
        try:
            child = await Child.start(__name__, ROLE)
        except OSError as exc:
            log.warning("ban list reader process not started (%s): reading it here", exc)
            return cls(what, entries, held=held, child=None)
        reader = cls(what, entries, held=held, child=child)
        try:
            await child.send(json.dumps({"held": held, "what": what, "bans": bans}).encode())
            await child.send_pieces(await slices.text_pieces(entries))
        except BaseException as exc:
            await child.close()
            if isinstance(exc, ChildFailed):
                raise reader._unread(exc) from None
            raise
        return reader

    async def feed(self, piece: bytes) -> None:
        if self._child is None:
            self._kept += piece
            if len(self._kept) > KEPT_MAX:
                raise Fail2banProtocolError(
                    f"fail2ban's `{self._what}` is larger than {KEPT_MAX >> 20} MiB, yet "
                    "its count of bans was small: refused"
                )
            return
        try:
            await self._child.send_raw(piece)
        except ChildFailed as exc:
            raise self._unread(exc) from None

    async def answer(self) -> Sequence[str] | RemoteError:
        """The entries wanted, in their order, or the error fail2ban answered instead."""
        if self._child is None:
            return await self._answer_here()
        child = self._child
        try:
            await child.end_input()
            outcome = json.loads(await child.receive())
            if outcome is not None:
                if not isinstance(outcome, dict):
                    raise child.garbage(f"not an outcome: {outcome!r:.100}")
                if "error" in outcome:
                    raise Fail2banProtocolError(str(outcome["error"]))
                name, message, *args = outcome["remote"]
                return RemoteError(str(name), str(message), tuple(args))
            found = await child.receive_lines()
            await child.finish()
        except ChildFailed as exc:
            raise self._unread(exc) from None
        except (ValueError, KeyError, TypeError) as exc:  # JSON, or an outcome of another shape
            raise self._unread(child.garbage(repr(exc))) from None
        return found

    async def _answer_here(self) -> Sequence[str] | RemoteError:
        reply = bytes(self._kept)
        self._kept = bytearray()
        if len(reply) <= _DECODE_HERE_MAX:
            banned = _banned(reply, self._what)
        else:
            banned = await asyncio.to_thread(_banned, reply, self._what)
        if isinstance(banned, RemoteError):
            return banned
        if not banned:
            return [] if self._held else self._entries  # read only: not a copy
        found = await slices.common(self._entries, banned)
        return await slices.kept(self._entries, found, inside=self._held)

    async def __aenter__(self) -> BanListReader:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._child is not None:
            await self._child.close()

    def _unread(self, exc: ChildFailed) -> BanListUnread:
        return BanListUnread(f"fail2ban's `{self._what}` came but could not be read: {exc}")


def child_main(request: BinaryIO, answer: BinaryIO) -> None:
    wanted, entries = read_frame(request), read_frame(request)
    if wanted is None or entries is None:
        raise EOFError("the daemon's request ended early")
    settings = json.loads(wanted)
    held: bool = settings["held"]
    given = TextLines.of(entries)  # not a million strings beside fail2ban's million
    reply = Unframed(request)
    try:
        windows = _presence(given, map(bytes.decode, scan_bans(reply)), settings["bans"])
    except NotScannable:  # not the shape fail2ban gives a ban list: unpickled, then
        try:
            banned = _banned(reply.original(), settings["what"])
        except Fail2banProtocolError as exc:
            write_frame(answer, json.dumps({"error": str(exc)}).encode())
            return
        if isinstance(banned, RemoteError):
            write_frame(answer, json.dumps(
                {"remote": [banned.name, banned.message,
                            *(a for a in banned.args[:1] if type(a) is str)]}
            ).encode())
            return
        windows = _presence(given, banned, settings["bans"])
        del banned
    del reply
    write_frame(answer, b"null")
    write_pieces(answer, (
        piece for part, present in windows
        for piece in slices.lines_pieces([e for e in part if (e in present) is held])
    ))


Presence = Iterator[tuple[Sequence[str], Container[str]]]


def _presence(given: Sequence[str], bans: Iterable[str], count: int) -> Presence:
    """The given entries a window at a time, each with a container that holds those of
    them fail2ban holds. Every ban is read before this returns (a reply found not to be
    scannable halfway is so found before anything is answered).

    The smaller side is kept whole, as fail2ban's count (`count`) says: a set of the given
    entries, the bans read through it; or, with as many bans as entries (a
    reconciliation), the bans as one sorted text (`SortedText`), compared with the given
    entries window by window where those are in key order, as bangd's are. A set of 1M
    bans took this process to 137 MiB; as text they are ~18 MiB.
    """
    if len(given) < count:
        asked = set(given)
        found = set(filter(asked.__contains__, bans))
        del asked
        return ((given[start : start + slices.SLICE], found)
                for start in range(0, len(given), slices.SLICE))
    if not slices.in_key_order(given):
        every = set(bans)
        return ((given[start : start + slices.SLICE], every)
                for start in range(0, len(given), slices.SLICE))
    ordered, reading = SortedText(), iter(bans)
    for part in iter(lambda: list(islice(reading, _SORT_CHUNK)), []):
        ordered.add(part)
    return _merged(given, ordered)


def _merged(given: Sequence[str], bans: SortedText) -> Presence:
    """Sorted only once the caller has let go of the reply (22 MB at 1M bans)."""
    held, _ = bans.finish()
    for part, held_part in slices.aligned_windows(given, held):
        yield part, set(held_part)


def _banned(reply: bytes, what: str) -> list[str] | RemoteError:
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
