"""Geolocation cache throughput and retention cost, measured side by side in one run.

1. Resolving: 100,000 addresses new to the cache (80% inside mapped networks of a
   10k-network Country database plus a 10k-network ASN database, 20% unmapped) go through
   GeoService.resolve (MMDB only, a real SQLite file: cache read, MMDB lookups in worker
   threads, bulk upserts), next to raw maxminddb Reader.get() on the same addresses (one
   get per database per address, the floor). Also: the same addresses again (all cache
   hits); 10,000 new addresses one per network (resolve's MMDB step reuses an answer for
   the addresses of one network; here it cannot); and, in a separate run, the worst
   event-loop lag seen while resolving. Rates are the best of 3 runs, as for raw.
2. Retention: 1,000,000 rows in random address order, half with last_seen older than the
   cutoff; purge() with its default chunk deletes the 500,000. Also: the worst wait of a
   concurrent writer and the worst event-loop lag during the purge.

Run: .venv/bin/python bench/bench_geo.py          (about a minute)
     .venv/bin/python bench/bench_geo.py --layouts (also compare geo_cache table layouts
                                                    with plain sqlite3, a few minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import maxminddb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bangd.geo.mmdb import MmdbResolver
from bangd.geo.model import GeoInfo
from bangd.services.geo import GeoService
from bangd.services.retention import DAY, purge
from bangd.store.db import Database
from bangd.store.geo import GeoCacheStore
from tests.mmdb_factory import (
    filler_address,
    filler_asn_nets,
    filler_country_nets,
    write_asn_db,
    write_country_db,
)

NETWORKS = 10_000
NEW_ADDRESSES = 100_000
ROUNDS = 3
PURGE_ROWS = 1_000_000
INSERT_BATCH = 50_000
NOW = 1_700_000_000.0
RETENTION_DAYS = 90

T = TypeVar("T")


def new_addresses(rng: random.Random) -> list[str]:
    """NEW_ADDRESSES distinct addresses: 80% in mapped /24s, 20% in 100.64.0.0/10."""
    mapped = NEW_ADDRESSES * 8 // 10
    chosen: set[str] = set()
    while len(chosen) < mapped:
        chosen.add(filler_address(rng.randrange(NETWORKS), rng.randrange(1, 255)))
    while len(chosen) < NEW_ADDRESSES:
        chosen.add(f"100.{rng.randrange(64, 128)}.{rng.randrange(256)}.{rng.randrange(1, 255)}")
    addresses = list(chosen)
    rng.shuffle(addresses)
    return addresses


def random_addresses(rng: random.Random, count: int) -> Iterator[str]:
    """`count` distinct public-looking IPv4 addresses in random order."""
    seen: set[int] = set()
    while len(seen) < count:
        number = rng.getrandbits(32)
        if number in seen or number >> 24 in (0, 10, 127) or number >> 24 >= 224:
            continue
        seen.add(number)
        yield f"{number >> 24}.{(number >> 16) & 255}.{(number >> 8) & 255}.{number & 255}"


async def timed_with_lag(work: Awaitable[T]) -> tuple[T, float, float]:
    """Run `work`; return its result, seconds taken and the worst event-loop lag."""
    loop = asyncio.get_running_loop()
    finished = asyncio.Event()
    worst = 0.0

    async def watch() -> None:
        nonlocal worst
        while not finished.is_set():
            before = loop.time()
            await asyncio.sleep(0.005)
            worst = max(worst, loop.time() - before - 0.005)

    watcher = asyncio.create_task(watch())
    started = time.perf_counter()
    try:
        result = await work
    finally:
        took = time.perf_counter() - started
        finished.set()
        await watcher
    return result, took, worst


def raw_time(paths: list[str], addresses: list[str], rounds: int = 1) -> float:
    """Seconds of bare Reader.get() on every database for `addresses` (best of `rounds`)."""
    readers = [maxminddb.open_database(path) for path in paths]
    best = float("inf")
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            for reader in readers:
                get = reader.get
                for ip in addresses:
                    get(ip)
            best = min(best, time.perf_counter() - started)
    finally:
        for reader in readers:
            reader.close()
    return best


def spread_addresses(rng: random.Random) -> list[str]:
    """One address in each mapped network: no two can share an MMDB answer."""
    addresses = [filler_address(index, rng.randrange(1, 255)) for index in range(NETWORKS)]
    rng.shuffle(addresses)
    return addresses


async def resolve_times(
    directory: Path, paths: tuple[str, str], addresses: list[str], tag: str,
) -> tuple[float, float, float]:
    """Best of ROUNDS: seconds to resolve `addresses`, all new (a fresh cache each round),
    then again, all cache hits; and of raw Reader.get() on both databases, measured in
    the same rounds, so that both sides see the same load on a shared machine."""
    miss = hit = raw = float("inf")
    for attempt in range(ROUNDS):
        raw = min(raw, raw_time(list(paths), addresses))
        db = await Database.open(str(directory / f"resolve-{tag}-{attempt}.db"))
        reads = await db.reader()  # as the daemon's geo cache has it
        service = GeoService(
            GeoCacheStore(db, reads), mmdb=MmdbResolver(*paths), ipapi=None,
            negative_ttl=DAY, clock=time.time,
        )
        try:
            started = time.perf_counter()
            found = await service.resolve(addresses)
            miss = min(miss, time.perf_counter() - started)
            assert len(found) == len(addresses)
            started = time.perf_counter()
            await service.resolve(addresses)
            hit = min(hit, time.perf_counter() - started)
        finally:
            await service.close()
            await reads.close()
            await db.close()
    return miss, hit, raw


async def loop_lags(directory: Path, paths: tuple[str, str], addresses: list[str]) -> tuple[
    float, float
]:
    """The worst event-loop lag while resolving `addresses` new, then again (hits). Kept
    out of the rates: the watcher wakes every 5 ms and takes the interpreter lock from
    the worker threads each time."""
    db = await Database.open(str(directory / "resolve-lag.db"))
    service = GeoService(
        GeoCacheStore(db), mmdb=MmdbResolver(*paths), ipapi=None,
        negative_ttl=DAY, clock=time.time,
    )
    try:
        _, _, miss_lag = await timed_with_lag(service.resolve(addresses))
        _, _, hit_lag = await timed_with_lag(service.resolve(addresses))
    finally:
        await service.close()
        await db.close()
    return miss_lag, hit_lag


async def bench_resolve(directory: Path, rng: random.Random) -> None:
    started = time.perf_counter()
    country = str(write_country_db(directory / "country.mmdb", filler_country_nets(NETWORKS)))
    asn = str(write_asn_db(directory / "asn.mmdb", filler_asn_nets(NETWORKS)))
    print(f"wrote 2 MMDBs of {NETWORKS:,} networks in {time.perf_counter() - started:.1f} s")
    addresses = new_addresses(rng)
    spread = spread_addresses(rng)
    paths = (country, asn)

    took, again_took, raw = await resolve_times(directory, paths, addresses, "new")
    spread_took, _, raw_spread = await resolve_times(directory, paths, spread, "spread")
    lag, again_lag = await loop_lags(directory, paths, addresses)
    miss_rate = NEW_ADDRESSES / took
    hit_rate = NEW_ADDRESSES / again_took
    raw_both = NEW_ADDRESSES / raw
    raw_country = NEW_ADDRESSES / raw_time([country], addresses, ROUNDS)
    spread_rate = len(spread) / spread_took
    raw_spread_rate = len(spread) / raw_spread
    print(f"GeoService.resolve, {NEW_ADDRESSES:,} new:    {miss_rate:>10,.0f} addresses/s "
          f"({took:.2f} s)")
    print(f"GeoService.resolve, same again (hits): {hit_rate:>10,.0f} addresses/s "
          f"({again_took:.2f} s)")
    print(f"raw Reader.get(), country + ASN:       {raw_both:>10,.0f} addresses/s")
    print(f"raw Reader.get(), country only:        {raw_country:>10,.0f} addresses/s")
    print(f"misses / raw (country + ASN): {miss_rate / raw_both:.2f}   (target >= 0.5)")
    print(f"hits / misses:                {hit_rate / miss_rate:.2f}   (target >= 1.0)")
    print(f"one new address per network ({len(spread):,}): resolve {spread_rate:,.0f}/s, "
          f"raw {raw_spread_rate:,.0f}/s, misses / raw {spread_rate / raw_spread_rate:.2f}")
    print(f"worst event-loop lag, a separate run: {lag * 1000:.0f} ms (new), "
          f"{again_lag * 1000:.0f} ms (hits)")


async def fill_for_purge(store: GeoCacheStore, rng: random.Random) -> None:
    """PURGE_ROWS rows; a random half seen before the cutoff, the rest yesterday."""
    old_seen = NOW - (RETENTION_DAYS + 10) * DAY
    recent_seen = NOW - DAY
    batch_old: list[GeoInfo] = []
    batch_recent: list[GeoInfo] = []
    for ip in random_addresses(rng, PURGE_ROWS):
        info = GeoInfo(ip, "DE", "Germany", 64512, "Filler", "mmdb", False)
        (batch_old if rng.random() < 0.5 else batch_recent).append(info)
        if len(batch_old) + len(batch_recent) >= INSERT_BATCH:
            await store.upsert_many(batch_old, old_seen)
            await store.upsert_many(batch_recent, recent_seen)
            batch_old, batch_recent = [], []
    await store.upsert_many(batch_old, old_seen)
    await store.upsert_many(batch_recent, recent_seen)


async def bench_purge(directory: Path, rng: random.Random) -> None:
    db = await Database.open(str(directory / "purge.db"))
    store = GeoCacheStore(db)
    try:
        started = time.perf_counter()
        await fill_for_purge(store, rng)
        filled = time.perf_counter() - started
        cutoff = NOW - RETENTION_DAYS * DAY
        old = await db.fetchval("SELECT count(*) FROM geo_cache WHERE last_seen < ?", (cutoff,))
        print(f"inserted {PURGE_ROWS:,} rows ({old:,} old) in {filled:.1f} s "
              f"({PURGE_ROWS / filled:,.0f} rows/s)")

        writer_waits: list[float] = []
        stop = asyncio.Event()

        async def other_writer() -> None:
            while not stop.is_set():
                before = time.perf_counter()
                await db.execute("INSERT OR REPLACE INTO job_state (name, failures) VALUES "
                                 "('bench-writer', 0)")
                writer_waits.append(time.perf_counter() - before)
                await asyncio.sleep(0.01)

        writer = asyncio.create_task(other_writer())

        async def purge_now() -> int:
            result = await purge(store, retention_days=RETENTION_DAYS, clock=lambda: NOW)
            return result.deleted

        try:
            deleted, took, lag = await timed_with_lag(purge_now())
        finally:
            stop.set()
            await writer
        left = await db.fetchval("SELECT count(*) FROM geo_cache")
    finally:
        await db.close()
    print(f"purge(): deleted {deleted:,} of {PURGE_ROWS:,} rows in {took:.2f} s "
          f"({deleted / took:,.0f} rows/s), {left:,} left; worst loop lag {lag * 1000:.0f} ms, "
          f"worst concurrent write {max(writer_waits) * 1000:.0f} ms "
          f"over {len(writer_waits)} writes")


# -- layout comparison (plain sqlite3, outside bangd's code) --------------------------------

_TABLE = (
    "CREATE TABLE geo_cache (ip TEXT PRIMARY KEY, country_code TEXT, country_name TEXT,"
    " asn INTEGER, as_org TEXT, origin TEXT NOT NULL, negative INTEGER NOT NULL,"
    " first_resolved REAL NOT NULL, last_resolved REAL NOT NULL, last_seen REAL NOT NULL)"
)
_UPSERT = (
    "INSERT INTO geo_cache VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(ip) DO UPDATE SET"
    " last_resolved = excluded.last_resolved, last_seen = excluded.last_seen"
)


def _layout_row(ip: str, seen: float) -> tuple[object, ...]:
    return (ip, "DE", "Germany", 64512, "Org", "mmdb", 0, NOW, NOW, seen)


def _purge_layout(conn: sqlite3.Connection, rowid: bool, index: bool, cutoff: float) -> int:
    """Delete old rows 10,000 at a time the way each layout does it best."""
    key = "rowid" if rowid else "ip"
    deleted = 0
    after: object = 0 if rowid else ""
    while True:
        conn.execute("BEGIN IMMEDIATE")
        if index:
            count = conn.execute(
                "DELETE FROM geo_cache WHERE ip IN "
                "(SELECT ip FROM geo_cache WHERE last_seen < ? LIMIT 10000)", (cutoff,)
            ).rowcount
        else:
            last, count = conn.execute(
                f"SELECT max({key}), count(*) FROM (SELECT {key} FROM geo_cache WHERE {key} > ?"
                f" AND last_seen < ? ORDER BY {key} LIMIT 10000)", (after, cutoff)
            ).fetchone()
            if count:
                conn.execute(f"DELETE FROM geo_cache WHERE {key} > ? AND {key} <= ? AND "
                             "last_seen < ?", (after, last, cutoff))
                after = last
        conn.execute("COMMIT")
        deleted += count
        if count == 0:
            return deleted


def _timed(run: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = run()
    return result, time.perf_counter() - started


def compare_layouts(directory: Path, rng: random.Random) -> None:
    addresses = list(random_addresses(rng, PURGE_ROWS + NEW_ADDRESSES))
    base, extra = addresses[:PURGE_ROWS], addresses[PURGE_ROWS:]
    cutoff = NOW - RETENTION_DAYS * DAY
    old_seen = cutoff - DAY
    for rowid in (False, True):
        for index in (False, True):
            path = directory / f"layout-{rowid}-{index}.db"
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_TABLE + ("" if rowid else " WITHOUT ROWID"))
            if index:
                conn.execute("CREATE INDEX geo_cache_last_seen ON geo_cache (last_seen)")
            rows = [_layout_row(ip, old_seen if i % 2 else NOW) for i, ip in enumerate(base)]
            conn.execute("BEGIN")
            conn.executemany(_UPSERT, rows)
            conn.execute("COMMIT")

            def add_extra(conn: sqlite3.Connection = conn) -> None:
                for start in range(0, len(extra), 5000):
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany(
                        _UPSERT, [_layout_row(ip, NOW) for ip in extra[start : start + 5000]]
                    )
                    conn.execute("COMMIT")

            _, add_took = _timed(add_extra)
            _, count_took = _timed(lambda conn=conn: conn.execute(  # type: ignore[misc]
                "SELECT count(*) FROM geo_cache WHERE last_seen < ?", (cutoff,)).fetchone())
            deleted, purge_took = _timed(
                lambda conn=conn, rowid=rowid, index=index: _purge_layout(  # type: ignore[misc]
                    conn, rowid, index, cutoff)
            )
            conn.close()
            size = os.path.getsize(path) / 2**20
            name = ("rowid" if rowid else "WITHOUT ROWID") + (" + last_seen index" if index else "")
            print(f"  {name:<35} {NEW_ADDRESSES / add_took:>8,.0f} new rows/s into 1M, "
                  f"count old {count_took:.2f} s, purge {deleted:,} in {purge_took:.2f} s, "
                  f"{size:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", action="store_true",
                        help="also compare geo_cache table layouts with plain sqlite3")
    args = parser.parse_args()
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        asyncio.run(bench_resolve(directory, rng))
        asyncio.run(bench_purge(directory, rng))
        if args.layouts:
            print("geo_cache layouts (1M rows, half old; 100k new rows added in 5k batches):")
            compare_layouts(directory, rng)


if __name__ == "__main__":
    main()
