"""The real bangd executable under a systemd-like supervisor played by the test."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.daemon_process import BIN_DIR, DaemonProcess, bangctl, bangctl_json
from tests.fail2ban_server import PrivateFail2ban
from tests.shortdir import short_tmpdir


@pytest.fixture
def workdir() -> Iterator[str]:
    with short_tmpdir("bangd-proc-") as d:
        yield d


@pytest.fixture
def daemon(workdir: str, fail2ban_server: PrivateFail2ban) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(workdir, {"fail2ban": {"socket": fail2ban_server.socket, "jail": "bl"}})
    yield proc
    proc.close()


def wait_reachable(sock: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = bangctl_json(sock, "status")
        if status["fail2ban"]["reachable"] is not None or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def test_bangd_notifies_ready_answers_bangctl_reloads_and_stops_cleanly(
    daemon: DaemonProcess,
) -> None:
    daemon.start()
    daemon.wait_for("READY=1")
    assert daemon.wait_for("STATUS=").startswith("STATUS=")

    status = wait_reachable(daemon.socket)
    assert status["fail2ban"]["reachable"] is True
    assert status["fail2ban"]["version"] == "1.0.2"
    assert status["database"]["schema_version"] >= 1
    assert bangctl(daemon.socket, "version").stdout.startswith("bangd ")

    daemon.config["sources"] = [{"name": "local", "path": "/nonexistent", "interval": "1h",
                                 "enabled": False}]
    daemon.write_config(daemon.config)
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while len(bangctl_json(daemon.socket, "status")["sources"]) != 1:
        assert time.monotonic() < deadline, daemon.log_text()
        time.sleep(0.05)

    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(10) == 0
    daemon.wait_for("STOPPING=1")
    assert not os.path.exists(daemon.socket)


def test_invalid_config_on_sighup_is_logged_and_the_old_one_kept(
    daemon: DaemonProcess,
) -> None:
    daemon.start()
    daemon.wait_for("READY=1")
    daemon.write_config("log_level: loud\n")
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload refused" not in daemon.log_text():
        assert time.monotonic() < deadline, daemon.log_text()
        time.sleep(0.05)
    assert "log_level: expected one of debug" in daemon.log_text()
    assert bangctl_json(daemon.socket, "version")["version"]


def test_bangctl_reload_with_an_invalid_config_exits_1_and_keeps_the_daemon(
    daemon: DaemonProcess,
) -> None:
    daemon.start()
    daemon.wait_for("READY=1")
    daemon.write_config("sources: 5\n")
    done = bangctl(daemon.socket, "reload")
    assert done.returncode == 1
    assert "sources: expected a list of sources" in done.stderr
    assert bangctl(daemon.socket, "status").returncode == 0


def test_watchdog_is_pinged_when_systemd_asks_for_it(daemon: DaemonProcess) -> None:
    daemon.start(extra_env={"WATCHDOG_USEC": "200000"})
    daemon.wait_for("READY=1")
    daemon.wait_for("WATCHDOG=1", timeout=5)


def test_fail2ban_down_at_start_is_not_fatal_and_shows_in_status(workdir: str) -> None:
    proc = DaemonProcess(workdir, {"fail2ban": {"socket": os.path.join(workdir, "none.sock")}})
    try:
        proc.start()
        proc.wait_for("READY=1")
        status = wait_reachable(proc.socket)
        assert status["fail2ban"]["reachable"] is False
        assert "none.sock" in status["fail2ban"]["error"]
        assert "DOWN since" in bangctl(proc.socket, "status").stdout
    finally:
        proc.close()


def test_a_second_bangd_on_the_same_socket_exits_with_a_clear_error(
    daemon: DaemonProcess,
) -> None:
    daemon.start()
    daemon.wait_for("READY=1")
    second = DaemonProcess.__new__(DaemonProcess)
    second.__dict__.update(daemon.__dict__)
    second.log_path = daemon.log_path + ".2"
    second.proc = None
    second.start()
    assert second.wait_exit(20) == 1
    assert "another bangd is already running" in second.log_text()
    assert bangctl(daemon.socket, "status").returncode == 0


def test_bangctl_exit_code_3_when_bangd_is_not_running(workdir: str) -> None:
    done = bangctl(os.path.join(workdir, "nope.sock"), "status")
    assert done.returncode == 3
    assert "is the service running?" in done.stderr


def test_bangctl_usage_error_exits_2(workdir: str) -> None:
    assert bangctl(os.path.join(workdir, "nope.sock"), "frobnicate").returncode == 2


@pytest.mark.parametrize(
    "command",
    [["status"], ["version"], ["reload"], ["sources"], ["import"], ["runs"], ["reconcile"],
     ["lookup"], ["cache", "stats"], ["cache", "cleanup"], ["metrics"]],
)
def test_every_bangctl_command_has_help_with_an_example(
    workdir: str, command: list[str]
) -> None:
    done = bangctl(os.path.join(workdir, "unused.sock"), *command, "--help")
    assert done.returncode == 0
    assert "example" in done.stdout


def test_bangctl_takes_the_socket_from_bangctl_socket(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.wait_for("READY=1")
    done = subprocess.run(
        [str(BIN_DIR / "bangctl"), "version"], capture_output=True, text=True, timeout=30,
        env={**os.environ, "BANGCTL_SOCKET": daemon.socket}, check=False,
    )
    assert (done.returncode, done.stdout.startswith("bangd ")) == (0, True)


def test_bangd_takes_the_config_from_bangd_config(daemon: DaemonProcess) -> None:
    done = subprocess.run(
        [str(BIN_DIR / "bangd"), "--check-config"], capture_output=True, text=True,
        timeout=30, env={**os.environ, "BANGD_CONFIG": daemon.config_path}, check=False,
    )
    assert (done.returncode, done.stdout) == (0, "ok\n")
