"""bangctl's exit codes and options against the real bangd process and a real
fail2ban-server: a list that cannot be read makes `import` exit 1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, bangctl, ready_daemon, wait_first_runs
from tests.fail2ban_server import PrivateFail2ban


@pytest.fixture
def daemon(fail2ban_jail: str, fail2ban_server: PrivateFail2ban) -> Iterator[DaemonProcess]:
    """Source `good` reads a list; source `gone` points at a file that does not exist."""
    with ready_daemon("bangd-exit-", fail2ban_server.socket, fail2ban_jail,
                      files={"good.txt": "203.0.113.1\n"},
                      sources=[{"name": "good", "path": "good.txt"},
                               {"name": "gone", "path": "missing.txt"}],
                      skip_reserved=False) as proc:
        wait_first_runs(proc, {"good": "completed", "gone": "failed"})
        yield proc


def test_import_exits_1_when_a_source_fails_and_still_prints_every_summary(
    daemon: DaemonProcess,
) -> None:
    done = bangctl(daemon.socket, "import", "good", "gone")
    assert done.returncode == 1, done.stderr
    rows = {line.split()[0]: line.split()[1] for line in done.stdout.splitlines()[1:3]}
    assert rows == {"good": "unchanged", "gone": "failed"}
    assert "missing.txt" in done.stdout
    assert "bangctl: import failed for gone" in done.stderr


def test_import_with_json_exits_1_when_a_source_fails(daemon: DaemonProcess) -> None:
    done = bangctl(daemon.socket, "--json", "import", "gone")
    assert done.returncode == 1
    assert [r["state"] for r in json.loads(done.stdout)["imports"]] == ["failed"]


def test_import_exits_0_when_every_source_succeeds(daemon: DaemonProcess) -> None:
    assert bangctl(daemon.socket, "import", "good").returncode == 0


def test_import_prints_nothing_on_stderr_when_it_is_not_a_terminal(
    daemon: DaemonProcess,
) -> None:
    done = bangctl(daemon.socket, "import", "good", "--force")
    assert (done.returncode, done.stderr) == (0, "")


def test_json_after_the_command_prints_the_daemon_s_result(daemon: DaemonProcess) -> None:
    done = bangctl(daemon.socket, "status", "--json")
    assert done.returncode == 0, done.stderr
    assert [s["name"] for s in json.loads(done.stdout)["sources"]] == ["good", "gone"]


def test_the_socket_option_after_the_command_is_used(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    done = bangctl(str(tmp_path / "wrong.sock"), "version", "-s", daemon.socket)
    assert (done.returncode, done.stdout.startswith("bangd ")) == (0, True)
