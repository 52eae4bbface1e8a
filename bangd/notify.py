"""systemd notifications (READY, STATUS, WATCHDOG, STOPPING) through sdnotify.

Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op, so the daemon code never
asks whether it runs under systemd.
"""

from __future__ import annotations

import logging
import os
from typing import Protocol

import sdnotify

log = logging.getLogger(__name__)


class Notifier(Protocol):
    def notify(self, state: str) -> None: ...


class SystemdNotifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier()

    def notify(self, state: str) -> None:
        if self.enabled:
            self._notifier.notify(state)
            log.debug("sd_notify %s", state.replace("\n", " "))


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
