"""Queries over the geolocation cache (migration 0003).

Address sets, and the answers to write, travel into SQLite as one JSON array parameter
(`json_each`) rather than as `IN (?, ?, ...)` lists or an executemany: one statement per
chunk whatever its size, no parameter limit, and SQLite still searches the primary key
for each address (see the query-plan tests).

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

_ON_CONFLICT = (
    " ON CONFLICT(ip) DO UPDATE SET country_code = excluded.country_code,"
    " country_name = excluded.country_name, asn = excluded.asn, as_org = excluded.as_org,"
    " origin = excluded.origin, negative = excluded.negative,"
    " last_resolved = excluded.last_resolved, last_seen = excluded.last_seen"
)
# Answers go in as one JSON array of GeoInfo tuples, the time as its own parameter (JSON
# would round it to 15 digits). One statement per chunk: SQLite inserts the whole chunk
# without coming back to Python for each row, so the interpreter lock is free meanwhile
# and a worker thread can look the next chunk up (see services/geo.py).
UPSERT_MANY_SQL = (
    "INSERT INTO geo_cache (ip, country_code, country_name, asn, as_org, origin, negative,"
    " first_resolved, last_resolved, last_seen)"
    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), json_extract(value, '$[3]'),"
    " json_extract(value, '$[4]'), json_extract(value, '$[5]'),"
    " json_extract(value, '$[6]'), ?1, ?1, ?1 FROM json_each(?2) WHERE true" + _ON_CONFLICT
)
_SELECTED = (
    "ip, country_code, country_name, asn, as_org, origin, negative, first_resolved,"
    " last_resolved"
)
# The address list drives the join (CROSS JOIN keeps that order): one primary-key search
# per address, cheaper than `ip IN (SELECT ...)`, which first builds an index of the list.
SELECT_MANY_SQL = (
    f"SELECT {_SELECTED}, last_seen FROM json_each(?)"
    " CROSS JOIN geo_cache ON geo_cache.ip = json_each.value"
)
# The same rows with last_seen given, for a caller that sets it in the same transaction.
SELECT_MANY_SEEN_SQL = (
    f"SELECT {_SELECTED}, ? FROM json_each(?)"
    " CROSS JOIN geo_cache ON geo_cache.ip = json_each.value"
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
        """From a row of SELECT_MANY_SQL; by position, which is twice as fast as by name,
        and through tuple.__new__, three times as fast as the named tuples' own __new__."""
        new = tuple.__new__
        info = new(GeoInfo, (row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6])))
        return new(cls, (info, row[7], row[8], row[9]))


@dataclass(frozen=True, slots=True)
class OldChunk:
    """One step of the retention walk: `count` old rows with keys in (after, last]."""

    count: int
    last: str


def _json_list(items: Iterable[Any]) -> str:
    return json.dumps(list(items), separators=(",", ":"), ensure_ascii=False)


class GeoCacheStore:
    """The geo_cache table. Callers chunk big address sets; each method is one statement
    (or one transaction), so a chunk's write holds the database only briefly."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- reads -----------------------------------------------------------------------------

    async def get_many(
        self, ips: Sequence[str], *, seen: float | None = None
    ) -> dict[str, CachedGeo]:
        """The cached rows of those `ips` that have one, keyed by address.

        With `seen`, each row comes back with that last_seen: for a caller about to set it
        (touch_many or upsert_many in its write), which then needs no second copy per row.
        """
        if not ips:
            return {}
        if seen is None:
            rows = await self.db.fetchall(SELECT_MANY_SQL, (_json_list(ips),))
        else:
            rows = await self.db.fetchall(SELECT_MANY_SEEN_SQL, (seen, _json_list(ips)))
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
        await self.upsert_many([info], now)

    async def upsert_negative(self, ip: str, origin: str, now: float) -> None:
        """Store "nothing known about `ip`" as answered by `origin`."""
        await self.upsert(GeoInfo(ip, None, None, None, None, origin, True), now)

    async def upsert_many(self, infos: Sequence[GeoInfo], now: float) -> int:
        """Store answers (one statement); each existing row keeps its first_resolved, the
        rest is `now`. GeoInfo's fields are the first seven columns, in order."""
        if not infos:
            return 0
        return await self.db.execute(UPSERT_MANY_SQL, (now, _json_list(infos)))

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
