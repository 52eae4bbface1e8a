"""Watches whether fail2ban answers, so bangd can run without it and catch up when it returns.

fail2ban being down is a normal state for bangd (it starts before fail2ban, fail2ban is
restarted by an operator): it is shown in `status`, retried with backoff, and a return after
an outage triggers `on_recover` (reconciliation re-bans what fail2ban lost meanwhile). A
restart between two checks is caught too: fail2ban creates a new socket file each start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import Fail2banError
from ..files import FileIdentity, file_identity

log = logging.getLogger(__name__)


class Pingable(Protocol):
    @property
    def socket_path(self) -> str: ...

    async def version(self) -> str: ...


@dataclass
class Fail2banHealth:
    reachable: bool | None = None  # None: not checked yet
    version: str | None = None
    error: str | None = None
    since: float | None = None
    checked: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "reachable": self.reachable,
            "version": self.version,
            "error": self.error,
            "since": self.since,
            "checked": self.checked,
        }


class Fail2banMonitor:
    def __init__(
        self,
        client: Pingable,
        *,
        interval: float = 10.0,
        min_retry: float = 1.0,
        on_change: Callable[[Fail2banHealth], None] | None = None,
        on_recover: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.interval = interval
        self.min_retry = min_retry
        self.on_change = on_change
        self.on_recover = on_recover
        self.clock = clock
        self.health = Fail2banHealth()
        self._task: asyncio.Task[None] | None = None
        self._poke = asyncio.Event()
        self._identity: FileIdentity | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="fail2ban-monitor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def poke(self) -> None:
        """Check again now (e.g. after a reload pointed at another socket)."""
        self._poke.set()

    async def check(self) -> Fail2banHealth:
        was = self.health.reachable
        now = self.clock()
        try:
            version = await self.client.version()
        except Fail2banError as exc:
            self.health.checked = now
            if was is not False:
                self.health.since = now
                log.warning("fail2ban unreachable: %s", exc)
            self.health.reachable, self.health.error = False, str(exc)
        else:
            self.health.checked = now
            identity = file_identity(self.client.socket_path)
            restarted = (
                was is True and self._identity is not None and identity != self._identity
            )
            self._identity = identity
            if was is not True or restarted:
                self.health.since = now
                log.info("fail2ban reachable version=%s%s", version,
                         " (restarted since the last check)" if restarted else "")
            self.health.reachable, self.health.version, self.health.error = True, version, None
            # A restart loses bans fail2ban had not yet saved: reconcile, as after an outage.
            if (was is False or restarted) and self.on_recover is not None:
                await self.on_recover()
        if was != self.health.reachable and self.on_change is not None:
            self.on_change(self.health)
        return self.health

    async def _loop(self) -> None:
        retry = self.min_retry
        while True:
            self._poke.clear()
            try:
                health = await self.check()
            except Exception:
                log.exception("fail2ban health check failed")
                health = self.health
            if health.reachable:
                retry = self.min_retry
                delay = self.interval
            else:
                delay = retry
                retry = min(retry * 2, self.interval)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._poke.wait()
