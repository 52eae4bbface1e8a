"""Geolocation for bangd: the cache in front of the resolvers, warming after imports, and
what `bangctl lookup` / `bangctl cache stats` show.

The resolver chain, per address:

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
`last_seen`, as does meeting a cached address again (resolve with refresh_seen, lookup,
an import of a source that lists it).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from bangd.config import GeoConfig, IpApiConfig
from bangd.errors import GeoError, InvalidRequest
from bangd.geo.ipapi import BATCH_LIMIT, IpApiClient, IpApiUnavailable
from bangd.geo.mmdb import MmdbResolver
from bangd.geo.model import GeoFields
from bangd.services.lookup import (
    BANNED_IN_BUDGET,
    MAX_LOOKUP,
    BannedIn,
    Listings,
    ask_banned_in,
    covering_map,
    geo_reply,
    normalise_address,
)
from bangd.store.geo import CachedRows, CacheRow, GeoCacheStore
from bangd.store.imports import AppliedMatch, ImportStore

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


class GeoService:
    """The resolver chain over the cache; one instance per daemon.

    The service owns the resolvers it is given: `close()` cancels background warming and
    closes the MMDB files. `chunk` bounds how many addresses one step handles, so that
    the event loop, the write lock and the memory of one step stay small.
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
        listings: Listings | None = None,
    ) -> None:
        """`positive_ttl` None keeps positive rows fresh forever. `listings` defaults to
        the import ledger in the same database."""
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        if negative_ttl < 0 or (positive_ttl is not None and positive_ttl < 0):
            raise ValueError("negative_ttl and positive_ttl must be >= 0")
        self.store = store
        self._ledger = listings if listings is not None else ImportStore(store.db)
        self._mmdb = mmdb
        self._ipapi = ipapi
        self._negative_ttl = negative_ttl
        self._positive_ttl = positive_ttl
        self._clock = clock
        self._chunk = chunk
        self._tasks: set[asyncio.Task[None]] = set()
        self._threads: set[asyncio.Future[list[GeoFields]]] = set()
        self._warm_lock = asyncio.Lock()
        self._closed = False

    @property
    def has_resolvers(self) -> bool:
        """False when neither an MMDB nor ip-api is configured: only the cache answers."""
        return self._mmdb is not None or self._ipapi is not None

    @property
    def mmdb_corrupt(self) -> bool:
        return self._mmdb is not None and self._mmdb.corrupt

    # -- resolving -------------------------------------------------------------------------

    async def resolve(self, ips: Sequence[str], *, refresh_seen: bool = True) -> CachedRows:
        """What is known about each of `ips`, as now cached, keyed by address.

        `ips` are plain addresses in the form lists are stored in (as bangd's parser and
        `lookup` write them); no CIDR. Cached hits get last_seen = now unless
        `refresh_seen` is False; every row written gets it anyway. Addresses that no
        resolver could answer now (ip-api unavailable, none configured) are left out,
        unless an older row exists: that row is answered and kept. Not after close().
        """
        if self._closed:
            raise RuntimeError("GeoService.resolve called after close()")
        results: dict[str, CacheRow] = {}
        await self._resolve(ips, refresh_seen=refresh_seen, results=results)
        return CachedRows(results)

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

    # -- importer hooks --------------------------------------------------------------------

    async def on_banned(self, source: str, addresses: Sequence[str]) -> None:
        """Importer hook after a completed import: returns at once; in the background,
        refreshes last_seen of everything `source` lists and resolves the new single
        addresses (CIDR entries are never resolved)."""
        if self._closed:
            return
        task = asyncio.create_task(
            self._after_import(source, list(addresses)), name=f"geo-warm:{source}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def on_unchanged(self, source: str) -> None:
        """Importer hook for an unchanged import: one bulk last_seen refresh, no lookups."""
        await self._refresh_source(source)

    async def warm(self, source: str, addresses: list[str]) -> None:
        """Resolve `addresses` (single addresses; CIDRs are skipped) into the cache.

        Never raises (except on cancellation): warming is a courtesy to later lookups,
        and an import must not fail because of it. One warming runs at a time.
        """
        singles = [entry for entry in addresses if "/" not in entry]
        if not singles or not self.has_resolvers:
            return
        try:
            async with self._warm_lock:
                started = time.monotonic()
                written = await self._resolve(singles, refresh_seen=True, results=None)
            log.info("geo warm source=%s addresses=%d written=%d took=%.2fs",
                     source, len(singles), written, time.monotonic() - started)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("geo warm source=%s failed; addresses resolve on lookup", source)

    async def _after_import(self, source: str, addresses: list[str]) -> None:
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
        """Cancel background warming, wait for MMDB threads, close the MMDB; idempotent."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._threads:
            await asyncio.wait(list(self._threads), timeout=CLOSE_GRACE)
        if self._mmdb is not None:
            self._mmdb.close()

    # -- control commands ------------------------------------------------------------------

    async def lookup(
        self, ips: Sequence[str], *, banned_in: BannedIn | None = None
    ) -> list[dict[str, Any]]:
        """`bangctl lookup`: one JSON-ready dict per distinct address, in the order given.

        Raises InvalidRequest (a ValueError) naming the first argument that is not an IP
        address. Looking an address up counts as seeing it (last_seen is refreshed).
        `sources` lists the applied entries that are the address itself or a network containing it.
        `banned_in` (the daemon asks fail2ban) is called once per address; when it fails,
        `banned_in` is None and `banned_in_error` says why.
        """
        if not ips:
            raise InvalidRequest("lookup needs at least one IP address")
        if len(ips) > MAX_LOOKUP:
            raise InvalidRequest(f"at most {MAX_LOOKUP} addresses per lookup, got {len(ips)}")
        addresses = list(dict.fromkeys(normalise_address(ip) for ip in ips))
        resolved = await self.resolve(addresses)
        started = time.monotonic()
        listings = await self._listings(addresses)
        now = self._clock()
        replies = []
        for address in addresses:
            reply = geo_reply(address, resolved.get(address), now)
            reply["sources"] = [
                {"source": m.source, "jail": m.jail, "entry": m.entry}
                for m in listings.get(address, [])
            ]
            if time.monotonic() - started < BANNED_IN_BUDGET:
                reply.update(await ask_banned_in(banned_in, address))
            else:
                reply.update({"banned_in": None, "jail_errors": {},
                              "banned_in_error": "not asked: this lookup took too long"})
            replies.append(reply)
        return replies

    async def _listings(self, addresses: list[str]) -> dict[str, list[AppliedMatch]]:
        """Applied entries equal to each address or to a network containing it.

        Lists store networks with host bits cleared, so the networks containing an
        address are exactly its 33 (IPv4) or 129 (IPv6) prefixes: key searches, no scan.
        """
        covering = await asyncio.to_thread(covering_map, addresses)
        found: dict[str, list[AppliedMatch]] = {}
        for match in await self._ledger.applied_matches(list(covering)):
            for address in covering[match.entry]:
                found.setdefault(address, []).append(match)
        return found

    async def stats(self) -> dict[str, Any]:
        """`bangctl cache stats`: rows, negative rows, last_seen range, rows per origin."""
        return await self.store.stats()


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


def make_ipapi(
    ip_api: IpApiConfig, session: aiohttp.ClientSession | None
) -> IpApiClient | None:
    """The ip-api client `geo.ip_api` asks for, or None. Keep it for the daemon's life:
    it carries the X-Rl/X-Ttl budget, which a fresh client would not know was spent."""
    if not ip_api.enabled:
        return None
    if session is None:
        raise ValueError("geo.ip_api.enabled needs an aiohttp session")
    return IpApiClient(session, ip_api.url, timeout=ip_api.timeout)


def build_geo_service(
    geo_config: GeoConfig,
    store: GeoCacheStore,
    ipapi: IpApiClient | None,
    clock: Callable[[], float] = time.time,
) -> GeoService:
    """The GeoService `geo:` asks for. Opens the MMDB files now, so a missing or wrong
    file fails at once (GeoError naming geo.mmdb / geo.asn_mmdb and the file)."""
    mmdb = None
    if geo_config.mmdb is not None or geo_config.asn_mmdb is not None:
        mmdb = MmdbResolver(geo_config.mmdb, geo_config.asn_mmdb)
    return GeoService(
        store, mmdb=mmdb, ipapi=ipapi, negative_ttl=geo_config.negative_ttl, clock=clock
    )
