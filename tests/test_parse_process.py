"""Big downloads are parsed in a child process: the same parse, compared there with what is
applied, and failures said plainly."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sys
from pathlib import Path

import pytest

from bangd import children, slices
from bangd.config import FORMATS
from bangd.lines import TextLines
from bangd.sources import parse_process
from bangd.sources.parse import parse_blocklist
from bangd.sources.parse_process import (
    ParsedHere,
    ParsedInChild,
    ParseFailed,
    parse_off_loop,
    screened_out,
)
from tests.addresses import public_ipv4
from tests.applied import applied_text, pieces

MIXED = (
    "\ufeff# a list with a bit of everything\n"
    + "\n".join(public_ipv4(3000, seed=11))
    + "\n1.2.3.0/24 ; a network\n2001:db8::/32\n2a00:1450::1\n10.1.2.3\n127.0.0.1\n"
    "not an address\n1.2.3.4 # comment\n1.2.3.4\n"
).encode() + b"\xff\xfe5.6.7.8\n9.9.9.9"  # not UTF-8, and no final newline


async def test_a_child_parses_exactly_as_the_daemon_would() -> None:
    allowlist = (ipaddress.ip_network("9.9.9.0/24"),)
    here = parse_blocklist(MIXED, allowlist=allowlist)
    async with await parse_off_loop(MIXED, allowlist=allowlist, process_min_bytes=0) as parse:
        assert isinstance(parse, ParsedInChild)
        assert parse.findings == here.findings
        assert parse.findings.invalid and parse.findings.skipped_allowlist
        assert await parse.delta(applied_text([])) == (list(here.entries.ordered), [])


async def test_a_child_answers_only_the_difference_with_what_is_applied() -> None:
    entries = list(parse_blocklist(MIXED).entries.ordered)
    gone = ["1.0.0.1", "99.99.99.99"]  # applied, no longer listed
    applied = applied_text([*entries[10:], *gone])  # the first ten are new
    async with await parse_off_loop(MIXED, process_min_bytes=0) as parse:
        assert await parse.delta(applied) == (entries[:10], gone)


@pytest.mark.parametrize("piece", [1, 7, 700, 10**6])
async def test_the_difference_is_the_same_in_a_child_and_here(piece: int) -> None:
    """However what is applied is cut into pieces."""
    entries = list(parse_blocklist(MIXED).entries.ordered)
    applied = [*entries[::2], "0.0.0.1", "1.0.0.1", "99.0.0.1", "ffff::1"]
    async with await parse_off_loop(MIXED, process_min_bytes=0) as in_child:
        from_child = await in_child.delta(applied_text(applied, piece))
    async with await parse_off_loop(MIXED) as here:
        assert isinstance(here, ParsedHere)
        assert await here.delta(applied_text(applied, piece)) == from_child
    assert from_child == (entries[1::2], ["0.0.0.1", "1.0.0.1", "99.0.0.1", "ffff::1"])


async def test_a_piece_joined_out_of_key_order_is_compared_all_the_same() -> None:
    async with await parse_off_loop(MIXED, process_min_bytes=0) as parse:
        delta = await parse.delta(pieces(b"1.2.3.4\n1.0.0.1\n", b"99.0.0.1\n"))
    assert delta[1] == ["1.0.0.1", "99.0.0.1"]


async def test_pieces_of_what_is_applied_that_overlap_fail_the_import() -> None:
    """Compared piece by piece, they would give a wrong difference: nothing is applied."""
    async with await parse_off_loop(MIXED, process_min_bytes=0) as parse:
        with pytest.raises(ParseFailed, match=r"out of key order; nothing applied$"):
            await parse.delta(pieces(b"1.2.3.4\n5.0.0.1\n", b"2.0.0.1\n"))


async def test_a_child_reads_other_feed_formats_too() -> None:
    feed = FORMATS["abuseipdb-csv"]
    data = b"ipAddress,countryCode,abuseConfidenceScore\n1.2.3.4,US,100\n5.6.7.8,DE,90\n"
    async with await parse_off_loop(data, feed=feed, process_min_bytes=0) as parse:
        assert parse.findings == parse_blocklist(data, feed=feed).findings
        assert await parse.delta(applied_text([])) == (["1.2.3.4", "5.6.7.8"], [])


async def test_an_empty_list_parsed_in_a_child_has_no_entries() -> None:
    async with await parse_off_loop(b"# nothing here\n", process_min_bytes=0) as parse:
        found = parse.findings
        assert (found.count, found.invalid, found.lines) == (0, 0, 1)
        assert await parse.delta(applied_text(["1.2.3.4"])) == ([], ["1.2.3.4"])


async def test_a_parse_closed_before_comparing_leaves_no_child_behind() -> None:
    parse = await parse_off_loop(MIXED, process_min_bytes=0)
    assert isinstance(parse, ParsedInChild)
    await parse.close()
    assert parse._child._proc.returncode is not None


async def test_a_small_list_is_parsed_without_a_child(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    async with await parse_off_loop(b"1.2.3.4\n") as parse:
        assert isinstance(parse, ParsedHere)
        assert set(parse.parsed.entries) == {"1.2.3.4"}


async def test_a_child_that_cannot_start_leaves_the_parse_to_a_thread(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    async with await parse_off_loop(b"1.2.3.4\n", process_min_bytes=0) as parse:
        assert isinstance(parse, ParsedHere)
        assert set(parse.parsed.entries) == {"1.2.3.4"}
    assert "parser process not started" in caplog.text


@pytest.mark.parametrize(("program", "said"), [
    ("import sys; sys.exit(3)", "the parser process exited with status 3; nothing applied"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
     "the parser process was killed by SIGKILL (out of memory?); nothing applied"),
    ("raise MemoryError", "the parser process exited with status 1: MemoryError; "
     "nothing applied"),
])
async def test_a_child_that_dies_fails_the_parse_in_one_line(
    monkeypatch: pytest.MonkeyPatch, program: str, said: str
) -> None:
    monkeypatch.setattr(children, "_BOOT", program)
    with pytest.raises(ParseFailed) as failed:
        await parse_off_loop(MIXED, process_min_bytes=0)
    assert str(failed.value) == said


@pytest.mark.parametrize("answer", [
    "", "hello\\n", '{\\"digest\\": 1}\\n', "{}\\n1.2.3.4", "2\\n{}",
])
async def test_a_child_answering_garbage_fails_the_parse(
    monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    monkeypatch.setattr(children, "_BOOT", f'import sys; sys.stdout.write("{answer}")')
    with pytest.raises(ParseFailed, match=r"^the parser process answered garbage"):
        await parse_off_loop(MIXED, process_min_bytes=0)


async def test_a_child_that_dies_while_comparing_fails_the_import_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(children, "_BOOT", (
        "import os, sys; sys.path.insert(0, sys.argv[1]); from bangd import windows; "
        "windows.difference_windows = lambda *a: os.kill(os.getpid(), 9); "
        "from bangd.child import serve; serve(sys.argv[2])"
    ))
    async with await parse_off_loop(MIXED, process_min_bytes=0) as parse:
        assert parse.findings == parse_blocklist(MIXED).findings
        with pytest.raises(ParseFailed) as failed:
            await parse.delta(applied_text(["1.2.3.4"]))
    assert str(failed.value) == (
        "the parser process was killed by SIGKILL (out of memory?); nothing applied"
    )


async def test_a_cancelled_parse_leaves_no_child_behind(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pid_file, partial = tmp_path / "pid", tmp_path / "pid.part"
    monkeypatch.setattr(children, "_BOOT", (
        "import os, sys, time; "
        f"open({str(partial)!r}, 'w').write(str(os.getpid())); "
        f"os.rename({str(partial)!r}, {str(pid_file)!r}); "
        "sys.stdin.buffer.read(); time.sleep(600)"
    ))
    parse = asyncio.create_task(parse_off_loop(MIXED, process_min_bytes=0))
    while not pid_file.exists():  # noqa: ASYNC110 (only the child can tell; no Event reaches it)
        await asyncio.sleep(0.01)
    pid = int(pid_file.read_text())
    parse.cancel()
    with pytest.raises(asyncio.CancelledError):
        await parse
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pid, 0)


@pytest.mark.parametrize("process_min_bytes", [0, 1 << 30], ids=["in-a-child", "here"])
async def test_entries_the_screen_now_drops_are_found_by_parsing_them_again(
    monkeypatch: pytest.MonkeyPatch, process_min_bytes: int
) -> None:
    """What reconciliation leaves out of a re-ban, and an exemption lifts."""
    monkeypatch.setattr(parse_process, "PROCESS_MIN_BYTES", process_min_bytes)
    entries = sorted([*public_ipv4(3000, seed=3), "10.1.2.3", "127.0.0.1", "9.9.9.9",
                      "9.9.9.0/28"])
    dropped = await screened_out(entries, allowlist=(ipaddress.ip_network("9.9.9.0/24"),),
                                 skip_reserved=True)
    assert dropped == ["10.1.2.3", "127.0.0.1", "9.9.9.0/28", "9.9.9.9"]
    assert await screened_out(entries, allowlist=(), skip_reserved=False) == []


async def test_what_is_left_without_some_entries_is_kept_as_text() -> None:
    entries = sorted(public_ipv4(20_000, seed=4))
    left = await slices.without(entries, entries[::3])
    assert isinstance(left, TextLines)
    assert left == [e for i, e in enumerate(entries) if i % 3]
    assert await slices.without(entries, []) is entries
