"""bangctl's command line against stand-in daemons: where options may go, how long it waits,
what it prints on a terminal and off one, and that hostile strings reach the terminal
escaped. The real daemon's side is in tests/test_bangctl_exit_codes.py."""

from __future__ import annotations

import os
import pty
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bangd.cli import bangctl
from bangd.cli.importwait import describe
from bangd.cli.tables import safe, table
from tests.daemon_process import BIN_DIR
from tests.fake_bangd import FakeBangd, ImportAfterPolls, Refused, silent_socket
from tests.shortdir import short_tmpdir

REPO = Path(__file__).resolve().parent.parent
HOSTILE = "evil\x1b]0;pwned\x07\x1b[2J\r\nline\u202e"
HOSTILE_SHOWN = "evil\\x1b]0;pwned\\x07\\x1b[2J\\r\\nline\\u202e"


@pytest.fixture
def sock() -> Iterator[str]:
    with short_tmpdir("bangctl-") as d:
        yield os.path.join(d, "bangd.sock")


def parsed(*argv: str) -> dict[str, Any]:
    return vars(bangctl.build_parser().parse_args(list(argv)))


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN_DIR / "bangctl"), *argv], capture_output=True, text=True,
                          timeout=60, check=False)


# Global options anywhere


def test_global_options_after_the_command_mean_the_same_as_before_it() -> None:
    assert parsed("status", "--json") == parsed("--json", "status")
    assert parsed("import", "a", "--json", "-s", "/x.sock") == parsed(
        "--json", "-s", "/x.sock", "import", "a")
    assert parsed("cache", "stats", "--timeout", "2") == parsed("--timeout", "2", "cache",
                                                                "stats")


COMMANDS = [["status"], ["version"], ["sources"], ["import", "a"], ["runs"], ["reconcile"],
            ["lookup", "192.0.2.1"], ["cache", "stats"], ["cache", "cleanup"], ["metrics"],
            ["reload"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_takes_the_global_options_after_it(command: list[str]) -> None:
    after = parsed(*command, "--json", "-s", "/x.sock", "--timeout", "3")
    assert after == parsed("--json", "-s", "/x.sock", "--timeout", "3", *command)
    assert (after["json"], after["socket"], after["timeout"]) == (True, "/x.sock", 3.0)


def test_a_global_option_given_twice_takes_the_later_one() -> None:
    assert parsed("-s", "/a.sock", "status", "-s", "/b.sock")["socket"] == "/b.sock"
    assert parsed("--timeout", "5", "runs", "--timeout", "7")["timeout"] == 7.0


def test_timeout_must_be_a_positive_number_of_seconds() -> None:
    for bad in ("0", "-1", "soon", "inf"):
        with pytest.raises(SystemExit) as exited:
            bangctl.build_parser().parse_args(["--timeout", bad, "status"])
        assert exited.value.code == bangctl.EXIT_USAGE


def test_json_after_the_command_prints_the_raw_result(
    sock: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeBangd(sock, {"version": lambda args: {"version": "9.9"}}):
        assert bangctl.main(["version", "--json", "-s", sock]) == 0
    assert capsys.readouterr().out == '{\n  "version": "9.9"\n}\n'


# Exit codes


def test_help_lists_every_exit_code() -> None:
    out = run("--help").stdout
    for line in ("  0  ok", "  1  bangd answered with an error", "     import: also when any "
                 "source's import failed", "  2  usage error", "  3  bangd cannot be reached"):
        assert line in out


def test_the_man_page_and_readme_document_the_import_exit_code() -> None:
    man = (REPO / "packaging" / "man" / "bangctl.8").read_text()
    readme = (REPO / "README.md").read_text()
    assert "import failed" in man.replace("\n", " ")
    assert "an import failed" in readme


# Bounded waits


def test_a_socket_that_never_answers_gives_up_after_the_timeout(
    sock: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with silent_socket(sock):
        started = time.monotonic()
        assert bangctl.main(["-s", sock, "--timeout", "0.3", "status"]) == 3
        assert time.monotonic() - started < 5
    assert "did not answer 'status' within 0.3s" in capsys.readouterr().err


def test_import_on_a_socket_that_never_answers_gives_up_after_the_timeout(
    sock: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with silent_socket(sock):
        started = time.monotonic()
        assert bangctl.main(["-s", sock, "--timeout", "0.3", "import", "a"]) == 3
        assert time.monotonic() - started < 5
    assert "neither answered 'import' nor showed it running for 0.3s" in capsys.readouterr().err


def test_import_waits_past_the_timeout_while_bangd_shows_it_running(
    sock: str, capsys: pytest.CaptureFixture[str]
) -> None:
    script = ImportAfterPolls(polls=8)
    with FakeBangd(sock, script.handlers()):
        started = time.monotonic()
        assert bangctl.main(["-s", sock, "--timeout", "0.3", "import", "a"]) == 0
        assert time.monotonic() - started > 0.3 * 2
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["a", "completed"]


def test_import_gives_up_when_bangd_answers_polls_but_shows_nothing_running(
    sock: str, capsys: pytest.CaptureFixture[str]
) -> None:
    script = ImportAfterPolls(polls=1000, running=False)
    with FakeBangd(sock, script.handlers()):
        assert bangctl.main(["-s", sock, "--timeout", "0.3", "import", "a"]) == 3
    assert "nor showed it running" in capsys.readouterr().err


def test_import_progress_prints_nothing_when_stderr_is_not_a_terminal(sock: str) -> None:
    with FakeBangd(sock, ImportAfterPolls(polls=5).handlers()):
        done = run("-s", sock, "--timeout", "0.3", "import", "a")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("SOURCE ")


def on_a_terminal(*argv: str) -> tuple[int, str]:
    """Run bangctl with stderr on a pseudo-terminal; its exit code and what it wrote there."""
    master, slave = pty.openpty()
    with subprocess.Popen([str(BIN_DIR / "bangctl"), *argv], stdout=subprocess.DEVNULL,
                          stderr=slave) as proc:
        os.close(slave)
        written = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's last writer has gone
                break
            if not chunk:
                break
            written += chunk
        os.close(master)
        return proc.wait(30), written.decode()


def test_import_on_a_terminal_shows_progress_in_place_and_clears_it(sock: str) -> None:
    with FakeBangd(sock, ImportAfterPolls(polls=5).handlers()):
        code, written = on_a_terminal("-s", sock, "--timeout", "0.3", "import", "a")
    assert code == 0
    assert "\rimporting a applying 1/5 (20%)" in written
    assert "\n" not in written.replace("\r\n", "")  # one line, rewritten
    assert written.endswith("\r\x1b[K")


def test_import_with_json_shows_no_progress_even_on_a_terminal(sock: str) -> None:
    with FakeBangd(sock, ImportAfterPolls(polls=5).handlers()):
        code, written = on_a_terminal("-s", sock, "--timeout", "0.3", "--json", "import", "a")
    assert (code, written) == (0, "")


def test_progress_line_shows_running_when_bangd_sends_no_progress() -> None:
    rows: list[dict[str, Any]] = [
        {"name": "a", "last_state": "running"},
        {"name": "b", "last_state": "running", "progress": {"phase": "fetching"}},
        {"name": "c", "last_state": "running", "progress": "half"},
    ]
    assert describe(rows, 75) == "importing a running, b fetching, c running (1m15s)"


# Safe output


def test_safe_escapes_control_characters_and_terminal_sequences() -> None:
    assert safe(HOSTILE) == HOSTILE_SHOWN
    assert safe("tab\there\x7f\x9b\ud800") == "tab\\there\\x7f\\x9b\\ud800"


def test_safe_leaves_printable_text_alone() -> None:
    assert safe("spamhaus-drop: 404 Not Found, Zürich \\x1b") == (
        "spamhaus-drop: 404 Not Found, Zürich \\x1b")


def test_table_cells_are_escaped() -> None:
    assert table(["NAME"], [[HOSTILE]]) == f"NAME\n{HOSTILE_SHOWN}"


HOSTILE_ANSWERS: dict[str, tuple[list[str], dict[str, Any]]] = {
    "import": (["import", "a"], {"imports": [{
        "source": HOSTILE, "state": "failed", "added": 0, "removed": 0, "invalid": 1,
        "skipped": 0, "took": 0.1, "error": HOSTILE, "invalid_lines": [[3, HOSTILE]]}]}),
    "sources": (["sources"], {"sources": [{
        "name": HOSTILE, "jail": HOSTILE, "interval": 60, "entries": 1, "last_run": None,
        "last_state": "failed", "last_error": HOSTILE, "next_run": None}]}),
    "status": (["status"], {"version": HOSTILE, "fail2ban": {"reachable": False,
                            "error": HOSTILE, "since": None}, "jails": [{"jail": HOSTILE,
                            "error": HOSTILE}], "sources": [{"name": HOSTILE, "jail": "bl",
                            "last_state": HOSTILE}], "timers": [{"name": HOSTILE}]}),
    "lookup": (["lookup", "192.0.2.1"], {"results": [{
        "ip": "192.0.2.1", "cached": True, "negative": False, "country_code": HOSTILE,
        "country_name": HOSTILE, "asn": 64496, "as_org": HOSTILE, "origin": "ip-api",
        "age": 5, "sources": [{"source": HOSTILE, "entry": HOSTILE, "jail": "bl"}],
        "banned_in": [HOSTILE]}]}),
    # exposition is line-based: its newlines stay, everything else is escaped
    "metrics": (["metrics"], {"text": f"bangd_up 1\n# {HOSTILE.replace(chr(10), '')}\n"}),
}


@pytest.mark.parametrize("command", sorted(HOSTILE_ANSWERS))
def test_strings_from_the_daemon_reach_the_terminal_escaped(
    sock: str, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    argv, result = HOSTILE_ANSWERS[command]
    handlers = {"sources": lambda args: {"sources": []}, argv[0]: lambda args: result}
    with FakeBangd(sock, handlers):
        bangctl.main(["-s", sock, *argv])
    out = capsys.readouterr()
    shown = HOSTILE_SHOWN.replace("\\n", "") if command == "metrics" else HOSTILE_SHOWN
    assert shown in out.out
    for text in (out.out, out.err):
        assert not any(ch < " " and ch != "\n" for ch in text), repr(text)


def test_an_error_message_from_the_daemon_is_escaped(
    sock: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(args: dict[str, Any]) -> dict[str, Any]:
        raise Refused("not_found", f"no source {args['source']!r}")

    with FakeBangd(sock, {"runs": refuse}):
        assert bangctl.main(["-s", sock, "runs", HOSTILE]) == 1
    err = capsys.readouterr().err
    assert "not_found: no source 'evil\\x1b]0;pwned" in err
    assert "\x1b" not in err


# The metrics help


def test_metrics_help_names_the_textfile_directory_of_the_readme_and_the_unit() -> None:
    directory = "/var/lib/prometheus/node-exporter"
    assert f"{directory}/bangd.prom" in " ".join(run("metrics", "--help").stdout.split())
    assert f"`{directory}/bangd.prom`" in (REPO / "README.md").read_text()
    assert f"> {directory}/bangd.prom.tmp" in (
        REPO / "systemd" / "bangd-metrics.service").read_text()
