"""Entries kept as text (`bangd.lines`): read as strings, exactly like the list they stand for."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bangd.lines import LinesReceiver, TextLines
from bangd.sources.parse_process import parse_off_loop
from tests.applied import applied_text

ENTRIES = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(20_000)]
TEXT = ("\n".join(ENTRIES) + "\n").encode()

lines = st.lists(st.text("0123456789abcdef.:/", min_size=1, max_size=43), max_size=60)


def test_lines_read_as_the_list_of_strings_they_stand_for() -> None:
    kept = TextLines.of(TEXT)
    assert len(kept) == len(ENTRIES)
    assert list(kept) == ENTRIES
    assert kept[0] == ENTRIES[0] and kept[-1] == ENTRIES[-1] and kept[12_345] == ENTRIES[12_345]
    assert kept[100:9_000] == ENTRIES[100:9_000]
    assert kept[::7] == ENTRIES[::7]
    assert kept[-5:] == ENTRIES[-5:] and kept[5:5] == []


def test_an_index_past_the_end_is_an_index_error() -> None:
    with pytest.raises(IndexError):
        TextLines.of(b"1.2.3.4\n")[1]


def test_a_final_newline_ends_the_last_line_and_may_be_missing() -> None:
    assert TextLines.of(b"1.2.3.4\n5.6.7.8") == ["1.2.3.4", "5.6.7.8"]
    assert TextLines.of(b"1.2.3.4\n5.6.7.8\n") == ["1.2.3.4", "5.6.7.8"]
    assert TextLines.of(b"") == [] and len(TextLines.of(b"")) == 0


@pytest.mark.parametrize("text", [TEXT, TEXT[:-1], b"", b"1.2.3.4"], ids=[
    "many", "no-final-newline", "empty", "one-unended"])
def test_lines_of_any_text_are_its_lines_split(text: bytes) -> None:
    assert TextLines.of(text) == text.decode().splitlines()


@pytest.mark.parametrize("text", [TEXT, TEXT[:-1], b"", b"1.2.3.4"], ids=[
    "many", "no-final-newline", "empty", "one-unended"])
def test_lines_as_text_are_each_line_ended_by_a_newline(text: bytes) -> None:
    """What a child is sent: views of the text, a newline added where it was missing."""
    kept = TextLines.of(text)
    sent = b"".join(kept.text_pieces())
    assert sent == "".join(line + "\n" for line in kept).encode()
    assert TextLines.of(sent) == kept


def test_lines_equal_a_list_only_of_the_same_strings_in_the_same_order() -> None:
    assert TextLines.of(b"a\nb\n") != ["b", "a"]
    assert TextLines.of(b"a\nb\n") != ["a"]
    assert TextLines.of(b"a\nb\n") == TextLines.of(b"a\nb")


@given(lines, st.lists(st.integers(1, 50), max_size=20))
def test_lines_received_in_any_pieces_are_the_lines_sent(
    items: list[str], cuts: list[int]
) -> None:
    text = "".join(item + "\n" for item in items).encode()
    receiver = LinesReceiver()
    start = 0
    for size in cuts:
        receiver.add(text[start : start + size])
        start += size
    receiver.add(text[start:])
    assert receiver.lines() == items


def test_a_received_piece_that_is_not_ascii_is_refused() -> None:
    with pytest.raises(ValueError, match="not ASCII"):
        LinesReceiver().add("1.2.3.4\n\u00e9\n".encode())


def test_received_lines_whose_last_has_no_newline_are_refused() -> None:
    receiver = LinesReceiver()
    receiver.add(b"1.2.3.4\n5.6.7.8")
    with pytest.raises(ValueError, match="no newline"):
        receiver.lines()


async def test_a_childs_difference_reaches_the_daemon_as_text_not_strings() -> None:
    async with await parse_off_loop(TEXT, skip_reserved=False, process_min_bytes=0) as parse:
        to_add, to_remove = await parse.delta(applied_text(["10.0.0.0"]))
    assert isinstance(to_add, TextLines) and to_add == sorted(ENTRIES)[1:]  # key order
    assert to_remove == []
