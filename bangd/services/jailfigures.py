"""fail2ban's per-jail figures for `status` and `metrics`, without waiting behind an import.

fail2ban's server answers one command at a time, and bangd's link to it is one connection:
while an import runs, every `banip` wire call holds fail2ban for 50-100 ms (5,000 entries),
and a status call that asked fail2ban twice per jail took a median 164 ms, p99 346 ms at
1M entries; and while a list is parsed in a thread, each await of the status call waits
for the GIL. So while bangd itself is importing (`busy`: an import under way, or the apply
lock held), status shows the figures of fail2ban's last answer with the time of that
answer, and a refresh runs behind the import; at any other time it asks fail2ban there and
then, so a status taken after an import always shows the counts that import left.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..errors import Fail2banError
from ..fail2ban.client import JailStatus

REFRESH_AFTER = 1.0  # seconds: how stale figures may get while an import runs


class JailQueries(Protocol):
    async def jail_status(self, jail: str) -> JailStatus: ...
    async def jail_actions(self, jail: str) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Figures:
    """One answer of fail2ban about a jail, or the error asking it gave."""

    status: JailStatus | None
    actions: list[str] | None
    error: str | None
    as_of: float  # wall clock of the answer


class JailFigures:
    def __init__(
        self,
        fail2ban: JailQueries,
        *,
        busy: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fail2ban = fail2ban
        self._busy = busy
        self._clock = clock
        self._known: dict[str, Figures] = {}
        self._refreshing: dict[str, asyncio.Task[Figures]] = {}

    async def of(self, jail: str) -> Figures:
        known = self._known.get(jail)
        if known is None or not self._busy():
            return await self._refresh(jail)
        if self._clock() - known.as_of >= REFRESH_AFTER and jail not in self._refreshing:
            task = asyncio.create_task(self._ask(jail), name=f"jail-figures-{jail}")
            self._refreshing[jail] = task
            task.add_done_callback(lambda _: self._refreshing.pop(jail, None))
        return known

    async def close(self) -> None:
        """Cancel refreshes still waiting behind an import (bangd is stopping)."""
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _refresh(self, jail: str) -> Figures:
        running = self._refreshing.get(jail)
        if running is not None:
            return await asyncio.shield(running)
        return await self._ask(jail)

    async def _ask(self, jail: str) -> Figures:
        try:
            status = await self._fail2ban.jail_status(jail)
        except Fail2banError as exc:
            figures = Figures(None, None, str(exc), self._clock())
        else:
            try:
                actions: list[str] | None = await self._fail2ban.jail_actions(jail)
                error = None
            except Fail2banError as exc:
                actions, error = None, str(exc)
            figures = Figures(status, actions, error, self._clock())
        self._known[jail] = figures
        return figures
