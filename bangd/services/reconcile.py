"""Reconciliation: make each jail hold again what bangd has applied to it.

fail2ban forgets bans: a restart before its database caught up, `bantime` expiry, an
operator's `unban --all`. bangd's `applied` table is the record of what should be there;
this compares it with `get JAIL banned` and re-bans the difference. It never unbans.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import Fail2banError
from ..sources.parse import parse_blocklist, sorted_entries
from ..store.imports import ImportStore
from .importer import FilterSettings, reban

log = logging.getLogger(__name__)


class Fail2ban(Protocol):
    async def ban(self, jail: str, addrs: Sequence[str]) -> int: ...
    async def banned(self, jail: str) -> list[str]: ...


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
    ) -> None:
        self.store = store
        self.fail2ban = fail2ban
        self.batch_size = batch_size
        self.apply_lock = apply_lock if apply_lock is not None else asyncio.Lock()

    def reconfigure(self, *, batch_size: int) -> None:
        """New `fail2ban.batch_size`, from the next batch on."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size

    async def run(
        self, jail: str | None = None, settings: FilterSettings | None = None
    ) -> list[JailReport]:
        """Re-ban what is missing. With `settings`, an entry the allowlist or
        skip_reserved now excludes is not re-banned, even before its source re-imports."""
        jails = [jail] if jail is not None else await self.store.jails()
        reports = []
        async with self.apply_lock:
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
            banned = set(await self.fail2ban.banned(jail))
            missing = await asyncio.to_thread(sorted_entries, expected - banned)
            if settings is not None and missing:
                missing = await asyncio.to_thread(_still_wanted, missing, settings)
            report.missing = len(missing)
            report.present = report.expected - report.missing
            await reban(self.store, self.fail2ban, jail, missing, self.batch_size)
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


def _still_wanted(entries: list[str], settings: FilterSettings) -> list[str]:
    """The entries the current allowlist and skip_reserved still let through."""
    kept = parse_blocklist(
        "\n".join(entries).encode(), allowlist=settings.allowlist,
        skip_reserved=settings.skip_reserved,
    ).entries
    return [e for e in entries if e in kept]
