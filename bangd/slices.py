"""Pure-Python work on a million entries done in the event loop itself, a slice at a time.

A thread is no place for such work: it shares the GIL, and each time the loop wakes (a
control client's line, a query's answer) the loop waits for the thread to let go, up to
the switch interval; a `status` call wakes it a dozen times. Measured while a 1M-entry
set was built and compared in a thread: status answers up to 355 ms. Here each step is
one C-level call over at most SLICE entries (~0.5 ms), with the loop free between steps,
so a status call waits a few milliseconds in all.

The few functions here that do not pause (`lines_pieces`, `in_key_order`,
`difference_windows`, `pieces_difference`, `aligned_windows`) are the pieces child
processes (and worker threads) use too: a child has its own GIL, and runs them whole.
"""

from __future__ import annotations

import asyncio
import operator
from bisect import bisect_right
from collections.abc import Collection, Iterable, Iterator, Sequence
from itertools import filterfalse
from typing import Final, overload

from .lines import TextLines

SLICE: Final = 8_192  # entries per step


async def pause() -> None:
    """Let every other ready task run before the next slice."""
    await asyncio.sleep(0)


async def text_pieces(items: Sequence[str]) -> list[bytes | memoryview]:
    """`lines_pieces`, a slice at a time; of `TextLines`, views of its own text."""
    if isinstance(items, TextLines):
        return items.text_pieces()
    pieces: list[bytes | memoryview] = []
    for piece in lines_pieces(items):
        pieces.append(piece)
        await pause()
    return pieces


def lines_pieces(items: Sequence[str]) -> Iterator[bytes]:
    """The items one per line, each ended by a newline, as ASCII bytes, a slice of them a
    piece: how entries go to and from child processes (entries are addresses). Pieces,
    because one text of 1M entries is 14 MiB more, and a join of `item + "\\n"` strings
    made 1M of those first (a child's peak went from ~125 to 193 MiB)."""
    for start in range(0, len(items), SLICE):
        yield ("\n".join(items[start : start + SLICE]) + "\n").encode("ascii")


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
    for start in range(0, len(items), SLICE):
        found.update(items[start : start + SLICE])
        await pause()
    return found


async def is_sorted(items: Sequence[str]) -> bool:
    """Strictly increasing: sorted and distinct."""
    for ascending in _windows_ascending(items):
        if not ascending:
            return False
        await pause()
    return True


def in_key_order(items: Sequence[str]) -> bool:
    """`is_sorted`, whole (for children), and still a window at a time: `items` may be
    `lines.TextLines`, which makes strings of a slice only when it is read."""
    return all(_windows_ascending(items))


def _windows_ascending(items: Sequence[str]) -> Iterator[bool]:
    for start in range(0, len(items), SLICE):
        part = items[start : start + SLICE + 1]
        yield all(map(operator.lt, part, part[1:]))


async def kept(items: Sequence[str], keep: Collection[str], *, inside: bool) -> list[str]:
    """The items that are (`inside`) or are not in `keep`, in their order."""
    out: list[str] = []
    test = keep.__contains__
    for start in range(0, len(items), SLICE):
        part = items[start : start + SLICE]
        out.extend(filter(test, part) if inside else filterfalse(test, part))
        await pause()
    return out


async def sorted_text(text: bytes) -> Sequence[str]:
    """The distinct lines of a text a query answered in key order, kept as the text
    (`lines.TextLines`: 18 MiB per million lines, not ~70 of strings) and indexed a window
    at a time; checked, and sorted in a thread should a query planner ever answer
    otherwise."""
    for lines in TextLines.indexing(text):
        if lines is None:
            await pause()
            continue
        if await is_sorted(lines):
            return lines
        return await asyncio.to_thread(_sorted_distinct, lines)
    raise AssertionError("TextLines.indexing ends with the lines")


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
    for fresh, stale in difference_windows(new, old):
        only_new.extend(fresh)
        only_old.extend(stale)
        await pause()
    return only_new, only_old


def difference_windows(
    new: Sequence[str], old: Sequence[str]
) -> Iterator[tuple[Iterable[str], Iterable[str]]]:
    """The difference of two lists in key order, window by window: each takes at most SLICE
    entries of either list, up to the same key, and compares them as two small sets. Each
    window's two iterators are to be read before the next window."""
    for fresh, stale in aligned_windows(new, old):
        yield (filterfalse(set(stale).__contains__, fresh),
               filterfalse(set(fresh).__contains__, stale))


def pieces_difference(
    new: Sequence[str], old_pieces: Iterable[Sequence[str]]
) -> Iterator[tuple[Iterable[str], Iterable[str]]]:
    """`difference_windows` of `new` and the pieces of `old` in turn, each piece in key
    order and wholly after the one before it: `old` is never held whole, only a piece."""
    done = 0
    for old in old_pieces:
        if not old:
            continue
        upto = bisect_right(new, old[-1], done)  # `new` as far as this piece reaches
        yield from difference_windows(Part(new, done, upto), old)
        done = upto
    yield from difference_windows(Part(new, done, len(new)), [])


class Part(Sequence[str]):
    """`items[start:stop]`, read where it is: a slice of a `TextLines` would be a list of
    its strings, up to all 1M of them."""

    __slots__ = ("_items", "_start", "_stop")

    def __init__(self, items: Sequence[str], start: int, stop: int) -> None:
        self._items, self._start, self._stop = items, start, stop

    def __len__(self) -> int:
        return self._stop - self._start

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return self._items[self._start + start : self._start + max(start, stop)]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("Part index out of range")
        return self._items[self._start + index]


def aligned_windows(
    new: Sequence[str], old: Sequence[str]
) -> Iterator[tuple[Sequence[str], Sequence[str]]]:
    """Two lists in key order cut into windows that cover the same keys: at most SLICE
    entries of either list each, so an entry of one is in the other only if it is in the
    other's part of the same window."""
    n = o = 0
    while n < len(new) or o < len(old):
        n_end, o_end = min(n + SLICE, len(new)), min(o + SLICE, len(old))
        # Up to the smaller of the two lists' keys a slice ahead: all of one slice, and of
        # the other only what sorts before it; the rest waits for the next window.
        new_first = n_end < len(new) and (o_end == len(old) or new[n_end - 1] <= old[o_end - 1])
        if new_first:
            o_end = bisect_right(old, new[n_end - 1], o, o_end)
        elif o_end < len(old):
            n_end = bisect_right(new, old[o_end - 1], n, n_end)
        yield new[n:n_end], old[o:o_end]
        n, o = n_end, o_end
