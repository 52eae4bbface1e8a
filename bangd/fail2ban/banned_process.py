"""Which of some entries fail2ban holds, read from its `get JAIL banned` reply in a child.

With a million bans that reply is 22 MB of pickle, and decoding it is one C call that
holds the GIL for the whole of it (80-130 ms: status answers stalled that long during a
refresh) and leaves a million strings in the daemon (the decode took its resident size
from 126 to 334 MiB). fail2ban's own test for a few addresses (`get JAIL banned IP...`)
scans its whole ban list once per address, so it is no way out at a million.

So the reply is handed on as it comes from fail2ban's socket: kept here while it is small
(an empty jail, a small one), and once it passes CHILD_MIN, given to a child that decodes
it with the same refusing unpickler (`wire.decode_reply`), keeps of the entries it was
given those fail2ban holds (or does not), and answers only them. The daemon never holds
the whole reply either.

To the child: a frame with the request (JSON: held or not held wanted), a frame with the
entries one per line, then the reply's bytes to the end of its input. From the child: the
outcome (JSON: null, or the error the reply is), then the entries, one per line, in the
order they were given.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import BinaryIO, Final

from bangd import slices
from bangd.children import Child, ChildFailed, lines_frame, lines_in, read_frame, write_frame
from bangd.errors import BanListUnread, Fail2banProtocolError
from bangd.fail2ban.wire import RemoteError, decode_reply

CHILD_MIN: Final = 1 << 20  # bytes of reply (~40k bans) from which a child reads it
ROLE: Final = "the ban list reader process"
log = logging.getLogger(__name__)


class BanListReader:
    """The daemon's side: `feed` it the reply as it comes, then ask `in_child` and either
    `answer` (a child read it) or `kept` (it stayed small, or no child could start)."""

    def __init__(self, what: str, entries: Sequence[str], *, held: bool) -> None:
        self._what = what  # the command, for errors: "get bl banned"
        self._entries = entries
        self._held = held
        self._kept = bytearray()
        self._child: Child | None = None
        self._here = False  # no child could start: the reply is read here after all

    @property
    def in_child(self) -> bool:
        return self._child is not None

    @property
    def kept(self) -> bytearray:
        return self._kept

    async def feed(self, piece: bytes) -> None:
        try:
            if self._child is not None:
                await self._child.send_raw(piece)
                return
            self._kept += piece
            if len(self._kept) >= CHILD_MIN and not self._here:
                await self._hand_over()
        except ChildFailed as exc:
            raise self._unread(exc) from None

    async def answer(self) -> list[str] | RemoteError:
        """The entries wanted, or the error fail2ban answered instead."""
        child = self._child
        assert child is not None
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

    async def __aenter__(self) -> BanListReader:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._child is not None:
            await self._child.close()

    async def _hand_over(self) -> None:
        try:
            child = await Child.start(__name__, ROLE)
        except OSError as exc:
            log.warning("ban list reader process not started (%s): reading it here", exc)
            self._here = True
            return
        self._child = child
        await child.send(json.dumps({"held": self._held, "what": self._what}).encode())
        await child.send(await slices.text_of(self._entries))
        await child.send_raw(self._kept)
        self._kept = bytearray()

    def _unread(self, exc: ChildFailed) -> BanListUnread:
        return BanListUnread(f"fail2ban's `{self._what}` came but could not be read: {exc}")


def child_main(request: BinaryIO, answer: BinaryIO) -> None:
    wanted, entries = read_frame(request), read_frame(request)
    if wanted is None or entries is None:
        raise EOFError("the daemon's request ended early")
    settings = json.loads(wanted)
    held: bool = settings["held"]
    try:
        banned = _banned(request.read(), settings["what"])
    except Fail2banProtocolError as exc:
        write_frame(answer, json.dumps({"error": str(exc)}).encode())
        return
    if isinstance(banned, RemoteError):
        write_frame(answer, json.dumps(
            {"remote": [banned.name, banned.message,
                        *(a for a in banned.args[:1] if type(a) is str)]}
        ).encode())
        return
    given = lines_in(entries)
    if len(given) < len(banned):  # the smaller side becomes the set
        wanted_set = set(given)
        found = {ban for ban in banned if ban in wanted_set}
    else:
        found = set(banned)
    del banned
    write_frame(answer, b"null")
    write_frame(answer, lines_frame([e for e in given if (e in found) is held]))


def _banned(reply: bytes, what: str) -> list[str] | RemoteError:
    code, result = decode_reply(reply)
    if code != 0:
        if isinstance(result, RemoteError):
            return result
        raise Fail2banProtocolError(f"unexpected error reply {result!r:.200}")
    if not isinstance(result, list) or not all(type(item) is str for item in result):
        raise Fail2banProtocolError(
            f"fail2ban's `{what}` is not a list of strings: {type(result).__name__}"
        )
    return result
