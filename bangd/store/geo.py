"""Queries over the geolocation cache (migration 0003).

Address sets travel into SQLite as one JSON array parameter (`json_each`) rather than as
`IN (?, ?, ...)` lists: one statement per chunk whatever its size, no parameter limit,
and SQLite still searches the primary key for each address (see the query-plan tests).

Every statement that writes a row sets its `last_seen`: retention trusts that column to
mean "bangd met this address recently", so no write path may leave it behind.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from bangd.geo.model import GeoInfo
from bangd.store.db import Database

UPSERT_SQL = (
    "INSERT INTO geo_cache (ip, country_code, country_name, asn, as_org, origin, negative,"
    " first_resolved, last_resolved, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT(ip) DO UPDATE SET country_code = excluded.country_code,"
    " country_name = excluded.country_name, asn = excluded.asn, as_org = excluded.as_org,"
    " origin = excluded.origin, negative = excluded.negative,"
    " last_resolved = excluded.last_resolved, last_seen = excluded.last_seen"
)
SELECT_MANY_SQL = (
    "SELECT ip, country_code, country_name, asn, as_org, origin, negative, first_resolved,"
    " last_resolved, last_seen FROM geo_cache WHERE ip IN (SELECT value FROM json_each(?))"
)
TOUCH_MANY_SQL = (
    "UPDATE geo_cache SET last_seen = ? WHERE ip IN (SELECT value FROM json_each(?))"
)
# Keyset walk for retention: the next `limit` old rows after key `after`, in key order.
# Without an index on last_seen this scans the primary key from `after`, so each chunk
# costs about the rows it passes, not the whole table (see the migration's numbers).
OLD_CHUNK_SQL = (
    "SELECT max(ip), count(*) FROM (SELECT ip FROM geo_cache WHERE ip > ? AND last_seen < ?"
    " ORDER BY ip LIMIT ?)"
)
DELETE_RANGE_SQL = "DELETE FROM geo_cache WHERE ip > ? AND ip <= ? AND last_seen < ?"
class CachedGeo(NamedTuple):
    """A cache row: what is known about an address, and when bangd learned and met it.

    A named tuple, like GeoInfo, because a bulk resolve makes one per address.
    """

    info: GeoInfo
    first_resolved: float
    last_resolved: float
    last_seen: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> CachedGeo:
        """From a row of SELECT_MANY_SQL; by position, which is twice as fast as by name."""
        info = GeoInfo(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]))
        return cls(info, row[7], row[8], row[9])


@dataclass(frozen=True, slots=True)
class OldChunk:
    """One step of the retention walk: `count` old rows with keys in (after, last]."""

    count: int
    last: str


def _json_list(items: Iterable[str]) -> str:
    return json.dumps(list(items), separators=(",", ":"))


def _upsert_params(info: GeoInfo, now: float) -> tuple[Any, ...]:
    """UPSERT_SQL's parameters: GeoInfo's fields are its first seven columns, in order
    (sqlite3 binds the bool `negative` as the integer 0 or 1)."""
    return (*info, now, now, now)


class GeoCacheStore:
    """The geo_cache table. Callers chunk big address sets; each method is one statement
    (or one transaction), so a chunk's write holds the database only briefly."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- reads -----------------------------------------------------------------------------

    async def get_many(self, ips: Sequence[str]) -> dict[str, CachedGeo]:
        """The cached rows of those `ips` that have one, keyed by address."""
        if not ips:
            return {}
        rows = await self.db.fetchall(SELECT_MANY_SQL, (_json_list(ips),))
        return {row[0]: CachedGeo.from_row(row) for row in rows}

    async def get(self, ip: str) -> CachedGeo | None:
        return (await self.get_many([ip])).get(ip)

    async def stats(self) -> dict[str, Any]:
        """Row counts and the last_seen range, JSON-ready (one scan of the table)."""
        totals = await self.db.fetchone(
            "SELECT count(*) AS rows, coalesce(sum(negative), 0) AS negative,"
            " min(last_seen) AS oldest, max(last_seen) AS newest FROM geo_cache"
        )
        by_origin = await self.db.fetchall(
            "SELECT origin, count(*) AS rows FROM geo_cache GROUP BY origin ORDER BY origin"
        )
        assert totals is not None  # an aggregate always yields a row
        return {
            "rows": totals["rows"],
            "negative": totals["negative"],
            "oldest_last_seen": totals["oldest"],
            "newest_last_seen": totals["newest"],
            "by_origin": {row["origin"]: row["rows"] for row in by_origin},
        }

    # -- writes ----------------------------------------------------------------------------

    async def upsert(self, info: GeoInfo, now: float) -> None:
        """Store one answer; an existing row keeps its first_resolved, the rest is `now`."""
        await self.db.execute(UPSERT_SQL, _upsert_params(info, now))

    async def upsert_negative(self, ip: str, origin: str, now: float) -> None:
        """Store "nothing known about `ip`" as answered by `origin`."""
        await self.upsert(GeoInfo(ip, None, None, None, None, origin, True), now)

    async def upsert_many(self, infos: Sequence[GeoInfo], now: float) -> int:
        """Store many answers with one executemany (one transaction unless inside one)."""
        if not infos:
            return 0
        return await self.db.executemany(UPSERT_SQL, [_upsert_params(i, now) for i in infos])

    async def touch_many(self, ips: Sequence[str], now: float) -> int:
        """Set last_seen of the cached rows among `ips`; returns how many rows exist."""
        if not ips:
            return 0
        return await self.db.execute(TOUCH_MANY_SQL, (now, _json_list(ips)))

    async def old_chunk(self, after: str, cutoff: float, limit: int) -> OldChunk:
        """The next at most `limit` rows with last_seen < cutoff and key > `after`."""
        row = await self.db.fetchone(OLD_CHUNK_SQL, (after, cutoff, limit))
        assert row is not None  # an aggregate always yields a row
        count = int(row[1])
        return OldChunk(count, row[0] if count else after)

    async def delete_old_range(self, after: str, last: str, cutoff: float) -> int:
        """Delete the rows with key in (after, last] that are still older than `cutoff`."""
        return await self.db.execute(DELETE_RANGE_SQL, (after, last, cutoff))
