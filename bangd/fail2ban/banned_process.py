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
read here, as is any where no child can start. The child's side is `banned_child`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Final

from bangd import slices
from bangd.children import Child, ChildFailed
from bangd.errors import BanListUnread, Fail2banProtocolError
from bangd.fail2ban import banned_child
from bangd.fail2ban.banned_child import banned_of
from bangd.fail2ban.wire import RemoteError

CHILD_MIN_BANS: Final = 50_000  # ~1 MiB of reply: from here on a child reads it
_DECODE_HERE_MAX: Final = 256 * 1024  # bytes of reply decoded in the loop; more in a thread
# A reply read here beyond this is refused, not kept: fail2ban's count said it was small.
KEPT_MAX: Final = 512 * 1024 * 1024
ROLE: Final = "the ban list reader process"
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
            child = await Child.start(banned_child.__name__, ROLE)
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
            banned = banned_of(reply, self._what)
        else:
            banned = await asyncio.to_thread(banned_of, reply, self._what)
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
