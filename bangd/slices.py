"""Pure-Python work on a million entries done in the event loop itself, a slice at a time.

A thread is no place for such work: it shares the GIL, and each time the loop wakes (a
control client's line, a query's answer) the loop waits for the thread to let go, up to
the switch interval; a `status` call wakes it a dozen times. Measured while a 1M-entry
set was built and compared in a thread: status answers up to 355 ms. Here each step is
one C-level call over at most SLICE entries (~0.5 ms), with the loop free between steps,
so a status call waits a few milliseconds in all.

The same work without the pauses, for child processes and worker threads (a GIL of their
own), is `windows`: each function here is a loop over its windows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Collection, Iterable, Sequence
from itertools import filterfalse

from . import windows
from .lines import LinesReceiver, TextLines


async def pause() -> None:
    """Let every other ready task run before the next slice."""
    await asyncio.sleep(0)


async def text_pieces(items: Sequence[str]) -> list[bytes | memoryview]:
    """`lines_pieces`, a slice at a time; of `TextLines`, views of its own text."""
    if isinstance(items, TextLines):
        return items.text_pieces()
    pieces: list[bytes | memoryview] = []
    for piece in windows.lines_pieces(items):
        pieces.append(piece)
        await pause()
    return pieces


async def pieces_of(items: Sequence[str]) -> AsyncIterator[bytes]:
    """`lines_pieces`, a slice at a time, each piece whole lines: what `Parse.delta` reads."""
    for piece in windows.lines_pieces(items):
        yield piece
        await pause()


async def without(items: Sequence[str], drop: Sequence[str]) -> Sequence[str]:
    """The items not in `drop`, both in key order, kept as text (`lines.TextLines`): a
    list of what is left would be a string each, up to 1M of them."""
    if not drop:
        return items
    left = LinesReceiver()
    for part, drop_part in windows.aligned_windows(items, drop):
        gone = set(drop_part)
        for piece in windows.lines_pieces([e for e in part if e not in gone]):
            left.add(piece)
        await pause()
    return left.lines()


async def common(items: Sequence[str], others: Sequence[str]) -> set[str]:
    """A set that holds every one of `items` that is in `others`: the smaller of the two
    becomes the set, the other is only read."""
    if len(others) <= len(items):
        return await set_of(others)
    wanted = await set_of(items)
    return await set_of(await kept(others, wanted, inside=True))


async def set_of(items: Sequence[str]) -> set[str]:
    """A set of `items`. Each step re-hashes the whole set when it grows (~100 ms at 1M), so
    callers make sets of the smaller side."""
    found: set[str] = set()
    for start in range(0, len(items), windows.SLICE):
        found.update(items[start : start + windows.SLICE])
        await pause()
    return found


async def is_sorted(items: Sequence[str]) -> bool:
    """Strictly increasing: sorted and distinct."""
    for ascending in windows.ascending_windows(items):
        if not ascending:
            return False
        await pause()
    return True


async def kept(items: Sequence[str], keep: Collection[str], *, inside: bool) -> list[str]:
    """The items that are (`inside`) or are not in `keep`, in their order."""
    out: list[str] = []
    test = keep.__contains__
    for start in range(0, len(items), windows.SLICE):
        part = items[start : start + windows.SLICE]
        out.extend(filter(test, part) if inside else filterfalse(test, part))
        await pause()
    return out


async def lines_of_pieces(pieces: AsyncIterable[bytes]) -> Sequence[str]:
    """The distinct lines of text read a piece at a time in key order (the store's pieces,
    each ended by a newline), kept as the text (`lines.TextLines`: 18 MiB per million lines,
    not ~70 of strings) and indexed as each piece comes; checked, and sorted in a thread
    should a query planner ever join a piece otherwise."""
    receiver = LinesReceiver()
    async for piece in pieces:
        receiver.add(piece)
        await pause()
    lines = receiver.lines()
    if await is_sorted(lines):
        return lines
    return await asyncio.to_thread(_sorted_distinct, lines)


def _sorted_distinct(items: Iterable[str]) -> list[str]:
    return sorted(set(items))


async def sorted_difference(
    new: Sequence[str], old: Sequence[str]
) -> tuple[Sequence[str], list[str]]:
    """(only in new, only in old), in key order, of two lists each in key order and distinct.

    A window at a time (`difference_windows`), with the loop free between windows. A set of
    1M held the loop for up to 104 ms each time it grew (it re-hashes everything), and in a
    thread the whole comparison stalled status answers up to 355 ms. With nothing old,
    `new` itself is answered, not a copy of it.
    """
    if not old:
        return new, []
    only_new: list[str] = []
    only_old: list[str] = []
    for fresh, stale in windows.difference_windows(new, old):
        only_new.extend(fresh)
        only_old.extend(stale)
        await pause()
    return only_new, only_old
