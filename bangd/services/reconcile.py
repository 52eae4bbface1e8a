"""Reconciliation: make each jail hold again what bangd has applied to it.

fail2ban forgets bans: a restart before its database caught up, `bantime` expiry, an
operator's `unban --all`. bangd's `applied` table is the record of what should be there;
this compares it with `get JAIL banned` and re-bans the difference. It never unbans.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from .. import slices
from ..errors import Fail2banError
from ..sources.parse_process import screened_out
from ..store.imports import ImportStore
from .apply import Applier, Fail2ban
from .importer import FilterSettings

log = logging.getLogger(__name__)


@dataclass
class JailReport:
    jail: str
    expected: int = 0
    present: int = 0
    missing: int = 0
    rebanned: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"jail": self.jail, "expected": self.expected, "present": self.present,
                "missing": self.missing, "rebanned": self.rebanned, "error": self.error}


class Reconciler:
    def __init__(
        self,
        store: ImportStore,
        fail2ban: Fail2ban,
        *,
        batch_size: int = 1000,
        apply_lock: asyncio.Lock | None = None,
        applier: Applier | None = None,
    ) -> None:
        """`applier` is the daemon's shared one; without it, one is made from `fail2ban`,
        `batch_size` and `apply_lock`."""
        self.store = store
        self.applier = applier if applier is not None else Applier(
            store, fail2ban, batch_size=batch_size, lock=apply_lock
        )

    async def run(
        self, jail: str | None = None, settings: FilterSettings | None = None
    ) -> list[JailReport]:
        """Re-ban what is missing. With `settings`, an entry the allowlist or
        skip_reserved now excludes is not re-banned, even before its source re-imports."""
        jails = [jail] if jail is not None else await self.store.jails()
        reports = []
        async with self.applier.lock:
            for name in jails:
                reports.append(await self._jail(name, settings))
        return reports

    async def _jail(self, jail: str, settings: FilterSettings | None) -> JailReport:
        report = JailReport(jail)
        t0 = time.monotonic()
        expected = await self.store.expected(jail)
        report.expected = len(expected)
        if not expected:
            return report
        try:
            missing = await self.applier.missing(jail, expected)
            if settings is not None and missing:
                missing = await slices.without(missing, await screened_out(
                    missing, allowlist=settings.screen, skip_reserved=settings.skip_reserved
                ))
            report.missing = len(missing)
            report.present = report.expected - report.missing
            await self.applier.reban(jail, missing)
            report.rebanned = len(missing)
        except Fail2banError as exc:
            report.error = str(exc)
        level = logging.WARNING if report.missing or report.error else logging.INFO
        log.log(
            level, "reconcile jail=%s expected=%d present=%d missing=%d rebanned=%d took=%.2fs%s",
            jail, report.expected, report.present, report.missing, report.rebanned,
            time.monotonic() - t0, f" error={report.error}" if report.error else "",
        )
        return report
