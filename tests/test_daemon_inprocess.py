"""The Daemon in-process: start, serve its control socket, reload, stop, against the real
private fail2ban; systemd's notifications recorded through the notifier seam, time given
through the clock seam."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bangd.config import load_config
from bangd.control.client import ControlClient
from bangd.daemon import Daemon
from tests.fail2ban_server import PrivateFail2ban
from tests.shortdir import short_tmpdir

T0 = 1_700_000_000.0


class Recorder:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def notify(self, state: str) -> None:
        self.messages.append(state)


@pytest.fixture
def workdir() -> Iterator[Path]:
    with short_tmpdir() as path:  # a Unix socket path must stay short
        yield Path(path)


def write_config(directory: Path, server: PrivateFail2ban, sources: list[str]) -> str:
    for name in sources:
        (directory / f"{name}.txt").write_text(f"198.51.100.{len(name)}\n203.0.113.0/24\n")
    path = directory / "bangd.yaml"
    path.write_text(yaml.safe_dump({
        "database": str(directory / "bangd.db"),
        "control": {"socket": str(directory / "bangd.sock")},
        "fail2ban": {"socket": server.socket, "jail": "bl"},
        "skip_reserved": False,
        "sources": [{"name": name, "path": str(directory / f"{name}.txt"), "interval": "1d"}
                    for name in sources],
    }))
    return str(path)


async def call(daemon: Daemon, command: str, args: dict[str, Any] | None = None) -> Any:
    """bangd's own client, in a thread: the daemon's loop must stay free to answer."""
    def ask() -> Any:
        with ControlClient(daemon.config.control.socket, timeout=30) as client:
            return client.call(command, args)

    return await asyncio.to_thread(ask)


@pytest.fixture
async def daemon(
    workdir: Path, fail2ban_server: PrivateFail2ban, fail2ban_jail: str
) -> AsyncIterator[Daemon]:
    running = Daemon(load_config(write_config(workdir, fail2ban_server, ["one"])),
                     notifier=Recorder())
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def test_a_started_daemon_says_ready_and_answers_status(daemon: Daemon) -> None:
    assert isinstance(daemon.notifier, Recorder) and "READY=1" in daemon.notifier.messages
    status = await call(daemon, "status")
    assert [s["name"] for s in status["sources"]] == ["one"]
    while status["fail2ban"]["reachable"] is None:  # the monitor's first check is under way
        status = await asyncio.wait_for(call(daemon, "status"), 10)
    assert status["fail2ban"]["reachable"] is True


async def test_an_import_through_the_socket_bans_in_fail2ban(
    daemon: Daemon, fail2ban_server: PrivateFail2ban
) -> None:
    (result,) = (await call(daemon, "import", {"sources": ["one"], "force": True}))["imports"]
    assert result["state"] == "completed"
    code, banned = fail2ban_server.command(["get", "bl", "banned"])
    assert code == 0 and isinstance(banned, list)
    assert set(banned) >= {"198.51.100.3", "203.0.113.0/24"}


async def test_a_reload_takes_the_changed_config_in_place(
    daemon: Daemon, workdir: Path, fail2ban_server: PrivateFail2ban
) -> None:
    app = daemon.app
    write_config(workdir, fail2ban_server, ["one", "three"])
    assert (await call(daemon, "reload"))["reloaded"] is True
    assert daemon.app is app  # the same service graph, told its new settings
    assert [s["name"] for s in (await call(daemon, "sources"))["sources"]] == ["one", "three"]


async def test_stop_removes_the_socket_and_leaves_no_task_behind(
    workdir: Path, fail2ban_server: PrivateFail2ban, fail2ban_jail: str
) -> None:
    recorder = Recorder()
    daemon = Daemon(load_config(write_config(workdir, fail2ban_server, ["one"])),
                    notifier=recorder)
    before = asyncio.all_tasks()
    await daemon.start()
    await call(daemon, "status")
    await daemon.stop()
    assert not os.path.exists(daemon.config.control.socket)
    assert "STOPPING=1" in recorder.messages
    left = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert left == set(), left


async def test_the_clock_seam_dates_status_and_the_run_records(
    workdir: Path, fail2ban_server: PrivateFail2ban, fail2ban_jail: str
) -> None:
    daemon = Daemon(load_config(write_config(workdir, fail2ban_server, ["one"])),
                    notifier=Recorder(), clock=lambda: T0)
    await daemon.start()
    try:
        (result,) = (await call(daemon, "import", {"sources": ["one"]}))["imports"]
        status = await call(daemon, "status")
        runs = (await call(daemon, "runs", {"source": "one"}))["runs"]
    finally:
        await daemon.stop()
    assert result["state"] in ("completed", "unchanged")
    assert (status["started_at"], status["uptime"]) == (T0, 0.0)
    assert {run["started"] for run in runs} == {T0}
    assert {run["finished"] for run in runs if run["state"] != "running"} == {T0}
