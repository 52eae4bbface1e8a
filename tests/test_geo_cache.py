"""GeoCacheStore against a real migrated SQLite file: what each write sets, the bulk
last_seen refreshes, stats, and the query plans that keep big address sets cheap."""

from __future__ import annotations

import sqlite3

import pytest

from bangd.geo.model import GeoInfo
from bangd.store.db import Database
from bangd.store.geo import (
    SELECT_MANY_SEEN_SQL,
    SELECT_MANY_SQL,
    TOUCH_MANY_SQL,
    UPSERT_ROWS_SQL,
    UPSERT_RUNS_SQL,
    CachedGeo,
    CachedRows,
    GeoCacheStore,
)
from bangd.store.imports import APPLIED_MATCHES_SQL, AppliedMatch, ImportStore
from bangd.store.imports import TOUCH_LISTED_SQL as TOUCH_SOURCE_SQL

T0 = 1_700_000_000.0
GOOGLE = GeoInfo("8.8.8.8", "US", "United States", 15169, "Google LLC", "mmdb", False)
QUAD9 = GeoInfo("9.9.9.9", "CH", "Switzerland", 19281, "Quad9", "ip-api", False)


@pytest.fixture
def store(db: Database) -> GeoCacheStore:
    return GeoCacheStore(db)


async def last_seen(store: GeoCacheStore, ip: str) -> float | None:
    value = await store.db.fetchval("SELECT last_seen FROM geo_cache WHERE ip = ?", (ip,))
    return None if value is None else float(value)


async def add_applied(db: Database, jail: str, entry: str, source: str) -> None:
    await db.execute(
        "INSERT INTO applied (jail, entry, source, state, owned) VALUES (?, ?, ?, 'applied', 1)",
        (jail, entry, source),
    )


async def plan(db: Database, sql: str, params: tuple[object, ...]) -> str:
    rows = await db.fetchall("EXPLAIN QUERY PLAN " + sql, params)
    return " | ".join(row["detail"] for row in rows)


async def test_upsert_stores_the_answer_with_all_three_times_set_to_now(
    store: GeoCacheStore,
) -> None:
    await store.upsert(GOOGLE, T0)
    assert await store.get("8.8.8.8") == CachedGeo(GOOGLE, T0, T0, T0)


async def test_upsert_of_a_cached_address_keeps_first_resolved_and_refreshes_the_rest(
    store: GeoCacheStore,
) -> None:
    await store.upsert(GOOGLE, T0)
    moved = GeoInfo("8.8.8.8", "DE", "Germany", 15169, "Google LLC", "ip-api", False)
    await store.upsert(moved, T0 + 50)
    assert await store.get("8.8.8.8") == CachedGeo(moved, T0, T0 + 50, T0 + 50)


async def test_negative_upsert_stores_an_empty_answer_and_sets_last_seen(
    store: GeoCacheStore,
) -> None:
    await store.upsert_negative("10.1.2.3", "ip-api", T0)
    row = await store.get("10.1.2.3")
    assert row == CachedGeo(
        GeoInfo("10.1.2.3", None, None, None, None, "ip-api", True), T0, T0, T0
    )


async def test_negative_upsert_over_an_old_row_refreshes_last_seen(
    store: GeoCacheStore,
) -> None:
    await store.upsert(GOOGLE, T0)
    await store.upsert_negative("8.8.8.8", "mmdb", T0 + 9)
    row = await store.get("8.8.8.8")
    assert row is not None
    assert (row.info.negative, row.first_resolved, row.last_seen) == (True, T0, T0 + 9)


async def test_bulk_upsert_sets_last_seen_on_new_and_existing_rows(store: GeoCacheStore) -> None:
    await store.upsert(GOOGLE, T0)
    written = await store.upsert_many([GOOGLE, QUAD9], T0 + 100)
    assert written == 2
    assert await last_seen(store, "8.8.8.8") == T0 + 100
    assert await last_seen(store, "9.9.9.9") == T0 + 100


async def test_bulk_upsert_of_nothing_writes_nothing(store: GeoCacheStore) -> None:
    assert await store.upsert_many([], T0) == 0
    assert (await store.stats())["rows"] == 0


async def test_touch_many_refreshes_only_last_seen_of_the_cached_addresses(
    store: GeoCacheStore,
) -> None:
    await store.upsert_many([GOOGLE, QUAD9], T0)
    touched = await store.touch_many(["8.8.8.8", "1.1.1.1"], T0 + 7)
    assert touched == 1
    assert await store.get("8.8.8.8") == CachedGeo(GOOGLE, T0, T0, T0 + 7)
    assert await last_seen(store, "9.9.9.9") == T0
    assert await store.get("1.1.1.1") is None


async def test_touch_source_refreshes_the_addresses_that_source_lists_and_no_others(
    store: GeoCacheStore, db: Database
) -> None:
    await store.upsert_many([GOOGLE, QUAD9], T0)
    await add_applied(db, "bl", "8.8.8.8", "drop")
    await add_applied(db, "bl", "8.8.8.0/24", "drop")
    await add_applied(db, "bl", "9.9.9.9", "other")
    assert await ImportStore(db).mark_listed_seen("drop", T0 + 60) == 1
    assert await last_seen(store, "8.8.8.8") == T0 + 60
    assert await last_seen(store, "9.9.9.9") == T0


async def test_touch_source_searches_the_cache_by_primary_key(db: Database) -> None:
    detail = await plan(db, TOUCH_SOURCE_SQL, (T0, "drop"))
    assert "SEARCH geo_cache USING PRIMARY KEY (ip=?)" in detail
    assert "SEARCH applied USING COVERING INDEX applied_by_source (source=?)" in detail
    assert "SCAN geo_cache" not in detail


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        (SELECT_MANY_SQL, ('["8.8.8.8"]',)),
        (SELECT_MANY_SEEN_SQL, (T0, '["8.8.8.8"]')),
        (TOUCH_MANY_SQL, (T0, "[]")),
        (UPSERT_RUNS_SQL, (T0, "[]")),
        (UPSERT_ROWS_SQL, (T0, "[]")),
    ],
    ids=["read", "read-seen", "touch", "write-runs", "write-rows"],
)
async def test_address_set_statements_search_the_primary_key(
    db: Database, sql: str, params: tuple[object, ...]
) -> None:
    detail = await plan(db, sql, params)
    assert "SCAN geo_cache" not in detail
    if sql not in (UPSERT_RUNS_SQL, UPSERT_ROWS_SQL):  # an insert's conflict check is no step
        assert "SEARCH geo_cache USING PRIMARY KEY (ip=?)" in detail


async def test_get_runs_answers_rows_alike_as_one_run_of_plain_tuples(
    store: GeoCacheStore,
) -> None:
    other = GeoInfo("8.8.4.4", *GOOGLE[1:])
    await store.upsert_many([GOOGLE, other], T0)
    await store.upsert(QUAD9, T0 + 1)
    runs = await store.get_runs(["8.8.8.8", "8.8.4.4", "9.9.9.9", "1.1.1.1"])
    assert sorted((answer, sorted(run)) for answer, run in runs) == [
        ((*QUAD9[1:6], 0, T0 + 1, T0 + 1, T0 + 1), ["9.9.9.9"]),
        ((*GOOGLE[1:6], 0, T0, T0, T0), ["8.8.4.4", "8.8.8.8"]),
    ]
    assert all(type(answer) is tuple for answer, _ in runs)


async def test_get_runs_with_seen_answers_rows_as_they_will_be_once_touched(
    store: GeoCacheStore,
) -> None:
    await store.upsert(GOOGLE, T0)
    await store.upsert(QUAD9, T0 + 1)
    runs = await store.get_runs(["8.8.8.8", "9.9.9.9"], seen=T0 + 5)
    assert sorted(runs) == [
        ((*QUAD9[1:6], 0, T0 + 1, T0 + 1, T0 + 5), ["9.9.9.9"]),
        ((*GOOGLE[1:6], 0, T0, T0, T0 + 5), ["8.8.8.8"]),
    ]
    assert await last_seen(store, "8.8.8.8") == T0


async def test_rows_differing_only_in_a_time_are_separate_runs(store: GeoCacheStore) -> None:
    await store.upsert(GOOGLE, T0)
    await store.upsert(GeoInfo("8.8.4.4", *GOOGLE[1:]), T0 + 1)
    assert len(await store.get_runs(["8.8.8.8", "8.8.4.4"])) == 2
    assert len(await store.get_runs(["8.8.8.8", "8.8.4.4"], seen=T0 + 2)) == 2


def test_cached_rows_read_as_cached_geo() -> None:
    rows = CachedRows({"8.8.8.8": (*GOOGLE[1:6], 0, T0, T0 + 1, T0 + 2)})
    row = rows["8.8.8.8"]
    assert (row.info, row.first_resolved, row.last_resolved, row.last_seen) == (
        GOOGLE, T0, T0 + 1, T0 + 2
    )
    assert row.info.negative is False
    assert list(rows) == ["8.8.8.8"] and "8.8.8.8" in rows and "1.1.1.1" not in rows
    assert rows.get("1.1.1.1") is None
    assert "United States" in repr(rows)


async def test_bulk_upsert_keeps_every_value_exactly(store: GeoCacheStore) -> None:
    odd = GeoInfo("2001:db8::1", "X\"Y", "Zürich\n\t\\ \u2603 \U0001f600", 4294967295,
                  "", "ip-api", False)
    when = 1_700_000_000.123456789
    await store.upsert_many([odd, GOOGLE, QUAD9, GOOGLE], when)
    assert await store.get("2001:db8::1") == CachedGeo(odd, when, when, when)
    assert await store.get("8.8.8.8") == CachedGeo(GOOGLE, when, when, when)
    negative = await store.db.fetchval("SELECT typeof(negative) FROM geo_cache LIMIT 1")
    assert negative == "integer"


async def test_get_many_returns_only_cached_addresses(store: GeoCacheStore) -> None:
    await store.upsert_many([GOOGLE, QUAD9], T0)
    found = await store.get_many(["9.9.9.9", "1.1.1.1"])
    assert list(found) == ["9.9.9.9"]
    assert found["9.9.9.9"].info == QUAD9


async def test_applied_matches_finds_entries_in_every_jail(
    store: GeoCacheStore, db: Database
) -> None:
    await add_applied(db, "bl", "8.8.8.8", "drop")
    await add_applied(db, "bl2", "8.8.8.0/24", "edrop")
    await add_applied(db, "bl2", "9.9.9.9", "edrop")
    matches = await ImportStore(db).applied_matches(["8.8.8.8", "8.8.8.0/24", "1.1.1.1"])
    assert matches == [
        AppliedMatch("bl2", "8.8.8.0/24", "edrop"),
        AppliedMatch("bl", "8.8.8.8", "drop"),
    ]


async def test_applied_matches_searches_applied_by_key(db: Database) -> None:
    detail = await plan(db, APPLIED_MATCHES_SQL, ('["8.8.8.8"]',))
    assert "SEARCH applied USING PRIMARY KEY (jail=? AND entry=?)" in detail
    assert "SCAN applied" not in detail


async def test_stats_of_an_empty_cache(store: GeoCacheStore) -> None:
    assert await store.stats() == {
        "rows": 0, "negative": 0, "oldest_last_seen": None, "newest_last_seen": None,
        "by_origin": {},
    }


async def test_stats_count_rows_negative_rows_origins_and_the_last_seen_range(
    store: GeoCacheStore,
) -> None:
    await store.upsert(GOOGLE, T0 + 5)
    await store.upsert(QUAD9, T0 + 9)
    await store.upsert_negative("10.0.0.1", "ip-api", T0)
    assert await store.stats() == {
        "rows": 3, "negative": 1, "oldest_last_seen": T0, "newest_last_seen": T0 + 9,
        "by_origin": {"ip-api": 2, "mmdb": 1},
    }


async def test_negative_flag_is_checked_by_the_schema(db: Database) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        await db.execute(
            "INSERT INTO geo_cache (ip, origin, negative, first_resolved, last_resolved,"
            " last_seen) VALUES ('1.2.3.4', 'mmdb', 2, 0, 0, 0)"
        )


async def test_bulk_upsert_keeps_the_last_answer_for_an_address_given_twice(
    store: GeoCacheStore,
) -> None:
    moved = GeoInfo("8.8.8.8", "DE", "Germany", 15169, "Google LLC", "ip-api", False)
    assert await store.upsert_many([GOOGLE, QUAD9, moved], T0) == 2
    assert await store.get("8.8.8.8") == CachedGeo(moved, T0, T0, T0)


async def test_runs_of_one_and_of_many_addresses_are_stored_alike(store: GeoCacheStore) -> None:
    runs = [(GOOGLE[1:], ["8.8.4.4", "8.8.8.8"]), (QUAD9[1:], ["9.9.9.9"])]
    assert await store.upsert_runs(runs, T0) == 3
    assert await store.get_many(["8.8.8.8", "8.8.4.4", "9.9.9.9"]) == {
        "8.8.8.8": CachedGeo(GOOGLE, T0, T0, T0),
        "8.8.4.4": CachedGeo(GeoInfo("8.8.4.4", *GOOGLE[1:]), T0, T0, T0),
        "9.9.9.9": CachedGeo(QUAD9, T0, T0, T0),
    }
