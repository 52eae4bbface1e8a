"""Sets of normalised entries kept as one sorted text, and their key order and digest.

A list's entries travel in key order from the parser to fail2ban and SQLite: `applied`'s
B-trees fill fastest in key order (1M random-order inserts took 65 s, sorted ones 12 s),
the digest is taken over the sorted entries, and runs are reproducible. So the parser sorts
once and everything downstream reads the same entries. Measured for 1M IPv4 entries: the
strings alone are ~64 MiB, a frozenset adds a 32-64 MiB hash table; as one text with an
array of line starts (`lines.TextLines`) they are 14 + 4 MiB, and membership is answered
by bisection.

Sorting never holds the GIL for long (a plain sorted() of 1M strings holds it ~0.5 s and
stalls the event loop even from a thread): entries are bucketed by their next few
characters, buckets taken in key order and split again while too big.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence, Set
from itertools import groupby
from typing import Final

from .lines import TextLines

SORT_PIECE: Final = 8_192  # at most this many strings per sort() call: ~0.5 ms of GIL
SORT_PREFIX: Final = 3  # characters a bucket key grows by at each level


class EntrySet(Set[str]):
    """Distinct entries in code-point order: a set to its readers, a sorted list inside.

    `ordered` is the list itself (no copy): callers slice it and never change it.
    """

    __slots__ = ("_ordered",)

    def __init__(self, ordered: Sequence[str]) -> None:
        """`ordered` must already be sorted and distinct (see `of` for any iterable); a
        parse's is `lines.TextLines` (`SortedText`)."""
        self._ordered = ordered

    @classmethod
    def of(cls, entries: Iterable[str]) -> EntrySet:
        return cls(sorted_entries(entries))

    @classmethod
    def _from_iterable(cls, it: Iterable[str]) -> EntrySet:  # type: ignore[override]
        # What Set's operators (&, |, -) build their results with: only ever of str here.
        return cls.of(it)

    @property
    def ordered(self) -> Sequence[str]:
        return self._ordered

    def __contains__(self, item: object) -> bool:
        items = self._ordered
        if type(item) is not str:
            return False
        i = bisect_left(items, item)
        return i < len(items) and items[i] == item

    def __iter__(self) -> Iterator[str]:
        return iter(self._ordered)

    def __len__(self) -> int:
        return len(self._ordered)

    def __eq__(self, other: object) -> bool:
        # Set's own __eq__ (equal to any set of the same strings); spelt out so that type
        # checkers know an EntrySet may equal a set or frozenset.
        return Set.__eq__(self, other)

    __hash__ = Set._hash

    def __repr__(self) -> str:
        shown = ", ".join(map(repr, self._ordered[:5]))
        more = f", ... ({len(self._ordered)} in all)" if len(self._ordered) > 5 else ""
        return f"EntrySet([{shown}{more}])"


class SortedText:
    """Entries gathered a chunk at a time and kept as text, then sorted into one text in
    key order (`finish`): a parse of 1M lines never holds a string per entry (it did: 122
    MiB at the peak of a 1M parse, most of it those strings).

    Each chunk's entries are bucketed by their first SORT_PREFIX characters and each
    bucket's share joined into one string; at the end each bucket, in key order, is split,
    sorted (split further while too big, as `sorted_entries`), and written out.
    """

    def __init__(self) -> None:
        self._buckets: dict[str, list[str]] = {}
        self.kept = 0  # entries added, duplicates included

    def add(self, entries: Iterable[str]) -> None:
        grouped: dict[str, list[str]] = {}
        for item in entries:
            key = item[:SORT_PREFIX]
            group = grouped.get(key)
            if group is None:
                grouped[key] = [item]
            else:
                group.append(item)
        buckets = self._buckets
        for key, group in grouped.items():
            self.kept += len(group)
            bucket = buckets.get(key)
            if bucket is None:
                buckets[key] = ["\n".join(group)]
            else:
                bucket.append("\n".join(group))

    def finish(self) -> tuple[TextLines, str]:
        """The distinct entries in key order, and their digest (`ordered_digest`)."""
        text = bytearray()
        buckets = self._buckets
        for key in sorted(buckets):
            items = "\n".join(buckets.pop(key)).split("\n")
            ordered: list[str] = []
            if len(key) < SORT_PREFIX:
                ordered.append(items[0])  # entries this short are all the key itself
            else:
                _sort_into(ordered, items, SORT_PREFIX)
            del items
            text += "\n".join(ordered).encode("ascii")
            text += b"\n"
        return TextLines.of(text), hashlib.sha256(text).hexdigest()


def sorted_entries(entries: Iterable[str]) -> list[str]:
    """Distinct entries in code-point order, as `sorted(set(entries))` would give them,
    without holding the GIL for long and without a set of them all.

    A shorter entry's key is the entry itself and sorts before any key it prefixes, so the
    order is exact. Input that is already in order (many lists are) sorts fastest.
    """
    ordered: list[str] = []
    # The input is bucketed as it is iterated: a copy of a 1M list first was one C call
    # holding the GIL ~10 ms.
    _split_into(ordered, entries, 0)
    return ordered


def _sort_into(out: list[str], items: list[str], start: int) -> None:
    if len(items) <= SORT_PIECE:
        items.sort()
        # Sorted, so duplicates are neighbours: groupby compares them without hashing
        # (dict.fromkeys of 32k fresh strings held the GIL 12 ms).
        out.extend(entry for entry, _ in groupby(items))
        return
    _split_into(out, items, start)


def _split_into(out: list[str], items: Iterable[str], start: int) -> None:
    """Bucket `items` by their next SORT_PREFIX characters, then each bucket in key order.
    Buckets are let go one by one as they are done, not all at the end in one call."""
    buckets: dict[str, list[str]] = {}
    end = start + SORT_PREFIX
    for item in items:
        key = item[start:end]
        bucket = buckets.get(key)
        if bucket is None:
            buckets[key] = [item]
        else:
            bucket.append(item)
    for key in sorted(buckets):
        bucket = buckets.pop(key)
        if len(key) < SORT_PREFIX:
            # These entries end inside the key: all share the prefix so far and the key,
            # so they are one entry, listed many times (splitting further never ends).
            out.append(bucket[0])
        else:
            _sort_into(out, bucket, end)
        del bucket


def ordered_digest(ordered: Sequence[str]) -> str:
    """sha256 over entries already sorted and distinct, each followed by a newline (the
    same as `LC_ALL=C sort -u | sha256sum`)."""
    digest = hashlib.sha256()
    for first in range(0, len(ordered), SORT_PIECE):
        part = list(ordered[first : first + SORT_PIECE])
        part.append("")  # every entry, the last included, ends with a newline
        digest.update("\n".join(part).encode("ascii"))
    return digest.hexdigest()


def entries_digest(entries: Iterable[str]) -> str:
    """sha256 over distinct normalised entries, independent of their order."""
    return ordered_digest(sorted_entries(entries))
