"""Big downloads are parsed in a child process: the same parse, and failures said plainly."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import os
import sys
from pathlib import Path

import pytest

from bangd.config import FORMATS
from bangd.sources import parse_process
from bangd.sources.parse import ParsedList, parse_blocklist
from bangd.sources.parse_process import ParseFailed, parse_off_loop
from tests.addresses import public_ipv4

MIXED = (
    "\ufeff# a list with a bit of everything\n"
    + "\n".join(public_ipv4(3000, seed=11))
    + "\n1.2.3.0/24 ; a network\n2001:db8::/32\n2a00:1450::1\n10.1.2.3\n127.0.0.1\n"
    "not an address\n1.2.3.4 # comment\n1.2.3.4\n"
).encode() + b"\xff\xfe5.6.7.8\n9.9.9.9"  # not UTF-8, and no final newline


def fields_of(parsed: ParsedList) -> dict[str, object]:
    return {f.name: getattr(parsed, f.name) for f in dataclasses.fields(parsed)}


async def test_a_child_parses_exactly_as_the_daemon_would() -> None:
    allowlist = (ipaddress.ip_network("9.9.9.0/24"),)
    in_child = await parse_off_loop(MIXED, allowlist=allowlist, process_min_bytes=0)
    assert fields_of(in_child) == fields_of(parse_blocklist(MIXED, allowlist=allowlist))
    assert in_child.invalid and in_child.skipped_allowlist and in_child.skipped_reserved


async def test_a_child_reads_other_feed_formats_too() -> None:
    feed = FORMATS["abuseipdb-csv"]
    data = b"ipAddress,countryCode,abuseConfidenceScore\n1.2.3.4,US,100\n5.6.7.8,DE,90\n"
    in_child = await parse_off_loop(data, feed=feed, process_min_bytes=0)
    assert fields_of(in_child) == fields_of(parse_blocklist(data, feed=feed))
    assert set(in_child.entries) == {"1.2.3.4", "5.6.7.8"}


async def test_an_empty_list_parsed_in_a_child_has_no_entries() -> None:
    parsed = await parse_off_loop(b"# nothing here\n", process_min_bytes=0)
    assert (len(parsed.entries), parsed.invalid, parsed.lines) == (0, 0, 1)


async def test_a_small_list_is_parsed_without_a_child(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    parsed = await parse_off_loop(b"1.2.3.4\n")
    assert set(parsed.entries) == {"1.2.3.4"}


async def test_a_child_that_cannot_start_leaves_the_parse_to_a_thread(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    parsed = await parse_off_loop(b"1.2.3.4\n", process_min_bytes=0)
    assert set(parsed.entries) == {"1.2.3.4"}
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
    monkeypatch.setattr(parse_process, "_BOOT", program)
    with pytest.raises(ParseFailed) as failed:
        await parse_off_loop(MIXED, process_min_bytes=0)
    assert str(failed.value) == said


@pytest.mark.parametrize("answer", [
    "", "hello\\n", '{\\"digest\\": 1}\\n', "{}\\n1.2.3.4",
])
async def test_a_child_answering_garbage_fails_the_parse(
    monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    monkeypatch.setattr(parse_process, "_BOOT", f'import sys; sys.stdout.write("{answer}")')
    with pytest.raises(ParseFailed, match=r"^the parser process answered garbage"):
        await parse_off_loop(MIXED, process_min_bytes=0)


async def test_a_cancelled_parse_leaves_no_child_behind(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pid_file, partial = tmp_path / "pid", tmp_path / "pid.part"
    monkeypatch.setattr(parse_process, "_BOOT", (
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
