"""Retention of the geolocation cache: which rows go, the exact cutoff, chunking, dry runs,
logging, and addresses coming back after they were purged."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import pytest

from bangd.geo import MmdbResolver
from bangd.geo.model import GeoInfo
from bangd.services.geo import GeoService
from bangd.services.retention import DAY, purge, retention_cutoff, run_retention
from bangd.store.db import Database
from bangd.store.geo import GeoCacheStore
from tests.mmdb_factory import CountryNet, write_country_db

NOW = 1_700_000_000.0
RETENTION_DAYS = 90
CUTOFF = NOW - RETENTION_DAYS * DAY
OLD = CUTOFF - 1.0
RECENT = NOW - DAY


@dataclass
class Clock:
    now: float = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(db: Database) -> GeoCacheStore:
    return GeoCacheStore(db)


@pytest.fixture(scope="module")
def country_mmdb(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("retention-mmdb") / "country.mmdb"
    return str(write_country_db(path, [CountryNet("8.8.8.0/24", "US", "United States")]))


def positive(ip: str) -> GeoInfo:
    return GeoInfo(ip, "US", "United States", None, None, "mmdb", False)


async def seen_at(store: GeoCacheStore, when: float, *ips: str) -> None:
    await store.upsert_many([positive(ip) for ip in ips], when)


async def cached_ips(store: GeoCacheStore) -> list[str]:
    return list(await store.db.fetchcolumn("SELECT ip FROM geo_cache ORDER BY ip"))


async def run_purge(store: GeoCacheStore, **kw: object) -> int:
    result = await purge(store, retention_days=RETENTION_DAYS, clock=Clock(), **kw)  # type: ignore[arg-type]
    return result.deleted


def many(count: int, second_octet: int) -> list[str]:
    return [f"10.{second_octet}.{index // 250}.{index % 250 + 1}" for index in range(count)]


async def test_rows_unseen_for_longer_than_retention_go_and_recent_ones_stay(
    store: GeoCacheStore,
) -> None:
    await seen_at(store, OLD, "192.0.2.1", "192.0.2.2")
    await seen_at(store, RECENT, "192.0.2.3")
    assert await run_purge(store) == 2
    assert await cached_ips(store) == ["192.0.2.3"]


async def test_purge_of_an_empty_cache_deletes_nothing(store: GeoCacheStore) -> None:
    result = await purge(store, retention_days=RETENTION_DAYS, clock=Clock())
    assert (result.deleted, result.chunks) == (0, 0)


async def test_row_seen_exactly_at_the_cutoff_is_kept_and_one_just_older_goes(
    store: GeoCacheStore,
) -> None:
    await seen_at(store, CUTOFF, "192.0.2.1")
    await seen_at(store, CUTOFF - 0.001, "192.0.2.2")
    assert await run_purge(store) == 1
    assert await cached_ips(store) == ["192.0.2.1"]


async def test_cutoff_is_retention_days_before_now() -> None:
    assert retention_cutoff(NOW, 90) == NOW - 90 * 86400


async def test_negative_rows_go_by_the_same_rule(store: GeoCacheStore) -> None:
    await store.upsert_negative("10.0.0.1", "ip-api", OLD)
    await store.upsert_negative("10.0.0.2", "mmdb", RECENT)
    assert await run_purge(store) == 1
    assert await cached_ips(store) == ["10.0.0.2"]


async def test_small_chunks_delete_every_old_row_and_keep_every_recent_one(
    store: GeoCacheStore,
) -> None:
    old, recent = many(250, 1), many(250, 2)
    interleaved = [ip for pair in zip(old, recent, strict=True) for ip in pair]
    await seen_at(store, OLD, *old)
    await seen_at(store, RECENT, *recent)
    assert sorted(interleaved) == await cached_ips(store)
    result = await purge(store, retention_days=RETENTION_DAYS, clock=Clock(), chunk=7)
    assert (result.deleted, result.chunks) == (250, 36)
    assert await cached_ips(store) == sorted(recent)


async def test_dry_run_counts_without_deleting(store: GeoCacheStore) -> None:
    await seen_at(store, OLD, *many(30, 1))
    await seen_at(store, RECENT, "192.0.2.9")
    result = await purge(store, retention_days=RETENTION_DAYS, clock=Clock(), chunk=4,
                         dry_run=True)
    assert (result.deleted, result.dry_run) == (30, True)
    assert len(await cached_ips(store)) == 31


async def test_other_writers_get_the_database_between_chunks(
    store: GeoCacheStore, db: Database
) -> None:
    await seen_at(store, OLD, *many(2000, 1))
    purging = asyncio.create_task(
        purge(store, retention_days=RETENTION_DAYS, clock=Clock(), chunk=10)
    )
    await asyncio.sleep(0)  # let the purge take its first chunk
    await db.execute("INSERT INTO job_state (name, failures) VALUES ('other-writer', 0)")
    assert not purging.done(), "a writer had to wait for the whole purge"
    assert (await purging).deleted == 2000


async def test_result_is_job_shaped(store: GeoCacheStore) -> None:
    await seen_at(store, OLD, "192.0.2.1")
    result = await run_retention(store, retention_days=RETENTION_DAYS, clock=Clock())
    assert result == {"deleted": 1, "cutoff": CUTOFF, "took": result["took"], "chunks": 1,
                      "dry_run": False}


async def test_deletions_are_logged_at_info_with_the_count(
    store: GeoCacheStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bangd.services.retention")
    await seen_at(store, OLD, "192.0.2.1", "192.0.2.2")
    await run_purge(store)
    [record] = caplog.records
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith("retention deleted=2 cutoff=2023-08-16T22:13:20Z took=")


async def test_a_purge_deleting_nothing_is_logged_at_debug(
    store: GeoCacheStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bangd.services.retention")
    await run_purge(store)
    [record] = caplog.records
    assert record.levelno == logging.DEBUG
    assert record.getMessage().startswith("retention deleted=0 ")


async def test_purged_address_seen_again_is_resolved_again(
    store: GeoCacheStore, country_mmdb: str
) -> None:
    clock = Clock(OLD)
    service = GeoService(
        store, mmdb=MmdbResolver(country_mmdb, None), ipapi=None, negative_ttl=DAY, clock=clock
    )
    try:
        await service.resolve(["8.8.8.8"])
        assert await run_purge(store) == 1
        clock.now = NOW
        found = await service.resolve(["8.8.8.8"])
    finally:
        await service.close()
    row = found["8.8.8.8"]
    assert (row.info.country_code, row.first_resolved, row.last_seen) == ("US", NOW, NOW)
    assert await cached_ips(store) == ["8.8.8.8"]


async def test_rows_refreshed_by_an_unchanged_import_survive_retention(
    store: GeoCacheStore, db: Database
) -> None:
    await seen_at(store, OLD, "192.0.2.1", "192.0.2.2")
    await db.execute(
        "INSERT INTO applied (jail, entry, source, state, owned) "
        "VALUES ('bl', '192.0.2.1', 'drop', 'applied', 1)"
    )
    service = GeoService(store, mmdb=None, ipapi=None, negative_ttl=DAY, clock=Clock())
    await service.on_unchanged("drop")
    assert await run_purge(store) == 1
    assert await cached_ips(store) == ["192.0.2.1"]
