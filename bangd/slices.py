"""Pure-Python work on a million entries done in the event loop itself, a slice at a time.

A thread is no place for such work: it shares the GIL, and each time the loop wakes (a
control client's line, a query's answer) the loop waits for the thread to let go, up to
the switch interval; a `status` call wakes it a dozen times. Measured while a 1M-entry
set was built and compared in a thread: status answers up to 355 ms. Here each step is
one C-level call over at most SLICE entries (~0.5 ms), with the loop free between steps,
so a status call waits a few milliseconds in all.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Collection, Sequence
from itertools import filterfalse
from typing import Final

SLICE: Final = 8_192  # entries per step
TEXT_SLICE: Final = 1 << 16  # characters of text split per step (~4.5k entries)


async def pause() -> None:
    """Let every other ready task run before the next slice."""
    await asyncio.sleep(0)


async def lines_of(text: str | bytes, start: int = 0) -> list[str]:
    """The lines of `text` from `start` on, one string each (a final newline ends the last
    line; bytes must be ASCII, or UnicodeDecodeError)."""
    lines: list[str] = []
    size = len(text)
    while start < size:
        if isinstance(text, str):
            end = text.find("\n", min(start + TEXT_SLICE, size - 1))
            end = size if end < 0 else end
            piece = text[start:end]
        else:
            end = text.find(b"\n", min(start + TEXT_SLICE, size - 1))
            end = size if end < 0 else end
            piece = text[start:end].decode("ascii")
        lines.extend(piece.split("\n"))
        start = end + 1
        await pause()
    return lines


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
    for start in range(0, len(items), SLICE):
        part = items[start : start + SLICE + 1]
        if not all(map(operator.lt, part, part[1:])):
            return False
        await pause()
    return True


async def kept(items: Sequence[str], keep: Collection[str], *, inside: bool) -> list[str]:
    """The items that are (`inside`) or are not in `keep`, in their order."""
    out: list[str] = []
    test = keep.__contains__
    for start in range(0, len(items), SLICE):
        part = items[start : start + SLICE]
        out.extend(filter(test, part) if inside else filterfalse(test, part))
        await pause()
    return out

