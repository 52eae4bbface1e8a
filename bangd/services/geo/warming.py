"""Warming the geo cache after imports, in the background: the addresses an import newly
banned are resolved before anyone asks, and everything a source lists counts as seen.

Warming is a courtesy to later lookups: it never fails an import and never raises.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from bangd.services.geo.chain import GeoResolver

log = logging.getLogger(__name__)


class SourceListings(Protocol):
    """What warming needs of the import ledger: mark what a source lists as seen."""

    async def mark_listed_seen(self, source: str, now: float) -> int: ...


class GeoWarmer:
    """The importer's hooks into geo; it owns the background warming it starts: `close()`
    cancels it. One warming runs at a time."""

    def __init__(
        self,
        resolver: GeoResolver,
        ledger: SourceListings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._resolver = resolver
        self._ledger = ledger
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._warm_lock = asyncio.Lock()
        self._closed = False

    async def on_banned(self, source: str, addresses: Sequence[str]) -> None:
        """Importer hook after a completed import: returns at once; in the background,
        refreshes last_seen of everything `source` lists and resolves the new single
        addresses (CIDR entries are never resolved)."""
        if self._closed:
            return
        # Not copied: the importer's list is never changed after it is handed over (a
        # copy of 1M entries held the event loop ~5 ms).
        task = asyncio.create_task(
            self._after_import(source, addresses), name=f"geo-warm:{source}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def on_unchanged(self, source: str) -> None:
        """Importer hook for an unchanged import: one bulk last_seen refresh, no lookups."""
        await self._refresh_source(source)

    async def warm(self, source: str, addresses: Sequence[str]) -> None:
        """Resolve `addresses` (single addresses; CIDRs are skipped) into the cache.

        Never raises (except on cancellation): warming is a courtesy to later lookups,
        and an import must not fail because of it. One warming runs at a time.
        """
        if not addresses or not self._resolver.has_resolvers:
            return
        # In a thread: picking the addresses out of 1M entries held the loop ~40 ms
        # (seen as the worst `status` answer at the end of a 1M import).
        singles = await asyncio.to_thread(_single_addresses, addresses)
        if not singles:
            return
        try:
            async with self._warm_lock:
                started = time.monotonic()
                written = await self._resolver.refresh(singles)
            log.info("geo warm source=%s addresses=%d written=%d took=%.2fs",
                     source, len(singles), written, time.monotonic() - started)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("geo warm source=%s failed; addresses resolve on lookup", source)

    async def _after_import(self, source: str, addresses: Sequence[str]) -> None:
        await self._refresh_source(source)
        await self.warm(source, addresses)

    async def _refresh_source(self, source: str) -> None:
        """Mark every cached address `source` lists as seen now; never raises."""
        try:
            touched = await self._ledger.mark_listed_seen(source, self._clock())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("geo last_seen refresh for source=%s failed", source)
            return
        log.debug("geo last_seen refreshed source=%s rows=%d", source, touched)

    async def drain(self, grace: float) -> bool:
        """Wait up to `grace` s for background warming to finish; True if it did.

        For an orderly stop (let warming land before closing) and for tests.
        """
        tasks = list(self._tasks)
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=grace)
        return not pending

    async def close(self) -> None:
        """Cancel background warming and wait for it to end; idempotent."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _single_addresses(entries: Sequence[str]) -> list[str]:
    return [entry for entry in entries if "/" not in entry]
