"""The import ledger (migrations 0002, 0005, 0006): sources, import_runs, applied, and the
batches on their way into `applied`.

Every query of `applied` lives here. The importer and reconciler speak in sets of entries
and in verbs (record pending, confirm, settle, mark removing, forget); each verb is one
commit of its own, so no caller opens the store's transactions. Entry sets go to SQL in
chunks small enough for SQLite's parameter limit and for the event loop.

A confirmed batch is applied before its entries are rows of `applied`: `fold()` moves them
there once the import has ended, and every method that reads or changes `applied` folds
what is left first (`folded`), so what this store answers never depends on whether the
fold has run. Only the import's own hot path (record_pending, confirm, jails_of) and the
reports' `jails()` read the batches as they are.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .. import slices
from .db import Database

# applied has no index on entry alone (its key is jail, entry, source), so the jails are
# enumerated first with a skip-scan over the key, then each (jail, entry) is a key search.
APPLIED_MATCHES_SQL = (
    "WITH RECURSIVE jails(jail) AS ("
    " SELECT (SELECT min(jail) FROM applied)"
    " UNION ALL"
    " SELECT (SELECT min(jail) FROM applied WHERE jail > jails.jail) FROM jails"
    " WHERE jails.jail IS NOT NULL)"
    " SELECT jail, entry, source FROM applied"
    " WHERE jail IN (SELECT jail FROM jails WHERE jail IS NOT NULL)"
    " AND entry IN (SELECT value FROM json_each(?))"
    " ORDER BY entry, source, jail"
)
# A source's entries in a jail after a key, as text, ENTRIES_PIECE of them: the pieces
# follow each other by SQL's own ORDER BY and LIMIT (`max` is the next piece's start, exact
# whatever order group_concat joins them in). The key's order (jail, entry, source) is the
# scan's, so ORDER BY is free. As text, not rows: fetched as rows, 1M took 2.3 s and
# stalled the event loop up to 355 ms (a tuple per row).
ENTRIES_PIECE_SQL = (
    "SELECT CAST(group_concat(entry, char(10)) || char(10) AS BLOB), max(entry) FROM"
    " (SELECT entry FROM applied WHERE jail = ? AND source = ? AND state = ? AND entry > ?"
    " ORDER BY entry LIMIT ?)"
)
# Everything applied to a jail, across sources, the same way.
EXPECTED_PIECE_SQL = (
    "SELECT CAST(group_concat(entry, char(10)) || char(10) AS BLOB), max(entry) FROM"
    " (SELECT DISTINCT entry FROM applied WHERE jail = ? AND state = 'applied'"
    " AND entry > ? ORDER BY entry LIMIT ?)"
)
ENTRIES_PIECE: Final = 65_536  # ~1 MiB of text
JAILS_SQL = (
    "WITH RECURSIVE jails(jail) AS ("
    " SELECT (SELECT min(jail) FROM applied)"
    " UNION ALL"
    " SELECT (SELECT min(jail) FROM applied WHERE jail > jails.jail) FROM jails"
    " WHERE jails.jail IS NOT NULL)"
    " SELECT jail FROM jails WHERE jail IS NOT NULL"
    " UNION SELECT jail FROM pending_batches WHERE confirmed = 1"
)
SOURCE_JAILS_SQL = (
    "WITH RECURSIVE jails(jail) AS ("
    " SELECT (SELECT min(jail) FROM applied WHERE source = ?1)"
    " UNION ALL"
    " SELECT (SELECT min(jail) FROM applied WHERE source = ?1 AND jail > jails.jail)"
    " FROM jails WHERE jails.jail IS NOT NULL)"
    " SELECT jail FROM jails WHERE jail IS NOT NULL"
    " UNION SELECT jail FROM pending_batches WHERE source = ?1 AND confirmed = 1"
)
ANY_CONFIRMED_SQL = "SELECT EXISTS (SELECT 1 FROM pending_batches WHERE confirmed = 1)"
# The fold: a confirmed batch's entries become rows of `applied`, and the batch is gone.
FOLD_SQL = (
    "INSERT INTO applied (jail, entry, source, state, owned, run_id)"
    " SELECT p.jail, j.value, p.source, 'applied', 1, p.run_id"
    " FROM pending_batches p, json_each(p.entries) j WHERE p.id = ? AND p.confirmed = 1"
    " ON CONFLICT (jail, entry, source) DO UPDATE SET state = 'applied', owned = 1,"
    " run_id = excluded.run_id"
)
# One statement for a whole source: the subquery reads applied_by_source, and each entry
# is then searched in geo_cache's primary key (CIDR entries simply match nothing).
TOUCH_LISTED_SQL = (
    "UPDATE geo_cache SET last_seen = ? WHERE ip IN (SELECT entry FROM applied WHERE source = ?)"
)

IN_CHUNK = 500  # parameters per IN (...) list


def _json(entries: Sequence[str]) -> str:
    """Entries as one JSON array parameter: SQLite's json_each reads it without a Python
    object per entry, and with no limit on how many."""
    return json.dumps(list(entries), separators=(",", ":"))


def chunked(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True, slots=True)
class AppliedMatch:
    """One `applied` row whose entry is an address or a network asked about."""

    jail: str
    entry: str
    source: str


@dataclass(frozen=True, slots=True)
class Unfinished:
    """An entry a crash left half-done: in a pending batch, or `removing` in `applied`."""

    jail: str
    entry: str
    state: str


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One `import_runs` row: what a run saw and how it ended (None while running)."""

    id: int
    source: str
    jail: str
    state: str  # running | completed | unchanged | failed | interrupted
    trigger: str  # timer | manual | force
    content_hash: str | None
    raw_hash: str | None
    entries: int | None
    added: int
    removed: int
    invalid: int
    skipped: int
    started: float
    finished: float | None
    error: str | None

    @classmethod
    def of(cls, row: sqlite3.Row) -> RunRecord:
        return cls(**{name: row[name] for name in _RUN_FIELDS})

    def as_dict(self) -> dict[str, Any]:
        """The row as the control protocol's `runs` reply shows it."""
        return {name: getattr(self, name) for name in _RUN_FIELDS}


_RUN_FIELDS: tuple[str, ...] = tuple(RunRecord.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class AppliedListing:
    """One applied (jail, entry) as `bangctl bans` lists it: every source listing it, and
    since when (the start of the run that first applied it)."""

    jail: str
    entry: str
    sources: tuple[str, ...]
    since: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"jail": self.jail, "entry": self.entry, "sources": list(self.sources),
                "since": self.since}


@dataclass(frozen=True)
class RunEnd:
    """How an import run ended, as its `import_runs` row records it."""

    state: str
    finished: float
    entries: int | None = None
    added: int = 0
    removed: int = 0
    invalid: int = 0
    skipped: int = 0
    error: str | None = None
    content_hash: str | None = None
    raw_hash: str | None = None


@dataclass(frozen=True)
class SourceRow:
    name: str
    jail: str
    location: str
    etag: str | None
    last_modified: str | None
    raw_digest: str | None
    entries_digest: str | None
    settings_digest: str | None
    entries: int
    last_success: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> SourceRow:
        return cls(
            name=row["name"], jail=row["jail"], location=row["location"], etag=row["etag"],
            last_modified=row["last_modified"], raw_digest=row["raw_digest"],
            entries_digest=row["entries_digest"], settings_digest=row["settings_digest"],
            entries=row["entries"], last_success=row["last_success"],
        )


class ImportStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Several stores may share one database (the geo service reads the ledger through
        # its own): whether anything waits to be folded is asked of the table each time.
        self._fold_lock = asyncio.Lock()

    # -- sources ---------------------------------------------------------------------------

    async def source(self, name: str) -> SourceRow | None:
        row = await self.db.fetchone("SELECT * FROM sources WHERE name = ?", (name,))
        return SourceRow.from_row(row) if row is not None else None

    async def sources(self) -> list[SourceRow]:
        rows = await self.db.fetchall("SELECT * FROM sources ORDER BY name")
        return [SourceRow.from_row(r) for r in rows]

    async def save_source(
        self,
        *,
        name: str,
        jail: str,
        location: str,
        etag: str | None,
        last_modified: str | None,
        raw_digest: str | None,
        entries_digest: str | None,
        settings_digest: str | None,
        entries: int,
        last_success: float,
    ) -> None:
        await self.db.execute(
            "INSERT INTO sources (name, jail, location, etag, last_modified, raw_digest,"
            " entries_digest, settings_digest, entries, last_success, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(name) DO UPDATE SET jail = excluded.jail,"
            " location = excluded.location, etag = excluded.etag,"
            " last_modified = excluded.last_modified, raw_digest = excluded.raw_digest,"
            " entries_digest = excluded.entries_digest,"
            " settings_digest = excluded.settings_digest, entries = excluded.entries,"
            " last_success = excluded.last_success",
            (name, jail, location, etag, last_modified, raw_digest, entries_digest,
             settings_digest, entries, last_success, last_success),
        )

    async def touch_source(
        self, name: str, *, etag: str | None, last_modified: str | None,
        raw_digest: str | None, last_success: float,
    ) -> None:
        """An unchanged run: refresh validators and the success time only."""
        await self.db.execute(
            "UPDATE sources SET etag = ?, last_modified = ?, raw_digest = ?,"
            " last_success = ? WHERE name = ?",
            (etag, last_modified, raw_digest, last_success, name),
        )

    async def known_sources(self) -> list[str]:
        """Every source with a record or an applied entry (a first run may have crashed)."""
        await self.folded()
        return [str(n) for n in await self.db.fetchcolumn(
            "SELECT name FROM sources UNION SELECT DISTINCT source FROM applied ORDER BY 1"
        )]

    async def forget_source(self, name: str) -> None:
        await self.db.execute("DELETE FROM sources WHERE name = ?", (name,))

    # -- runs ------------------------------------------------------------------------------

    async def start_run(self, source: str, jail: str, trigger: str, started: float) -> int:
        async with self.db.transaction():
            await self.db.execute(
                "INSERT INTO import_runs (source, jail, state, trigger, started)"
                " VALUES (?, ?, 'running', ?, ?)",
                (source, jail, trigger, started),
            )
            run_id = await self.db.fetchval("SELECT last_insert_rowid()")
        return int(run_id)

    async def finish_run(self, run_id: int, end: RunEnd) -> None:
        await self.db.execute(
            "UPDATE import_runs SET state = ?, finished = ?, entries = ?, added = ?,"
            " removed = ?, invalid = ?, skipped = ?, error = ?, content_hash = ?,"
            " raw_hash = ? WHERE id = ?",
            (end.state, end.finished, end.entries, end.added, end.removed, end.invalid,
             end.skipped, end.error, end.content_hash, end.raw_hash, run_id),
        )

    async def interrupt_running(self, now: float) -> list[str]:
        """Runs left `running` by a bangd that died: mark them and return their sources."""
        async with self.db.transaction():
            names = await self.db.fetchcolumn(
                "SELECT DISTINCT source FROM import_runs WHERE state = 'running'"
            )
            await self.db.execute(
                "UPDATE import_runs SET state = 'interrupted', finished = ?,"
                " error = 'bangd stopped during this run' WHERE state = 'running'",
                (now,),
            )
        return [str(n) for n in names]

    async def runs(self, source: str | None, limit: int) -> list[RunRecord]:
        """The latest runs, newest first (of one source, or of all)."""
        if source is None:
            rows = await self.db.fetchall(
                "SELECT * FROM import_runs ORDER BY id DESC LIMIT ?", (limit,)
            )
        else:
            rows = await self.db.fetchall(
                "SELECT * FROM import_runs WHERE source = ? ORDER BY id DESC LIMIT ?",
                (source, limit),
            )
        return [RunRecord.of(r) for r in rows]

    async def run_counts(self) -> list[tuple[str, str, int]]:
        rows = await self.db.fetchall(
            "SELECT source, state, COUNT(*) AS n FROM import_runs GROUP BY source, state"
            " ORDER BY source, state"
        )
        return [(r["source"], r["state"], r["n"]) for r in rows]

    async def last_runs(self) -> dict[str, RunRecord]:
        rows = await self.db.fetchall(
            "SELECT r.* FROM import_runs r JOIN (SELECT source, MAX(id) AS id FROM import_runs"
            " GROUP BY source) last ON r.id = last.id"
        )
        return {r["source"]: RunRecord.of(r) for r in rows}

    async def last_invalid(self) -> dict[str, int]:
        """Invalid lines at each source's latest parse (a completed or unchanged run; an
        unchanged run carries the count of the parse it matched)."""
        rows = await self.db.fetchall(
            "SELECT r.source, r.invalid FROM import_runs r JOIN (SELECT source, MAX(id) AS id"
            " FROM import_runs WHERE state IN ('completed', 'unchanged') GROUP BY source)"
            " last ON r.id = last.id"
        )
        return {str(r["source"]): int(r["invalid"] or 0) for r in rows}

    # -- applied entries ---------------------------------------------------------------------

    async def entries_of(
        self, source: str, jail: str, state: str = "applied"
    ) -> Sequence[str]:
        """What `source` has in `jail`, in key order, kept as text (`lines.TextLines`)."""
        return await slices.lines_of_pieces(self.entries_pieces(source, jail, state))

    async def entries_pieces(
        self, source: str, jail: str, state: str = "applied"
    ) -> AsyncIterator[bytes]:
        """What `source` has in `jail` as text, one entry per line, a piece at a time, each
        after the one before: what is sent on to a child as it is read (one text of 1M was
        14 MiB in the daemon, and SQLite held a second copy while it built it). The pieces
        are one statement each: the caller holds the apply lock where they must be one
        snapshot (an apply does; a dry run's preview may see a concurrent import midway)."""
        await self.folded()
        async for piece in self._pieces(ENTRIES_PIECE_SQL, (jail, source, state)):
            yield piece

    async def _pieces(self, sql: str, params: tuple[str, ...]) -> AsyncIterator[bytes]:
        after = ""
        while True:
            row = await self.db.fetchone(sql, (*params, after, ENTRIES_PIECE))
            if row is None or row[0] is None:
                return
            text, after = row
            yield bytes(text)

    async def jails_of(self, source: str) -> list[str]:
        """The jails `source` has entries in, by skip-scan of applied_by_source, and those
        of its confirmed batches: called right after an import's bans, it must not fold."""
        return [str(j) for j in await self.db.fetchcolumn(SOURCE_JAILS_SQL, (source,))]

    async def sources_with_unfinished(self) -> list[str]:
        return [str(n) for n in await self.db.fetchcolumn(
            "SELECT source FROM pending_batches WHERE confirmed = 0 UNION"
            " SELECT source FROM applied WHERE state != 'applied' ORDER BY 1"
        )]

    async def unfinished(self, source: str) -> list[Unfinished]:
        """What a crash left half-done: entries of batches still pending (sent or not), and
        rows being unbanned (`removing`)."""
        rows = await self.db.fetchall(
            "SELECT p.jail, j.value AS entry, 'pending' AS state FROM pending_batches p,"
            " json_each(p.entries) j WHERE p.source = ? AND p.confirmed = 0"
            " UNION ALL SELECT jail, entry, state FROM applied"
            " WHERE source = ? AND state != 'applied'",
            (source, source),
        )
        return [Unfinished(r["jail"], r["entry"], r["state"]) for r in rows]

    async def held_by_others(self, jail: str, source: str) -> dict[str, int]:
        """Entries other sources have applied to `jail`, with whether bangd owns the ban."""
        await self.folded()
        rows = await self.db.fetchall(
            "SELECT entry, MAX(owned) AS owned FROM applied WHERE jail = ? AND source != ?"
            " GROUP BY entry",
            (jail, source),
        )
        return {r["entry"]: r["owned"] for r in rows}

    async def held_by_others_among(
        self, jail: str, source: str, entries: Sequence[str]
    ) -> set[str]:
        """Which of `entries` another source has applied to `jail` (chunked lookups, for
        a few removals without loading a big jail's whole entry set)."""
        await self.folded()
        held: set[str] = set()
        for part in chunked(entries, IN_CHUNK):
            marks = ",".join("?" * len(part))
            held.update(await self.db.fetchcolumn(
                f"SELECT DISTINCT entry FROM applied WHERE jail = ? AND source != ?"
                f" AND entry IN ({marks})",
                (jail, source, *part),
            ))
        return held

    async def owned_of(self, source: str, jail: str, entries: Sequence[str]) -> dict[str, int]:
        await self.folded()
        owned: dict[str, int] = {}
        for part in chunked(entries, IN_CHUNK):
            marks = ",".join("?" * len(part))
            rows = await self.db.fetchall(
                f"SELECT entry, owned FROM applied WHERE source = ? AND jail = ?"
                f" AND entry IN ({marks})",
                (source, jail, *part),
            )
            owned.update((r["entry"], r["owned"]) for r in rows)
        return owned

    async def record(
        self, source: str, jail: str, rows: Iterable[tuple[str, str, int]], run_id: int | None
    ) -> None:
        """Record (entry, state, owned) rows as they are, in one commit; `pending` ones
        become one pending batch."""
        await self.folded()  # a later fold would overwrite `owned` of these rows
        rows = list(rows)
        pending = [entry for entry, state, _ in rows if state == "pending"]
        async with self.db.transaction():
            await self._upsert(source, jail, [r for r in rows if r[1] != "pending"], run_id)
            if pending:
                await self._add_batch(source, jail, pending, run_id)

    async def record_pending(
        self, source: str, jail: str, pending: Sequence[str], run_id: int | None,
        *, confirm: int | None = None,
    ) -> int | None:
        """One commit: `pending` recorded as a batch about to be sent (its id returned), and
        the batch `confirm` (which fail2ban has just taken) confirmed with it."""
        async with self.db.transaction():
            if confirm is not None:
                await self._confirm(confirm)
            return await self._add_batch(source, jail, pending, run_id) if pending else None

    async def confirm(self, batch: int) -> None:
        """fail2ban took the batch: its entries are applied, as bangd's own bans (folded into
        `applied` later: see fold)."""
        async with self.db.transaction():
            await self._confirm(batch)

    async def settle(
        self, source: str, jail: str, *, arrived: Sequence[str], lost: Sequence[str]
    ) -> None:
        """After a crash, in one commit: the pending entries fail2ban holds are applied, the
        rest forgotten, and the source's pending batches for `jail` are gone."""
        await self.folded()
        async with self.db.transaction():
            if arrived:
                await self.db.execute(
                    "INSERT INTO applied (jail, entry, source, state, owned, run_id)"
                    " SELECT p.jail, j.value, p.source, 'applied', 1, p.run_id"
                    " FROM pending_batches p, json_each(p.entries) j"
                    " WHERE p.source = ? AND p.jail = ? AND p.confirmed = 0"
                    " AND j.value IN (SELECT value FROM json_each(?))"
                    " ON CONFLICT (jail, entry, source) DO UPDATE SET state = 'applied',"
                    " owned = 1, run_id = excluded.run_id",
                    (source, jail, _json(arrived)),
                )
            await self._forget_rows(source, jail, lost)  # folded above: never fold in here
            await self.db.execute(
                "DELETE FROM pending_batches WHERE source = ? AND jail = ? AND confirmed = 0",
                (source, jail),
            )

    async def mark_removing(self, source: str, jail: str, entries: Sequence[str]) -> None:
        """About to be unbanned: a crash from here on is settled by finishing the unban."""
        await self.folded()
        await self.db.execute(
            "UPDATE applied SET state = 'removing' WHERE jail = ? AND source = ?"
            " AND entry IN (SELECT value FROM json_each(?))",
            (jail, source, _json(entries)),
        )

    async def forget(self, source: str, jail: str, entries: Sequence[str]) -> None:
        await self.folded()
        await self._forget_rows(source, jail, entries)

    async def _forget_rows(self, source: str, jail: str, entries: Sequence[str]) -> None:
        """Without folding: a fold inside a caller's transaction would wait for the fold
        lock while another fold holding it waits for that transaction's write lock."""
        if entries:
            await self.db.execute(
                "DELETE FROM applied WHERE jail = ? AND source = ?"
                " AND entry IN (SELECT value FROM json_each(?))",
                (jail, source, _json(entries)),
            )

    async def claim(self, jail: str, entries: Sequence[str]) -> None:
        """bangd is about to ban these itself (a re-ban): the bans become its own."""
        await self.folded()
        await self.db.execute(
            "UPDATE applied SET owned = 1 WHERE jail = ?"
            " AND entry IN (SELECT value FROM json_each(?))",
            (jail, _json(entries)),
        )

    async def _add_batch(
        self, source: str, jail: str, entries: Sequence[str], run_id: int | None
    ) -> int:
        """Called inside a transaction: the new row's id is this connection's last insert."""
        await self.db.execute(
            "INSERT INTO pending_batches (source, jail, run_id, entries) VALUES (?, ?, ?, ?)",
            (source, jail, run_id, _json(entries)),
        )
        return int(await self.db.fetchval("SELECT last_insert_rowid()"))

    async def _confirm(self, batch: int) -> None:
        await self.db.execute("UPDATE pending_batches SET confirmed = 1 WHERE id = ?", (batch,))

    async def fold(self) -> int:
        """Move every confirmed batch into `applied`; return how many entries that was.

        One batch per commit: a write queued meanwhile (an import's run record, another
        source's batch) waits for one batch, not for the whole fold. One INSERT ... SELECT
        from json_each per batch: SQLite walks the JSON array itself, with no Python object
        per entry (2.9 s per million against 6.5 s for executemany). Cancelled, it stops
        between or inside a batch's commit; what is left is folded by the next caller.
        """
        async with self._fold_lock:
            folded = 0
            for batch in await self.db.fetchcolumn(
                "SELECT id FROM pending_batches WHERE confirmed = 1 ORDER BY id"
            ):
                async with self.db.transaction():
                    # Another store may have folded it meanwhile: then this is nothing.
                    folded += await self.db.execute(FOLD_SQL, (batch,))
                    await self.db.execute(
                        "DELETE FROM pending_batches WHERE id = ? AND confirmed = 1", (batch,)
                    )
            return folded

    async def folded(self) -> None:
        """Before any read or change of `applied`: nothing confirmed is left outside it.
        The check is one read of a table that holds a few hundred rows at most."""
        if await self.db.fetchval(ANY_CONFIRMED_SQL):
            await self.fold()

    async def _upsert(
        self, source: str, jail: str, rows: Sequence[tuple[str, str, int]], run_id: int | None
    ) -> None:
        if not rows:
            return
        await self.db.execute(
            "INSERT INTO applied (jail, entry, source, state, owned, run_id)"
            " SELECT ?, json_extract(j.value, '$[0]'), ?, json_extract(j.value, '$[1]'),"
            " json_extract(j.value, '$[2]'), ? FROM json_each(?) j WHERE true"
            " ON CONFLICT (jail, entry, source) DO UPDATE SET state = excluded.state,"
            " owned = excluded.owned, run_id = excluded.run_id",
            (jail, source, run_id, json.dumps(rows, separators=(",", ":"))),
        )

    async def expected(self, jail: str) -> Sequence[str]:
        """Everything bangd has confirmed as applied to `jail`, across sources, in key order
        (reconciliation reads it all, every reconcile_interval)."""
        await self.folded()
        return await slices.lines_of_pieces(self._pieces(EXPECTED_PIECE_SQL, (jail,)))

    async def jails(self) -> list[str]:
        """Jails with applied entries: a skip-scan, one key search per jail (DISTINCT read
        every row: 91 ms at 1M entries, on every `status`), and those of confirmed batches
        (reports read on their own connection, which never folds)."""
        return [str(j) for j in await self.db.fetchcolumn(JAILS_SQL)]

    async def applied_matches(self, entries: Sequence[str]) -> list[AppliedMatch]:
        """Applied rows whose entry is exactly one of `entries`, in any jail."""
        if not entries:
            return []
        await self.folded()
        rows = await self.db.fetchall(
            APPLIED_MATCHES_SQL, (_json(entries),)
        )
        return [AppliedMatch(row["jail"], row["entry"], row["source"]) for row in rows]

    async def mark_listed_seen(self, source: str, now: float) -> int:
        """Every geo cache row of an address `source` lists gets last_seen = now (the
        ledger knows what a source lists; the geo cache only what it has resolved).

        With an empty geo cache (no geo configured) there is nothing to mark, and the
        UPDATE would still probe every entry of the source (~0.4 s for 1M) and fold its
        batches while the import finishes: it is not run at all."""
        if not await self.db.fetchval("SELECT EXISTS (SELECT 1 FROM geo_cache)"):
            return 0
        await self.folded()
        return await self.db.execute(TOUCH_LISTED_SQL, (now, source))

    async def mark_stale(self, name: str) -> None:
        """Entries were lifted outside an import (an exemption): the next import must
        re-apply the whole list, not take it as unchanged; `entries` counts what is left."""
        await self.folded()
        await self.db.execute(
            "UPDATE sources SET settings_digest = NULL, entries = (SELECT COUNT(*) FROM"
            " applied WHERE source = ? AND state = 'applied') WHERE name = ?", (name, name),
        )

    # -- listings (bangctl bans) -------------------------------------------------------------

    async def applied_listing(
        self, *, jail: str | None, source: str | None, limit: int
    ) -> list[AppliedListing]:
        """Applied (jail, entry) pairs in key order, at most `limit`."""
        await self.folded()
        where, params = _listing_filter(jail, source)
        rows = await self.db.fetchall(
            "SELECT a.jail, a.entry, group_concat(a.source, ',') AS sources,"
            " min(r.started) AS since FROM applied a"
            " LEFT JOIN import_runs r ON r.id = a.run_id"
            f" WHERE {where} GROUP BY a.jail, a.entry ORDER BY a.jail, a.entry LIMIT ?",
            (*params, limit),
        )
        return [AppliedListing(r["jail"], r["entry"], tuple(sorted(str(r["sources"]).split(","))),
                               r["since"]) for r in rows]

    async def applied_counts(
        self, *, jail: str | None, source: str | None
    ) -> tuple[dict[str, int], dict[str, int]]:
        """(distinct entries per jail, entries per source) under the same filter."""
        await self.folded()
        where, params = _listing_filter(jail, source)
        by_jail = await self.db.fetchall(
            f"SELECT a.jail, COUNT(DISTINCT a.entry) AS n FROM applied a WHERE {where}"
            " GROUP BY a.jail ORDER BY a.jail", params,
        )
        by_source = await self.db.fetchall(
            f"SELECT a.source, COUNT(*) AS n FROM applied a WHERE {where}"
            " GROUP BY a.source ORDER BY a.source", params,
        )
        return ({r["jail"]: r["n"] for r in by_jail},
                {r["source"]: r["n"] for r in by_source})


def _listing_filter(jail: str | None, source: str | None) -> tuple[str, tuple[str, ...]]:
    """The WHERE clause over `applied a` for a jail and/or a source's entries (with every
    source that lists them, not only that one)."""
    where, params = ["a.state = 'applied'"], []
    if jail is not None:
        where.append("a.jail = ?")
        params.append(jail)
    if source is not None:
        where.append("EXISTS (SELECT 1 FROM applied b WHERE b.jail = a.jail"
                     " AND b.entry = a.entry AND b.source = ? AND b.state = 'applied')")
        params.append(source)
    return " AND ".join(where), tuple(params)
