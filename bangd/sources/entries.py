"""Sets of normalised entries kept as one sorted list, and their key order and digest.

A list's entries travel in key order from the parser to fail2ban and SQLite: `applied`'s
B-trees fill fastest in key order (1M random-order inserts took 65 s, sorted ones 12 s),
the digest is taken over the sorted entries, and runs are reproducible. So the parser sorts
once and everything downstream reads the same list. Measured for 1M IPv4 entries: a
frozenset adds a 32-64 MiB hash table on top of the ~64 MiB of strings; the sorted list
adds 8 MiB of pointers and answers membership by bisection.

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

SORT_PIECE: Final = 8_192  # at most this many strings per sort() call: ~0.5 ms of GIL
SORT_PREFIX: Final = 3  # characters a bucket key grows by at each level


class EntrySet(Set[str]):
    """Distinct entries in code-point order: a set to its readers, a sorted list inside.

    `ordered` is the list itself (no copy): callers slice it and never change it.
    """

    __slots__ = ("_ordered",)

    def __init__(self, ordered: list[str]) -> None:
        """`ordered` must already be sorted and distinct (see `of` for any iterable)."""
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
