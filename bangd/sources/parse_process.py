"""Parse a big download in a child process, and compare it there with what is applied.

A parse of 1M lines in a thread held the daemon's GIL enough to slow `status` to 21-35 ms
(`children` says why); in a child it does not touch the daemon at all. The child also
keeps the parsed entries: the daemon is told the findings (counts, digest), and when the
import goes ahead it sends the child what the source has applied and is answered only the
difference. A daily refresh that replaces 5% of a 1M list so costs the daemon ~100k
strings, not the 2M of both lists (measured: 465 MiB peak before, see bench/run).

Small downloads are parsed in a thread: starting an interpreter (~0.1 s) costs more than
the few milliseconds of GIL their parse takes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, Sequence
from types import TracebackType
from typing import Any, Final

from .. import slices
from ..children import Child, ChildFailed
from ..config import TEXT_FORMAT, FeedFormat, IPNetwork
from ..errors import BangdError
from ..lines import TextLines
from . import parse_child
from .parse import ParsedList, ParseFindings, parse_blocklist

PROCESS_MIN_BYTES: Final = 1 << 20  # ~70k lines: below this, a thread is cheaper
log = logging.getLogger(__name__)

Delta = tuple[Sequence[str], Sequence[str]]  # (to add, to remove), each in key order


class ParseFailed(BangdError):
    """The parser process died or answered something that is not a parse."""


class Parse(ABC):
    """A finished parse: its findings, and the comparison with what a source has applied.
    `async with` it: a parse kept in a child holds that child until it is closed."""

    findings: ParseFindings

    @abstractmethod
    async def delta(self, applied: AsyncIterable[bytes]) -> Delta:
        """What to add and to remove, given what is applied: pieces of text, one entry per
        line, each in key order and after the piece before (`ImportStore.entries_pieces`);
        once."""

    @abstractmethod
    async def close(self) -> None:
        """Let go of the entries (and their process)."""

    async def __aenter__(self) -> Parse:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class ParsedHere(Parse):
    """The entries are in this process: compared in the event loop, a slice at a time."""

    def __init__(self, parsed: ParsedList) -> None:
        self.parsed = parsed
        self.findings = parsed.findings

    async def delta(self, applied: AsyncIterable[bytes]) -> Delta:
        old = await slices.lines_of_pieces(applied)
        return await slices.sorted_difference(self.parsed.entries.ordered, old)

    async def close(self) -> None:
        pass


class ParsedInChild(Parse):
    """The entries stay in the child that parsed them: it is sent what is applied and
    answers the difference, then ends. So a parse in a child is compared once."""

    def __init__(self, child: Child, findings: ParseFindings) -> None:
        self._child = child
        self.findings = findings
        self._compared = False

    async def delta(self, applied: AsyncIterable[bytes]) -> Delta:
        if self._compared:
            raise RuntimeError("a parse kept in a child is compared once")
        self._compared = True
        try:
            async for piece in applied:  # sent as read: never all of it here at once
                if piece:
                    await self._child.send(piece)
            await self._child.send(b"")  # the end of what is applied
            to_add = await self._child.receive_lines()
            to_remove = await self._child.receive_lines()
            await self._child.finish()
        except ChildFailed as exc:
            raise ParseFailed(f"{exc}; nothing applied") from None
        return to_add, to_remove

    async def close(self) -> None:
        await self._child.close()


async def parse_off_loop(
    data: bytes | bytearray,
    *,
    allowlist: Sequence[IPNetwork] = (),
    skip_reserved: bool = True,
    feed: FeedFormat = TEXT_FORMAT,
    process_min_bytes: int | None = None,
) -> Parse:
    """`parse_blocklist` away from the event loop: big downloads in a child process.

    A child that cannot be started (no memory or processes left) is no reason to refuse
    the import: the parse then runs in a thread, as small ones do. `data` may be a
    bytearray (a `TextLines`' own text): a child is sent it as it is, a thread parses a
    bytes copy.
    """
    if process_min_bytes is None:
        process_min_bytes = PROCESS_MIN_BYTES
    if len(data) >= process_min_bytes:
        settings = {"allowlist": tuple(allowlist), "skip_reserved": skip_reserved, "feed": feed}
        try:
            child = await Child.start(parse_child.__name__, "the parser process")
        except OSError as exc:
            log.warning("parser process not started (%s): parsing in a thread instead", exc)
        else:
            try:
                # Written apart: joining them was one 14 MiB copy in the loop.
                await child.send(pickle.dumps(settings, pickle.HIGHEST_PROTOCOL))
                await child.send(data)
                return ParsedInChild(child, _findings_of(child, await child.receive()))
            except BaseException as exc:
                await child.close()
                if isinstance(exc, ChildFailed):
                    raise ParseFailed(f"{exc}; nothing applied") from None
                raise
    return ParsedHere(await asyncio.to_thread(
        parse_blocklist, bytes(data), allowlist=allowlist, skip_reserved=skip_reserved, feed=feed
    ))


async def screened_out(
    entries: Sequence[str], *, allowlist: Sequence[IPNetwork], skip_reserved: bool
) -> Sequence[str]:
    """Those of `entries` (normalised, in key order: what bangd applied) that the screen
    now drops: parsed again with it, as any list (a big one in the parser process), and
    compared with themselves. Joined and parsed in a thread, 1M entries took the daemon
    from 62 to 179 MiB and its GIL for seconds."""
    text = (entries.text if isinstance(entries, TextLines)  # no copy of 14 MiB per 1M
            else b"".join(await slices.text_pieces(entries)))
    async with await parse_off_loop(
        text, allowlist=allowlist, skip_reserved=skip_reserved
    ) as parse:
        del text
        _, dropped = await parse.delta(slices.pieces_of(entries))
    return dropped


_FIELDS: Final = frozenset(ParseFindings.__dataclass_fields__)


def _findings_of(child: Child, frame: bytes) -> ParseFindings:
    try:
        header: dict[str, Any] = json.loads(frame)
        if not isinstance(header, dict) or set(header) != _FIELDS:
            raise ValueError("no parse findings")
        header["invalid_lines"] = tuple(
            (int(number), str(text)) for number, text in header["invalid_lines"]
        )
        return ParseFindings(**header)
    except (ValueError, TypeError) as exc:
        raise child.garbage(str(exc)) from None
