"""systemd notifications (READY, STATUS, WATCHDOG, STOPPING) through sdnotify.

Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op, so the daemon code never
asks whether it runs under systemd.

The notify socket is a connected Unix datagram socket: when its reader (PID 1) does not
read, the kernel queues only `net.unix.max_dgram_qlen` (10) messages and a blocking send
then sleeps until systemd reads. Measured: after ten unread STATUS lines the whole event
loop slept in `sendall`, and every `bangctl` call hung. So sdnotify's socket is made
non-blocking and a message that cannot go now waits in a one-per-kind mailbox (a newer
STATUS replaces an older one; READY/STOPPING/WATCHDOG are kept) and is retried on a
timer. Nothing here ever blocks the caller.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from typing import Protocol

import sdnotify

log = logging.getLogger(__name__)

RETRY_FIRST = 0.05  # seconds before the first retry of a held message
RETRY_MAX = 2.0  # back-off cap: systemd reading again is noticed within this


class Notifier(Protocol):
    def notify(self, state: str) -> None: ...


def _kind(state: str) -> str:
    """The mailbox slot of a message: its first variable (`STATUS`, `WATCHDOG`, ...)."""
    return state.split("=", 1)[0]


class SystemdNotifier:
    """sd_notify that never blocks: a full queue holds the newest message of each kind.

    `send` is the raw, non-blocking send; it is a seam for tests. The retry timer needs a
    running event loop; without one (a call before the loop starts) a held message waits
    for the next `notify` call.
    """

    def __init__(
        self,
        *,
        send: Callable[[bytes], None] | None = None,
    ) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._socket: socket.socket | None = None
        if send is not None:
            self._send = send
        elif self.enabled:
            notifier = sdnotify.SystemdNotifier()
            self._socket = notifier.socket
            if self._socket is None:
                log.warning("sd_notify: cannot connect to NOTIFY_SOCKET=%s; systemd will "
                            "not hear from bangd", os.environ.get("NOTIFY_SOCKET"))
                self.enabled = False
            else:
                self._socket.setblocking(False)
            self._send = self._send_socket
        else:
            self._send = self._send_socket
        self._held: dict[str, str] = {}
        self._stalled = False
        self._retry: asyncio.TimerHandle | None = None
        self._delay = RETRY_FIRST
        self.replaced = 0  # held messages overtaken by a newer one of the same kind

    @property
    def stalled(self) -> bool:
        """True while messages wait for systemd to read its socket."""
        return self._stalled

    def notify(self, state: str) -> None:
        if not self.enabled:
            return
        kind = _kind(state)
        if kind in self._held:
            self.replaced += 1
            del self._held[kind]  # re-inserted last: arrival order is kept
        self._held[kind] = state
        self._flush()

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _send_socket(self, data: bytes) -> None:
        if self._socket is None:
            raise OSError("notify socket closed")
        self._socket.send(data)

    def _flush(self) -> None:
        """Send held messages, lifecycle ones first, until the socket is full again."""
        for kind in sorted(self._held, key=lambda k: k == "STATUS"):
            state = self._held[kind]
            try:
                self._send(state.encode("utf-8", "replace"))
            except BlockingIOError:
                self._stall()
                return
            except OSError as exc:
                # systemd gone (ECONNREFUSED) or the socket closed: nothing to wait for.
                log.debug("sd_notify %s not sent: %s", kind, exc)
            else:
                log.debug("sd_notify %s", state.replace("\n", " "))
            del self._held[kind]
        if self._stalled:
            log.info("sd_notify: systemd reads its socket again; held messages sent "
                     "replaced=%d", self.replaced)
            self._stalled = False
            self._delay = RETRY_FIRST

    def _stall(self) -> None:
        if not self._stalled:
            self._stalled = True
            log.warning("sd_notify: systemd is not reading its notify socket; messages are "
                        "held (the newest of each kind) and retried, bangd carries on")
        if self._retry is not None:
            return  # the pending retry will send the newest messages
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: the next notify() tries again
        self._retry = loop.call_later(self._delay, self._on_retry)
        self._delay = min(self._delay * 2, RETRY_MAX)

    def _on_retry(self) -> None:
        self._retry = None
        self._flush()


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of systemd's WATCHDOG_USEC, or None if unset.

    WATCHDOG_PID, when set, must name this process: a child that inherited the variable must
    not ping on its parent's behalf.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 2 / 1_000_000
