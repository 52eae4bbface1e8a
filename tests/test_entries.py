"""Entry sets: one sorted, distinct list that reads as a set, and its digest."""

from __future__ import annotations

import hashlib
import random

from hypothesis import given
from hypothesis import strategies as st

from bangd.entries import (
    SORT_PIECE,
    EntrySet,
    SortedText,
    entries_digest,
    ordered_digest,
    sorted_entries,
)
from bangd.lines import TextLines


def test_sorted_entries_matches_sorted_for_big_mixed_sets() -> None:
    rng = random.Random(11)
    entries = {f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.0/24"
               for _ in range(60_000)}
    entries |= {f"2a0{rng.randint(0, 9)}:{rng.randint(0, 0xffff):x}::{rng.randint(1, 99)}"
                for _ in range(40_000)}
    entries |= {"1.2.3.4", "1.2.3.40", "1.2.3", "::", "::1", "2a0"}
    assert sorted_entries(entries) == sorted(entries)


def test_sorted_entries_drops_duplicates_however_many() -> None:
    listed = ["9.9.9.9"] * (3 * SORT_PIECE) + ["1.2.3.4", "1.2.3.4", "1.2"] * SORT_PIECE
    assert sorted_entries(listed) == ["1.2", "1.2.3.4", "9.9.9.9"]


def sorted_text_of(chunks: list[list[str]]) -> tuple[TextLines, str, int]:
    kept = SortedText()
    for chunk in chunks:
        kept.add(chunk)
    lines, digest = kept.finish()
    return lines, digest, kept.kept


def test_entries_gathered_as_text_come_out_sorted_and_distinct() -> None:
    rng = random.Random(12)
    chunks = [[f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 9)}.0"
               for _ in range(20_000)] + ["::", "::1", "1.2"] for _ in range(5)]
    everything = sorted({entry for chunk in chunks for entry in chunk})
    lines, digest, kept = sorted_text_of(chunks)
    assert lines == everything
    assert digest == ordered_digest(everything)
    assert kept == sum(map(len, chunks))


@given(st.lists(st.lists(st.text("0123456789abcdef.:/", min_size=1, max_size=12))))
def test_sorted_text_is_sorted_of_the_set_of_what_was_added(chunks: list[list[str]]) -> None:
    everything = sorted({entry for chunk in chunks for entry in chunk})
    lines, digest, _ = sorted_text_of(chunks)
    assert list(lines) == everything
    assert digest == ordered_digest(everything)


def test_entry_set_reads_as_the_set_of_its_entries() -> None:
    entries = EntrySet.of(["5.6.7.8", "1.2.3.4", "5.6.7.8", "2001:db8::/32"])
    assert entries == {"1.2.3.4", "5.6.7.8", "2001:db8::/32"}
    assert entries == frozenset(entries) and entries == set(entries)
    assert EntrySet.of([]) == frozenset()
    assert ("1.2.3.4" in entries, "1.2.3.5" in entries) == (True, False)
    assert object() not in entries
    assert list(entries.ordered) == ["1.2.3.4", "2001:db8::/32", "5.6.7.8"]
    assert entries - {"1.2.3.4"} == {"2001:db8::/32", "5.6.7.8"}
    assert hash(entries) == hash(EntrySet.of(reversed(list(entries))))


def test_digest_is_that_of_sort_u_whatever_the_order() -> None:
    entries = ["5.6.7.8", "1.2.3.4", "1.2.3.4"]
    assert entries_digest(entries) == hashlib.sha256(b"1.2.3.4\n5.6.7.8\n").hexdigest()
