"""Retention of the geolocation cache: forget addresses bangd has not met for a while.

A row goes when its `last_seen` is older than `retention_days` days: with
cutoff = now - retention_days * 86400, rows with last_seen < cutoff are deleted and a row
with last_seen == cutoff is kept (it has been unseen for exactly the retention period,
not longer). Negative rows go by the same rule. An address deleted and met again is
simply resolved again.

Deleting half a million rows in one statement would hold SQLite's write lock (and the
connection every task shares) for seconds, so the purge walks the table's key in chunks,
each its own short transaction, yielding to the event loop between chunks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bangd.store.geo import GeoCacheStore

log = logging.getLogger(__name__)

DAY = 86400.0
DEFAULT_CHUNK = 10_000


@dataclass(frozen=True)
class PurgeResult:
    """What one retention run did (or, with dry_run, would do)."""

    deleted: int
    cutoff: float
    took: float
    chunks: int
    dry_run: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the retention job's record and `bangctl cache cleanup`."""
        return {
            "deleted": self.deleted,
            "cutoff": self.cutoff,
            "took": round(self.took, 3),
            "chunks": self.chunks,
            "dry_run": self.dry_run,
        }


def retention_cutoff(now: float, retention_days: float) -> float:
    """Rows whose last_seen is strictly older than this are deleted."""
    return now - retention_days * DAY


async def purge(
    store: GeoCacheStore,
    *,
    retention_days: float,
    clock: Callable[[], float] = time.time,
    chunk: int = DEFAULT_CHUNK,
    dry_run: bool = False,
) -> PurgeResult:
    """Delete (dry_run: count) the rows unseen for longer than `retention_days`."""
    if chunk < 1:
        raise ValueError("chunk must be at least 1")
    if retention_days < 0:
        raise ValueError("retention_days must be >= 0")
    started = time.monotonic()
    cutoff = retention_cutoff(clock(), retention_days)
    after = ""
    deleted = chunks = 0
    while True:
        count, last = await _step(store, after, cutoff, chunk, dry_run)
        if count == 0:
            break
        deleted += count
        chunks += 1
        after = last
        if count < chunk:
            break  # the walk reached the end of the table
        await asyncio.sleep(0)
    result = PurgeResult(deleted, cutoff, time.monotonic() - started, chunks, dry_run)
    _log_result(result)
    return result


async def run_retention(
    store: GeoCacheStore,
    *,
    retention_days: float,
    clock: Callable[[], float] = time.time,
    chunk: int = DEFAULT_CHUNK,
    dry_run: bool = False,
) -> dict[str, Any]:
    """`purge` shaped as a job's or control handler's result."""
    result = await purge(
        store, retention_days=retention_days, clock=clock, chunk=chunk, dry_run=dry_run
    )
    return result.as_dict()


async def _step(
    store: GeoCacheStore, after: str, cutoff: float, chunk: int, dry_run: bool
) -> tuple[int, str]:
    """One chunk: find the next old rows after `after`, delete them unless dry_run.

    Finding and deleting share one transaction, so the rows counted are the rows deleted.
    """
    if dry_run:
        found = await store.old_chunk(after, cutoff, chunk)
        return found.count, found.last
    async with store.db.transaction():
        found = await store.old_chunk(after, cutoff, chunk)
        if found.count == 0:
            return 0, after
        deleted = await store.delete_old_range(after, found.last, cutoff)
    return deleted, found.last


def _log_result(result: PurgeResult) -> None:
    level = logging.INFO if result.deleted else logging.DEBUG
    cutoff = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(result.cutoff))
    if result.dry_run:
        log.log(level, "retention dry_run=true would_delete=%d cutoff=%s took=%.2fs",
                result.deleted, cutoff, result.took)
    else:
        log.log(level, "retention deleted=%d cutoff=%s took=%.2fs chunks=%d",
                result.deleted, cutoff, result.took, result.chunks)
