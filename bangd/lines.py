"""Entries kept as their text, one per line, and where each line starts: a sequence of
strings without a string object per entry.

A million entries as a list of strings are ~70 MiB (a 64-byte object and a list slot
each); as their ASCII text and an array of line starts they are 14 + 4 MiB. A slice is
made into strings when it is read (one `bytes.split`), and every caller that goes through
a million entries does it a slice at a time (`slices`), so only that slice is ever built.
This is how a child's answers (what to add, what fail2ban holds) reach the daemon, how the
store answers a source's or a jail's entries, and how a child reads what is applied.
"""

from __future__ import annotations

import operator
from array import array
from collections.abc import Iterator, Sequence
from itertools import accumulate
from typing import Final, overload

from .windows import SLICE  # lines made into strings at a time when iterated

_WINDOW: Final = 1 << 16  # bytes of text indexed at a time (~4.5k lines)


class TextLines(Sequence[str]):
    """ASCII lines, each ended by a newline, read as strings. Never changed once made."""

    __slots__ = ("_starts", "_text")

    def __init__(self, text: bytes | bytearray, starts: array[int]) -> None:
        """`starts`: where each line starts, then the text's length (see `index_lines`)."""
        self._text = text
        self._starts = starts

    @classmethod
    def of(cls, text: bytes | bytearray) -> TextLines:
        """The lines of `text`, indexed where they are; a final newline ends the last line
        (as SQLite's group_concat leaves it, it may be missing)."""
        starts = _new_starts(len(text) + 1)
        index_lines(text, starts, 0, len(text))
        starts.append(len(text) + (0 if text.endswith(b"\n") or not text else 1))
        return cls(text, starts)

    def __len__(self) -> int:
        return len(self._starts) - 1

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        starts = self._starts
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            if start >= stop:
                return []
            return self._text[starts[start] : starts[stop] - 1].decode("ascii").split("\n")
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("TextLines index out of range")
        return self._text[starts[index] : starts[index + 1] - 1].decode("ascii")

    @property
    def text(self) -> bytes | bytearray:
        """The lines' own text, not a copy (its last newline may be missing)."""
        return self._text

    def text_pieces(self) -> list[bytes | memoryview]:
        """The lines as text, each ended by a newline: views of the text itself, a window
        each, so sending 1M entries to a child costs no 14 MiB copy of them."""
        text, size = memoryview(self._text), len(self._text)
        pieces: list[bytes | memoryview] = [
            text[start : start + _WINDOW] for start in range(0, size, _WINDOW)
        ]
        if self._starts[-1] > size:  # the last line's newline, missing from the text
            pieces.append(b"\n")
        return pieces

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self), SLICE):
            yield from self[start : start + SLICE]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TextLines) and self._text == other._text:
            return True
        if isinstance(other, (list, TextLines)):  # as a list compares: with lists only
            return len(other) == len(self) and all(map(operator.eq, self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to lists, which are not hashable

    def __repr__(self) -> str:
        return f"<TextLines of {len(self)}>"


class LinesReceiver:
    """Lines as they arrive in pieces, indexed piece by piece: `add` each, then `lines`."""

    def __init__(self) -> None:
        self._text = bytearray()
        self._starts = _new_starts(0)
        self._indexed = 0  # the text before this is indexed: it ends with a newline

    def add(self, piece: bytes) -> None:
        """Raises ValueError for a piece that is not ASCII."""
        if not piece.isascii():
            raise ValueError("a line is not ASCII")
        self._text += piece
        if len(self._text) >= 1 << 32 and self._starts.typecode == "I":
            self._starts = array("Q", self._starts)
        end = self._text.rfind(b"\n", self._indexed) + 1
        if end:
            index_lines(self._text, self._starts, self._indexed, end)
            self._indexed = end

    def lines(self) -> TextLines:
        """Raises ValueError if the last line has no newline."""
        if self._indexed != len(self._text):
            raise ValueError("its last line has no newline")
        self._starts.append(len(self._text))
        return TextLines(self._text, self._starts)


def index_lines(text: bytes | bytearray, starts: array[int], start: int, end: int) -> None:
    """Append where each line of `text[start:end]` starts, a window of text at a time
    (the last line may lack its newline)."""
    while start < end:
        stop = text.find(b"\n", min(start + _WINDOW, end) - 1, end)
        if stop < 0:
            stop = end
        # One after another from `start`: each line's length and its newline.
        starts.extend(accumulate(map((1).__add__, map(len, text[start:stop].split(b"\n"))),
                                 initial=start))
        starts.pop()  # the start of the next window's first line, appended there
        start = stop + 1


def _new_starts(size: int) -> array[int]:
    return array("I" if size < 1 << 32 else "Q")

