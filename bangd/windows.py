"""Work on entries in key order a window at a time, whole: what child processes (and
worker threads) run, with a GIL of their own. The event loop's side, which pauses between
windows, is `slices`; this module imports no asyncio (5 MiB of a child's memory).

Each step is one C-level call over at most SLICE entries, so that in the loop (`slices`)
every step is short; here it keeps what is built at a time to a window.
"""

from __future__ import annotations

import operator
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from itertools import filterfalse
from typing import Final, overload

SLICE: Final = 8_192  # entries per step


def lines_pieces(items: Sequence[str]) -> Iterator[bytes]:
    """The items one per line, each ended by a newline, as ASCII bytes, a slice of them a
    piece: how entries go to and from child processes (entries are addresses). Pieces,
    because one text of 1M entries is 14 MiB more, and a join of `item + "\\n"` strings
    made 1M of those first (a child's peak went from ~125 to 193 MiB)."""
    for start in range(0, len(items), SLICE):
        yield ("\n".join(items[start : start + SLICE]) + "\n").encode("ascii")


def in_key_order(items: Sequence[str]) -> bool:
    """Strictly increasing (sorted and distinct), a window at a time: `items` may be
    `lines.TextLines`, which makes strings of a slice only when it is read."""
    return all(ascending_windows(items))


def ascending_windows(items: Sequence[str]) -> Iterator[bool]:
    """Whether each window of SLICE entries is strictly increasing, up to and including the
    next window's first entry."""
    for start in range(0, len(items), SLICE):
        part = items[start : start + SLICE + 1]
        yield all(map(operator.lt, part, part[1:]))


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
