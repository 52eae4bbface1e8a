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
from bangd.geo.model import GeoInfo, Run
from bangd.store.geo import CachedAnswer, CachedRows, CachedRun, GeoCacheStore

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
    """One chunk, answered: the answers to write (`runs`), and the cached rows that stay
    as they are (`kept`: fresh hits, and stale rows nobody could answer now)."""

    now: float
    cached: dict[str, CachedAnswer]
    runs: list[Run]
    kept: list[str]

    @property
    def written(self) -> int:
        return sum(len(run) for _, run in self.runs)


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
        self._threads: set[asyncio.Future[list[Run]]] = set()
        self._closed = False

    @property
    def has_resolvers(self) -> bool:
        """False when neither an MMDB nor ip-api is configured: only the cache answers."""
        return self._mmdb is not None or self._ipapi is not None

    @property
    def mmdb_corrupt(self) -> bool:
        return self._mmdb is not None and self._mmdb.corrupt

    async def resolve(self, ips: Sequence[str], *, refresh_seen: bool = True) -> CachedRows:
        """What is known about each of `ips`, as now cached, keyed by address (a
        read-only mapping whose CachedGeo values are made when read).

        `ips` are plain addresses in the form lists are stored in (as bangd's parser and
        `lookup` write them); no CIDR. Cached hits get last_seen = now unless
        `refresh_seen` is False; every row written gets it anyway. Addresses that no
        resolver could answer now (ip-api unavailable, none configured) are left out,
        unless an older row exists: that row is answered and kept. Not after close().
        """
        if self._closed:
            raise RuntimeError("GeoResolver.resolve called after close()")
        results: dict[str, CachedAnswer] = {}
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
        self, ips: Sequence[str], *, refresh_seen: bool, results: dict[str, CachedAnswer] | None
    ) -> int:
        """Resolve chunk by chunk; return how many rows were written.

        The addresses go in key order, so that each chunk is one range of the cache's
        primary key: its reads and writes touch a few neighbouring pages, not pages all
        over the table (in random order each chunk of 5,000 rewrote most of a 100k-row
        table: 0.75 s against 0.17 s to refresh last_seen of 100k rows).

        Chunks overlap by one: the next chunk is read (on the store's read connection)
        and looked up in a worker thread while SQLite writes this one. The write is one
        statement per kind, and SQLite does not hold the interpreter lock while it runs
        one, so they really run at once: for cache hits, reading a chunk and refreshing
        the last one's last_seen took 0.23 s and 0.18 s of 0.51 s for 100k, one after
        the other. Chunks are disjoint, so the read never needs the write before it. A
        lookup nobody will write (the write failed) is abandoned.
        """
        unique = sorted(set(ips))
        attempt = _Attempt()
        written = 0
        answered: _Chunk | None = None  # looked up, not written yet
        for start in range(0, len(unique), self._chunk):
            if self._closed:  # a reload/stop closed the resolvers: start nothing new
                raise GeoError("the geo service was closed (bangd is reloading or stopping)")
            part = unique[start : start + self._chunk]
            answering = asyncio.ensure_future(self._read_and_answer(part, refresh_seen, attempt))
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
        self, chunk: _Chunk, refresh_seen: bool, results: dict[str, CachedAnswer] | None
    ) -> int:
        """Write one answered chunk in one short transaction; put its rows in `results`.

        A chunk with one kind of write (all new, or all cache hits) makes it a single
        statement, which commits by itself: BEGIN and COMMIT would each be one more trip
        to the database thread.
        """
        touch = chunk.kept if refresh_seen else []
        if chunk.runs and touch:
            async with self.store.db.transaction():
                await self.store.upsert_runs(chunk.runs, chunk.now)
                await self.store.touch_many(touch, chunk.now)
        elif chunk.runs:
            await self.store.upsert_runs(chunk.runs, chunk.now)
        elif touch:
            await self.store.touch_many(touch, chunk.now)
        if results is not None:
            _collect(results, chunk)
        await asyncio.sleep(0)  # let other tasks in between chunks
        return chunk.written

    async def _read_and_answer(
        self, part: list[str], refresh_seen: bool, attempt: _Attempt
    ) -> _Chunk:
        now = self._clock()
        # With refresh_seen every cached row of the chunk ends up seen now (kept rows are
        # touched, answered ones rewritten): read them that way, ready to answer.
        cached = await self.store.get_runs(part, seen=now if refresh_seen else None)
        return await self._answer_chunk(part, cached, now, attempt)

    async def _answer_chunk(
        self, part: list[str], cached_runs: list[CachedRun], now: float, attempt: _Attempt
    ) -> _Chunk:
        cached: dict[str, CachedAnswer] = {}
        stale: set[str] = set()
        negative_ttl = self._negative_ttl
        positive_ttl = math.inf if self._positive_ttl is None else self._positive_ttl
        for answer, run in cached_runs:
            cached.update(dict.fromkeys(run, answer))
            # May the row answer without asking again? Exactly at its TTL it may not.
            # answer[5]: negative, answer[7]: last_resolved
            if now - answer[7] >= (negative_ttl if answer[5] else positive_ttl):
                stale.update(run)
        if stale:
            missing = [ip for ip in part if ip not in cached or ip in stale]
        elif len(cached) == len(part):  # all fresh hits (cached holds only part's keys)
            missing = []
        elif cached:
            missing = [ip for ip in part if ip not in cached]
        else:
            missing = part
        runs = await self._ask_resolvers(missing, attempt) if missing else []
        if stale:
            answered = {ip for _, run in runs for ip in run}
            kept = [ip for ip in cached if ip not in answered]
        else:
            kept = list(cached)
        return _Chunk(now, cached, runs, kept)

    async def _ask_resolvers(self, ips: list[str], attempt: _Attempt) -> list[Run]:
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
        known = [run for run in found if not run[0][5]]  # [5]: negative
        unknown = [ip for answer, run in found if answer[5] for ip in run]
        return known + await self._ask_ipapi(unknown, attempt)

    async def _ask_mmdb(self, ips: list[str]) -> list[Run]:
        """MMDB answers from a worker thread (about 30 ms per 5,000 addresses).

        The thread's future is shielded and remembered, so a cancelled caller cannot
        let close() unmap the files under a lookup still running.
        """
        assert self._mmdb is not None
        future = asyncio.ensure_future(asyncio.to_thread(self._mmdb.lookup_runs, ips))
        self._threads.add(future)
        future.add_done_callback(self._threads.discard)
        return await asyncio.shield(future)

    async def _ask_ipapi(self, ips: list[str], attempt: _Attempt) -> list[Run]:
        """ip-api answers, one call per batch so other callers (a user's lookup) can get
        between a long warming's batches; stops at the first "try later"."""
        assert self._ipapi is not None
        answers: list[GeoInfo] = []
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
        return [(info[1:], [info[0]]) for info in answers]


async def _abandon(task: asyncio.Future[_Chunk]) -> None:
    """Cancel a chunk's lookup that will not be written, and wait for it to end."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved, so that asyncio does not report it as lost


def _collect(results: dict[str, CachedAnswer], chunk: _Chunk) -> None:
    """Put the chunk's rows, as they now are in the table, into `results`."""
    cached, now = chunk.cached, chunk.now
    if len(chunk.kept) == len(cached):
        results.update(cached)
    else:
        for ip in chunk.kept:
            results[ip] = cached[ip]
    for answer, run in chunk.runs:
        fresh = (*answer, now, now, now)
        if not cached:
            results.update(dict.fromkeys(run, fresh))
            continue
        for ip in run:
            old = cached.get(ip)
            results[ip] = fresh if old is None else (*answer, old[6], now, now)  # [6]: first
