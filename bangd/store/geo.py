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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import Any

from bangd.geo.model import GeoInfo, Run
from bangd.store.db import Database

_ON_CONFLICT = (
    " ON CONFLICT(ip) DO UPDATE SET country_code = excluded.country_code,"
    " country_name = excluded.country_name, asn = excluded.asn, as_org = excluded.as_org,"
    " origin = excluded.origin, negative = excluded.negative,"
    " last_resolved = excluded.last_resolved, last_seen = excluded.last_seen"
)
# Answers go in as JSON, the time as its own parameter (JSON would round it to 15 digits),
# one statement per kind of chunk: SQLite writes the whole chunk without coming back to
# Python for each row, so the interpreter lock is free meanwhile and a worker thread can
# look the next chunk up (see bangd/services/geo/chain.py). A run of addresses with one
# answer (MMDB answers for one network, in key order) goes in as one group
# [country_code, country_name, asn, as_org, origin, negative, [ip, ...]], so each address
# costs the encoder and SQLite a string, not seven values; the groups are read once
# (MATERIALIZED), since a group's text holds all its addresses. A group of one costs
# SQLite more than a plain row (4.4 against 2.5 us), so single answers go in as rows
# [ip, country_code, ...]. Both statements start with INSERT, so that Python's sqlite3
# reports their rowcount.
UPSERT_RUNS_SQL = (
    "INSERT INTO geo_cache (ip, country_code, country_name, asn, as_org, origin, negative,"
    " first_resolved, last_resolved, last_seen)"
    " WITH answer AS MATERIALIZED (SELECT json_extract(value, '$[0]') AS country_code,"
    " json_extract(value, '$[1]') AS country_name, json_extract(value, '$[2]') AS asn,"
    " json_extract(value, '$[3]') AS as_org, json_extract(value, '$[4]') AS origin,"
    " json_extract(value, '$[5]') AS negative, json_extract(value, '$[6]') AS ips"
    " FROM json_each(?2))"
    " SELECT address.value, country_code, country_name, asn, as_org, origin, negative,"
    " ?1, ?1, ?1 FROM answer, json_each(answer.ips) AS address WHERE true" + _ON_CONFLICT
)
UPSERT_ROWS_SQL = (
    "INSERT INTO geo_cache (ip, country_code, country_name, asn, as_org, origin, negative,"
    " first_resolved, last_resolved, last_seen)"
    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), json_extract(value, '$[3]'),"
    " json_extract(value, '$[4]'), json_extract(value, '$[5]'),"
    " json_extract(value, '$[6]'), ?1, ?1, ?1 FROM json_each(?2) WHERE true" + _ON_CONFLICT
)
_ALIKE = (
    "country_code, country_name, asn, as_org, origin, negative, first_resolved,"
    " last_resolved"
)
# Cached rows come back as runs too: one result row per set of rows alike but for the
# address, with those addresses as a JSON array, so that reading 100k rows does not make
# 100k sqlite3.Row objects (and their ten values each) for the collector to walk. The
# address list drives the join (CROSS JOIN keeps that order): one primary-key search per
# address, cheaper than `ip IN (SELECT ...)`, which first builds an index of the list.
SELECT_MANY_SQL = (
    f"SELECT {_ALIKE}, last_seen, json_group_array(ip) FROM json_each(?)"
    " CROSS JOIN geo_cache ON geo_cache.ip = json_each.value"
    f" GROUP BY {_ALIKE}, last_seen"
)
# The same with last_seen given, for a caller that sets it in the same transaction.
SELECT_MANY_SEEN_SQL = (
    f"SELECT {_ALIKE}, ?, json_group_array(ip) FROM json_each(?)"
    " CROSS JOIN geo_cache ON geo_cache.ip = json_each.value"
    f" GROUP BY {_ALIKE}"
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
CachedAnswer = tuple[
    str | None, str | None, int | None, str | None, str, int, float, float, float
]
"""A cache row without its address, as a plain tuple: GeoAnswer's fields (`negative` 0 or
1), then first_resolved, last_resolved, last_seen."""

CachedRun = tuple[CachedAnswer, list[str]]
"""Cached addresses whose rows are alike but for the address."""

CacheRow = tuple[
    str, str | None, str | None, int | None, str | None, str, int, float, float, float
]
"""A geo_cache row as a plain tuple, its ten columns in table order."""


class CachedGeo(CacheRow):
    """A cache row: what is known about an address (`info`), and when bangd learned and
    met it. Built as CachedGeo(info, first_resolved, last_resolved, last_seen).

    One flat tuple of the row's ten columns, not a tuple holding a GeoInfo, so that a row
    is one object; `info` is built when asked for.
    """

    __slots__ = ()

    def __new__(
        cls, info: GeoInfo, first_resolved: float, last_resolved: float, last_seen: float
    ) -> CachedGeo:
        return tuple.__new__(cls, (*info, first_resolved, last_resolved, last_seen))

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> CachedGeo:
        """From a row of SELECT_MANY_SQL or a CacheRow (the same columns, in order)."""
        return tuple.__new__(cls, row)

    @property
    def info(self) -> GeoInfo:
        return tuple.__new__(GeoInfo, (*self[:6], bool(self[6])))

    @property
    def ip(self) -> str:
        return self[0]

    @property
    def negative(self) -> bool:
        return bool(self[6])

    @property
    def first_resolved(self) -> float:
        return self[7]

    @property
    def last_resolved(self) -> float:
        return self[8]

    @property
    def last_seen(self) -> float:
        return self[9]

    def __repr__(self) -> str:
        return (f"CachedGeo({self.info!r}, first_resolved={self[7]!r}, "
                f"last_resolved={self[8]!r}, last_seen={self[9]!r})")


class CachedRows(Mapping[str, CachedGeo]):
    """Cache rows keyed by address, kept as each address's CachedAnswer (one shared tuple
    for a run of rows alike) and read as CachedGeo: what a bulk resolve answers.

    Python's garbage collector stops tracking a plain tuple of plain values the first time
    it meets one, but tracks every tuple subclass (CachedGeo, GeoInfo) for as long as it
    lives and walks all of them on each full collection: 100k of them made the collector a
    quarter of a 100k-address resolve. So the rows stay plain, and each value is made
    when it is read.
    """

    __slots__ = ("_rows",)

    def __init__(self, rows: dict[str, CachedAnswer]) -> None:
        self._rows = rows

    def __getitem__(self, ip: str) -> CachedGeo:
        return tuple.__new__(CachedGeo, (ip, *self._rows[ip]))

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, ip: object) -> bool:
        return ip in self._rows

    def __repr__(self) -> str:
        return f"CachedRows({dict(self)!r})"


@dataclass(frozen=True, slots=True)
class OldChunk:
    """One step of the retention walk: `count` old rows with keys in (after, last]."""

    count: int
    last: str


_ANSWER = itemgetter(1, 2, 3, 4, 5, 6)  # a GeoInfo's fields after `ip`


def _json_list(items: Iterable[Any]) -> str:
    return json.dumps(list(items), separators=(",", ":"), ensure_ascii=False)


class GeoCacheStore:
    """The geo_cache table. Callers chunk big address sets; each method is one statement
    (or one transaction), so a chunk's write holds the database only briefly."""

    def __init__(self, db: Database, reads: Database | None = None) -> None:
        """`reads`: a second connection to the same file (Database.reader) for the bulk
        reads, so that a resolve reads its next chunk while this one's write runs."""
        self.db = db
        self.reads = reads if reads is not None else db

    # -- reads -----------------------------------------------------------------------------

    async def get_many(self, ips: Sequence[str]) -> dict[str, CachedGeo]:
        """The cached rows of those `ips` that have one, keyed by address."""
        new = tuple.__new__
        return {
            ip: new(CachedGeo, (ip, *answer))
            for answer, run in await self.get_runs(ips) for ip in run
        }

    async def get_runs(
        self, ips: Sequence[str], *, seen: float | None = None
    ) -> list[CachedRun]:
        """get_many for bulk callers (one statement): the cached rows among `ips`, as runs
        of addresses whose rows are alike but for the address, in no particular order.

        With `seen`, each row comes back with that last_seen: for a caller about to set it
        (touch_many or upsert_runs in its write), which then needs no second copy per row.
        Read on `reads`: what was committed, so not what a transaction still open on
        `db` has written.
        """
        if not ips:
            return []
        if seen is None:
            rows = await self.reads.fetchall(SELECT_MANY_SQL, (_json_list(ips),))
        else:
            rows = await self.reads.fetchall(SELECT_MANY_SEEN_SQL, (seen, _json_list(ips)))
        loads = json.loads
        return [(tuple(row)[:9], loads(row[9])) for row in rows]

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
        """Store answers; an existing row keeps its first_resolved, the rest is `now`. Of
        an address given twice, the last answer is kept."""
        last = {info[0]: info for info in infos}
        runs = [
            (answer, [info[0] for info in run])
            for answer, run in groupby(last.values(), _ANSWER)
        ]
        return await self.upsert_runs(runs, now)

    async def upsert_runs(self, runs: Sequence[Run], now: float) -> int:
        """upsert_many for bulk callers: each run's addresses get its answer. An address
        must not be in two runs (which of them is kept is not said)."""
        groups = [[*answer, run] for answer, run in runs if len(run) > 1]
        singles = [[run[0], *answer] for answer, run in runs if len(run) == 1]
        if not (groups and singles):  # one statement, atomic by itself
            if groups:
                return await self.db.execute(UPSERT_RUNS_SQL, (now, _json_list(groups)))
            if singles:
                return await self.db.execute(UPSERT_ROWS_SQL, (now, _json_list(singles)))
            return 0
        async with self.db.transaction():
            written = await self.db.execute(UPSERT_RUNS_SQL, (now, _json_list(groups)))
            return written + await self.db.execute(UPSERT_ROWS_SQL, (now, _json_list(singles)))

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
