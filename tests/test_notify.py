"""sd_notify never blocks bangd, whether or not systemd reads its socket."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from bangd.control.client import ControlClient
from bangd.notify import SystemdNotifier
from tests.daemon_process import ready_daemon
from tests.fail2ban_server import PrivateFail2ban
from tests.shortdir import short_tmpdir


@pytest.fixture
def unread_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A NOTIFY_SOCKET that nobody reads until the test says so."""
    with short_tmpdir("bangd-notify-") as d:
        path = os.path.join(d, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        yield sock
        sock.close()


def drain(sock: socket.socket, timeout: float = 5.0) -> list[str]:
    """Everything queued on the socket, waiting up to `timeout` for the first message."""
    messages = []
    sock.settimeout(timeout)
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except (TimeoutError, BlockingIOError):
            return messages
        sock.settimeout(0.2)


def test_notify_returns_at_once_when_nobody_reads(unread_socket: socket.socket) -> None:
    notifier = SystemdNotifier()
    done = threading.Event()

    def flood() -> None:
        for n in range(200):
            notifier.notify(f"STATUS=import {n}")
        done.set()

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    assert done.wait(5.0), "notify() blocked on an unread socket"
    assert notifier.stalled
    notifier.close()


async def test_held_messages_are_sent_newest_first_once_systemd_reads(
    unread_socket: socket.socket,
) -> None:
    notifier = SystemdNotifier()
    for n in range(30):
        notifier.notify(f"STATUS=import {n}")
    notifier.notify("WATCHDOG=1")
    queued = await asyncio.to_thread(drain, unread_socket)
    # The kernel's queue took the first messages; then the mailbox kept the newest STATUS
    # and the watchdog ping, which the retry timer delivers once there is room.
    queued += await asyncio.to_thread(drain, unread_socket)
    assert queued[-1] == "STATUS=import 29"
    assert "WATCHDOG=1" in queued
    assert "STATUS=import 20" not in queued  # replaced while held, never sent
    assert not notifier.stalled
    notifier.close()


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    sent: list[bytes] = []
    notifier = SystemdNotifier(send=sent.append)
    notifier.notify("READY=1")
    assert sent == []


def test_daemon_keeps_answering_when_systemd_never_reads(
    fail2ban_server: PrivateFail2ban, fail2ban_jail: str,
) -> None:
    with ready_daemon("bangd-notify-", fail2ban_server.socket, fail2ban_jail,
                      files={"list.txt": "198.51.100.7\n"},
                      sources=[{"name": "a", "path": "list.txt"}]) as proc:
        # READY=1 was read; from here on the test never reads the notify socket.
        with ControlClient(proc.socket, timeout=20.0) as client:
            for _ in range(50):
                result = client.call("import", {"sources": ["a"], "force": True})
                assert result["imports"][0]["state"] in ("completed", "unchanged")
            assert client.call("status")["version"]
        assert "not reading its notify socket" in proc.log_text()
