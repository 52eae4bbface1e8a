"""The bash completion script, sourced in a real bash and driven the way bash drives it:
COMP_WORDS and COMP_CWORD set, `_bangctl` called, COMPREPLY read back. Source and jail
names come from a real bangd."""

from __future__ import annotations

import argparse
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bangd.cli.bangctl import build_parser
from tests.daemon_process import BIN_DIR, DaemonProcess, ready_daemon
from tests.fail2ban_server import PrivateFail2ban

SCRIPT = Path(__file__).resolve().parent.parent / "packaging/debian/bash-completion/bangctl"
DRIVER = 'source "$1"; shift; COMP_CWORD=$1; shift; COMP_WORDS=("$@"); _bangctl; ' \
         'printf "%s\\n" "${COMPREPLY[@]}"'


def complete(*words: str, env: dict[str, str] | None = None) -> list[str]:
    """What bash offers for the last of `words` (the word being typed, maybe "")."""
    environ = {k: v for k, v in os.environ.items() if k != "BANGCTL_SOCKET"}
    environ["PATH"] = f"{BIN_DIR}:{environ['PATH']}"  # this bangctl, as the package's would be
    environ.update(env or {})
    done = subprocess.run(
        ["bash", "--norc", "-c", DRIVER, "bash", str(SCRIPT), str(len(words)),
         "bangctl", *words],
        capture_output=True, text=True, timeout=30, env=environ, check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    return sorted(line for line in done.stdout.splitlines() if line)


@pytest.fixture
def daemon(fail2ban_jail: str, fail2ban_server: PrivateFail2ban) -> Iterator[DaemonProcess]:
    with ready_daemon("bangd-compl-", fail2ban_server.socket, fail2ban_jail,
                      files={"a.txt": "203.0.113.1\n"},
                      sources=[{"name": "spamhaus-drop", "path": "a.txt"},
                               {"name": "firehol", "path": "a.txt", "jail": "bl2"}]) as proc:
        yield proc


def test_completes_command_names() -> None:
    assert complete("re") == ["reconcile", "reload"]
    assert "status" in complete("")


def test_completes_the_cache_actions() -> None:
    assert complete("cache", "") == ["cleanup", "stats"]


def test_completes_a_command_s_own_options() -> None:
    assert complete("import", "--d") == ["--dry-run"]
    assert complete("cache", "cleanup", "--d") == ["--dry-run"]


def test_completes_global_options_after_the_command() -> None:
    assert complete("status", "--js") == ["--json"]
    assert complete("runs", "--ti") == ["--timeout"]


def test_offers_exactly_the_options_bangctl_takes_for_each_command() -> None:
    for words, parser in commands(build_parser()):
        offered = set(complete(*words, "-"))
        taken = {opt for action in parser._actions for opt in action.option_strings}
        assert offered == taken, words


Parsers = Iterator[tuple[list[str], argparse.ArgumentParser]]


def commands(parser: argparse.ArgumentParser) -> Parsers:
    """Every command and cache action with its parser (bangctl itself: no words)."""
    yield [], parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for words, found in commands(sub):
                    yield [name, *words], found


def test_completes_socket_paths_after_s(tmp_path: Path) -> None:
    (tmp_path / "bangd.sock").touch()
    assert complete("-s", f"{tmp_path}/ban") == [f"{tmp_path}/bangd.sock"]


def test_completes_source_names_from_the_running_daemon(daemon: DaemonProcess) -> None:
    assert complete("-s", daemon.socket, "import", "") == ["firehol", "spamhaus-drop"]
    assert complete("--socket", daemon.socket, "runs", "sp") == ["spamhaus-drop"]


def test_completes_jail_names_from_the_running_daemon(daemon: DaemonProcess) -> None:
    assert complete("-s", daemon.socket, "reconcile", "--jail", "") == ["bl", "bl2"]


def test_asks_the_daemon_on_bangctl_socket(daemon: DaemonProcess) -> None:
    assert complete("import", "f", env={"BANGCTL_SOCKET": daemon.socket}) == ["firehol"]


def test_offers_no_names_and_prints_nothing_when_bangd_is_unreachable(tmp_path: Path) -> None:
    assert complete("-s", str(tmp_path / "none.sock"), "import", "") == []
