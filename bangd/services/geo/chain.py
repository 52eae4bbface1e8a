"""The geo cache in front of the resolvers: what is known about many addresses, asking
the resolvers only for what the cache cannot answer.

The chain, per address:

1. a fresh cache row. Positive rows are fresh for `positive_ttl` (30 days by default:
   MaxMind and DB-IP publish monthly, so older answers are worth asking again when the
   address comes up); negative rows for `negative_ttl` (geo.negative_ttl).
2. the local MMDB files, in a worker thread, `chunk` addresses at a time.
3. ip-api.com's batch endpoint, only if enabled, for what the MMDB did not know.
4. a negative row, so nobody is asked again about that address before negative_ttl.

When ip-api cannot answer ("try later": HTTP errors, timeouts, rate-limit waits too long)
the addresses it was asked about are not cached at all, not even as negative: nobody has
said they are unknown, so the next resolve asks again. Such addresses are missing from
`resolve`'s answer.

Writes are bulk upserts, one short transaction per chunk, and every one of them sets
`last_seen`, as does meeting a cached address again (resolve with refresh_seen).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bangd.errors import GeoError
from bangd.geo.ipapi import BATCH_LIMIT, IpApiClient, IpApiUnavailable
from bangd.geo.mmdb import MmdbResolver
from bangd.geo.model import GeoFields
from bangd.store.geo import CachedRows, CacheRow, GeoCacheStore

log = logging.getLogger(__name__)

DAY = 86400.0
POSITIVE_TTL = 30 * DAY
DEFAULT_CHUNK = 5000
CLOSE_GRACE = 10.0  # longest wait for an MMDB chunk already running in a thread


@dataclass
class _Attempt:
    """State of one resolve call: once ip-api has said "try later", stop asking it."""

    ipapi_failed: bool = False


@dataclass(frozen=True)
class _Chunk:
    """One chunk, answered: the rows to write, and the cached rows that stay as they are
    (`kept`: fresh hits, and stale rows nobody could answer now)."""

    now: float
    cached: dict[str, CacheRow]
    answers: list[GeoFields]
    kept: list[str]


class GeoResolver:
    """The resolver chain over the cache. It owns the resolvers it is given: `close()`
    waits for MMDB lookups in flight and closes the files. `chunk` bounds how many
    addresses one step handles, so that the event loop, the write lock and the memory
    of one step stay small.
    """

    def __init__(
        self,
        store: GeoCacheStore,
        *,
        mmdb: MmdbResolver | None,
        ipapi: IpApiClient | None,
        negative_ttl: float,
        clock: Callable[[], float] = time.time,
        chunk: int = DEFAULT_CHUNK,
        positive_ttl: float | None = POSITIVE_TTL,
    ) -> None:
        """`positive_ttl` None keeps positive rows fresh forever."""
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        if negative_ttl < 0 or (positive_ttl is not None and positive_ttl < 0):
            raise ValueError("negative_ttl and positive_ttl must be >= 0")
        self.store = store
        self._mmdb = mmdb
        self._ipapi = ipapi
        self._negative_ttl = negative_ttl
        self._positive_ttl = positive_ttl
        self._clock = clock
        self._chunk = chunk
        self._threads: set[asyncio.Future[list[GeoFields]]] = set()
        self._closed = False

    @property
    def has_resolvers(self) -> bool:
        """False when neither an MMDB nor ip-api is configured: only the cache answers."""
        return self._mmdb is not None or self._ipapi is not None

    @property
    def mmdb_corrupt(self) -> bool:
        return self._mmdb is not None and self._mmdb.corrupt

    async def resolve(self, ips: Sequence[str], *, refresh_seen: bool = True) -> CachedRows:
        """What is known about each of `ips`, as now cached, keyed by address.

        `ips` are plain addresses in the form lists are stored in (as bangd's parser and
        `lookup` write them); no CIDR. Cached hits get last_seen = now unless
        `refresh_seen` is False; every row written gets it anyway. Addresses that no
        resolver could answer now (ip-api unavailable, none configured) are left out,
        unless an older row exists: that row is answered and kept. Not after close().
        """
        if self._closed:
            raise RuntimeError("GeoResolver.resolve called after close()")
        results: dict[str, CacheRow] = {}
        await self._resolve(ips, refresh_seen=refresh_seen, results=results)
        return CachedRows(results)

    async def refresh(self, ips: Sequence[str]) -> int:
        """Resolve `ips` into the cache without answering (warming); cached hits are seen
        now. Returns how many rows were written."""
        return await self._resolve(ips, refresh_seen=True, results=None)

    async def close(self) -> None:
        """Stop new chunks, wait for MMDB lookups in flight, close the MMDB; idempotent."""
        self._closed = True
        if self._threads:
            await asyncio.wait(list(self._threads), timeout=CLOSE_GRACE)
        if self._mmdb is not None:
            self._mmdb.close()

    async def _resolve(
        self, ips: Sequence[str], *, refresh_seen: bool, results: dict[str, CacheRow] | None
    ) -> int:
        """Resolve chunk by chunk; return how many rows were written.

        The addresses go in key order, so that each chunk is one range of the cache's
        primary key: its reads and writes touch a few neighbouring pages, not pages all
        over the table (in random order each chunk of 5,000 rewrote most of a 100k-row
        table: 0.75 s against 0.17 s to refresh last_seen of 100k rows).

        Chunks overlap by one: the next chunk is read, then looked up in a worker thread
        while SQLite writes this one. The write is one statement per kind, and SQLite
        does not hold the interpreter lock while it runs one, so the two really run at
        once; a lookup nobody will write (the write failed) is abandoned.
        """
        unique = sorted(set(ips))
        attempt = _Attempt()
        written = 0
        answered: _Chunk | None = None  # looked up, not written yet
        for start in range(0, len(unique), self._chunk):
            if self._closed:  # a reload/stop closed the resolvers: start nothing new
                raise GeoError("the geo service was closed (bangd is reloading or stopping)")
            part = unique[start : start + self._chunk]
            now = self._clock()
            # With refresh_seen every cached row of the chunk ends up seen now (kept rows
            # are touched, answered ones rewritten): read them that way, ready to answer.
            cached = await self.store.get_rows(part, seen=now if refresh_seen else None)
            answering = asyncio.ensure_future(self._answer_chunk(part, cached, now, attempt))
            if answered is not None:
                try:
                    written += await self._write(answered, refresh_seen, results)
                except BaseException:
                    await _abandon(answering)
                    raise
            answered = await answering
        if answered is not None:
            written += await self._write(answered, refresh_seen, results)
        return written

    async def _write(
        self, chunk: _Chunk, refresh_seen: bool, results: dict[str, CacheRow] | None
    ) -> int:
        """Write one answered chunk in one short transaction; put its rows in `results`."""
        touch = chunk.kept if refresh_seen else []
        if chunk.answers or touch:
            async with self.store.db.transaction():
                await self.store.upsert_many(chunk.answers, chunk.now)
                await self.store.touch_many(touch, chunk.now)
        if results is not None:
            _collect(results, chunk)
        await asyncio.sleep(0)  # let other tasks in between chunks
        return len(chunk.answers)

    async def _answer_chunk(
        self, part: list[str], cached: dict[str, CacheRow], now: float, attempt: _Attempt
    ) -> _Chunk:
        stale = self._stale(cached, now)
        if stale:
            missing = [ip for ip in part if ip not in cached or ip in stale]
        elif cached:
            missing = [ip for ip in part if ip not in cached]
        else:
            missing = part
        answers = await self._ask_resolvers(missing, attempt) if missing else []
        if stale:
            answered = {info[0] for info in answers}
            kept = [ip for ip in cached if ip not in answered]
        else:
            kept = list(cached)
        return _Chunk(now, cached, answers, kept)

    def _stale(self, cached: dict[str, CacheRow], now: float) -> set[str]:
        """The rows that may not answer without asking again; exactly at its TTL a row
        is stale. One pass, no call per row: it runs over every cache hit."""
        negative_ttl = self._negative_ttl
        positive_ttl = math.inf if self._positive_ttl is None else self._positive_ttl
        return {
            ip for ip, row in cached.items()  # row[6]: negative, row[8]: last_resolved
            if now - row[8] >= (negative_ttl if row[6] else positive_ttl)
        }

    async def _ask_resolvers(self, ips: list[str], attempt: _Attempt) -> list[GeoFields]:
        """Answers worth caching for `ips`: MMDB's, then ip-api's for what MMDB lacks.

        MMDB negatives are final only when ip-api is not configured; otherwise ip-api's
        answer (positive or negative) replaces them, and an ip-api failure leaves them
        out (not cached) so they are asked again next time.
        """
        if self._mmdb is None:
            return await self._ask_ipapi(ips, attempt) if self._ipapi is not None else []
        found = await self._ask_mmdb(ips)
        if self._ipapi is None:
            return found
        known = [info for info in found if not info[6]]  # [6]: negative
        unknown = [info[0] for info in found if info[6]]
        return known + await self._ask_ipapi(unknown, attempt)

    async def _ask_mmdb(self, ips: list[str]) -> list[GeoFields]:
        """MMDB answers from a worker thread (about 30 ms per 5,000 addresses).

        The thread's future is shielded and remembered, so a cancelled caller cannot
        let close() unmap the files under a lookup still running.
        """
        assert self._mmdb is not None
        future = asyncio.ensure_future(asyncio.to_thread(self._mmdb.lookup_fields, ips))
        self._threads.add(future)
        future.add_done_callback(self._threads.discard)
        return await asyncio.shield(future)

    async def _ask_ipapi(self, ips: list[str], attempt: _Attempt) -> list[GeoFields]:
        """ip-api answers, one call per batch so other callers (a user's lookup) can get
        between a long warming's batches; stops at the first "try later"."""
        assert self._ipapi is not None
        answers: list[GeoFields] = []
        for start in range(0, len(ips), BATCH_LIMIT):
            if attempt.ipapi_failed:
                break
            batch = ips[start : start + BATCH_LIMIT]
            try:
                answers.extend(await self._ipapi.resolve(batch))
            except IpApiUnavailable as err:
                attempt.ipapi_failed = True
                answers.extend(err.partial)
                unanswered = len(ips) - start - len(err.partial)
                log.warning("geo ip-api unavailable, %d addresses left unresolved: %s",
                            unanswered, err)
        return answers


async def _abandon(task: asyncio.Future[_Chunk]) -> None:
    """Cancel a chunk's lookup that will not be written, and wait for it to end."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved, so that asyncio does not report it as lost


def _collect(results: dict[str, CacheRow], chunk: _Chunk) -> None:
    """Put the chunk's rows, as they now are in the table, into `results`."""
    cached, now = chunk.cached, chunk.now
    if len(chunk.kept) == len(cached):
        results.update(cached)
    else:
        for ip in chunk.kept:
            results[ip] = cached[ip]
    times = (now, now, now)
    if not cached:
        results.update({info[0]: (*info, *times) for info in chunk.answers})
        return
    for info in chunk.answers:
        old = cached.get(info[0])
        first = now if old is None else old[7]  # [7]: first_resolved
        results[info[0]] = (*info, first, now, now)
