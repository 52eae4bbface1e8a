"""The daemon's one SQLite connection, shared by all its asyncio tasks.

SQLite allows one writer at a time, and one connection has one transaction: if two tasks
wrote through it at once, task B's statements would land inside task A's transaction and be
committed or rolled back with it. So every write is serialised by an asyncio.Lock:

* ``transaction()`` holds the lock from BEGIN IMMEDIATE to COMMIT/ROLLBACK;
* ``execute``/``executemany``/``backup_to`` outside a transaction take it for their call;
* a task inside its own transaction does not take it again. Ownership travels in a
  ContextVar, so tasks started inside the transaction (e.g. a TaskGroup) write into it too;
  a task that outlives the transaction takes the lock like anyone else.
* A nested ``transaction()`` joins the outer one (no SAVEPOINT): its writes commit or roll
  back with the outer block. An exception leaving the inner block rolls everything back only
  if it also leaves the outer block; do not catch it in between expecting a partial undo.

Reads (``fetch*``) do not take the lock; through this one connection they also see the
uncommitted writes of whichever transaction is open.

Statements raise ``sqlite3.Error`` as sqlite reports it; only opening and migrating raise
MigrationError. Waiting on other processes' locks is bounded by ``busy_timeout`` (5 s).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any

import aiosqlite

from bangd.errors import MigrationError
from bangd.store.integrity import is_corruption, quick_check, raise_if_damaged
from bangd.store.migrate import Migration, applied_version, apply
from bangd.store.sqlite import finish_despite_cancel, rollback_quietly

log = logging.getLogger(__name__)

Params = Sequence[Any] | Mapping[str, Any]

BUSY_TIMEOUT_MS = 5000
_PRAGMAS = (
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",  # first: the others may need a lock
    "PRAGMA journal_mode=WAL",  # first read of the file: a non-SQLite file fails here
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
    # 16 MiB of page cache instead of SQLite's 2 MiB: bulk geo upserts into a table of
    # 1M rows ran twice as fast with 32 MiB, 18% slower with 8; imports write in key order
    # and gain nothing from more. 32 MiB put a 1M import's peak RSS at 181 MiB, 16 at 157.
    "PRAGMA cache_size=-16384",
)


class _Transaction:
    """Identity of one open transaction; compared by ``is``, never by value."""


_current_transaction: contextvars.ContextVar[_Transaction | None] = contextvars.ContextVar(
    "bangd_store_transaction", default=None
)


class Database:
    """One aiosqlite connection with serialised writes; build it with ``await Database.open``."""

    def __init__(
        self, conn: aiosqlite.Connection, path: str, *, backup_dir: str | None = None
    ) -> None:
        self.path = path
        self._conn = conn
        self._backup_dir = backup_dir
        self._write_lock = asyncio.Lock()
        self._active: _Transaction | None = None
        self._schema_version = 0
        self._closed = False
        # Called once with the error when a statement reports the file damaged
        # (SQLITE_CORRUPT/NOTADB): the daemon stops rather than limp on with lost writes.
        self.on_corrupt: Callable[[sqlite3.DatabaseError], None] | None = None
        self.corrupt: sqlite3.DatabaseError | None = None
        self.checked_at_open = False  # a complete integrity check passed before opening

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: str,
        *,
        migrate: bool = True,
        backup_dir: str | None = None,
        integrity_budget: float | None = None,
    ) -> Database:
        """Open (creating if missing) and migrate the database at ``path``.

        An existing file is never deleted or recreated: anything unexpected raises
        MigrationError and leaves the file as it was. With ``integrity_budget`` an existing
        file is first checked for damage (DatabaseCorrupt), for about that many seconds.
        """
        path = os.fspath(path)
        checked = False
        if path != ":memory:":
            await asyncio.to_thread(_ensure_parent_dir, path)
            if integrity_budget is not None and await asyncio.to_thread(_has_content, path):
                report = await quick_check(path, budget=integrity_budget)
                raise_if_damaged(path, report)
                log.info("db=%s integrity=%s took=%.2fs", path,
                         "ok" if report.complete else "unfinished", report.took)
                checked = report.complete
        conn = await _connect(path)
        try:
            db = cls(conn, path, backup_dir=backup_dir)
            db.checked_at_open = checked
            await db._configure()
            if migrate:
                await db.migrate()
            else:
                db._schema_version = await applied_version(conn)
        except BaseException:
            await finish_despite_cancel(conn.close())
            raise
        return db

    async def _configure(self) -> None:
        self._conn.row_factory = sqlite3.Row
        try:
            for pragma in _PRAGMAS:
                await self._conn.execute(pragma)
        except sqlite3.OperationalError as exc:  # locked, read-only, I/O error
            raise MigrationError(
                f"cannot use database {self.path}: {exc}: check that no other process holds "
                "it locked and that bangd may write it and its directory"
            ) from exc
        except sqlite3.DatabaseError as exc:  # not a database, or corrupt
            raise MigrationError(
                f"cannot use database {self.path}: {exc}: it is not a readable SQLite "
                "database; move it aside or point database: at another file"
            ) from exc
        mode = await self.fetchval("PRAGMA journal_mode")
        if mode not in ("wal", "memory"):
            log.warning("db=%s journal_mode=%s wal_unavailable", self.path, mode)

    async def reader(self) -> Database:
        """A second connection, for reads that must never queue behind a write.

        One connection serves one statement at a time: a `status` during a 1M import
        waited behind each batch's commit and behind the post-import refresh of the geo
        cache (an UPDATE probing 1M rows, ~0.4 s). Under WAL a reader sees the last commit
        while the writer works. The reader refuses writes (query_only). An in-memory
        database has no second connection: it is its own reader.
        """
        if self.path == ":memory:":
            return self
        conn = await _connect(self.path)
        try:
            reader = Database(conn, self.path)
            conn.row_factory = sqlite3.Row
            for pragma in (_PRAGMAS[0], "PRAGMA query_only=ON", "PRAGMA cache_size=-8192"):
                await conn.execute(pragma)
        except BaseException:
            await finish_despite_cancel(conn.close())
            raise
        reader._schema_version = self._schema_version
        reader.on_corrupt = self._report_corrupt
        return reader

    def _report_corrupt(self, exc: sqlite3.DatabaseError) -> None:
        """What the reader does on damage: report it as this connection's own."""
        if self.corrupt is None:
            self.corrupt = exc
            if self.on_corrupt is not None:
                self.on_corrupt(exc)

    async def migrate(
        self,
        *,
        target: int | None = None,
        migrations: Sequence[Migration] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> list[Migration]:
        """Apply pending migrations (see bangd.store.migrate.apply); return those applied."""
        if self._holds_transaction():
            raise RuntimeError("migrate() cannot run inside a transaction")
        async with self._write_lock:
            try:
                done = await apply(
                    self._conn,
                    target=target,
                    db_path=self.path,
                    backup_dir=self._backup_dir,
                    clock=clock,
                    migrations=migrations,
                )
            except sqlite3.DatabaseError as exc:
                raise MigrationError(
                    f"cannot migrate database {self.path}: {exc}: check that no other process "
                    "holds it locked, or restore a backup"
                ) from exc
            self._schema_version = await applied_version(self._conn)
        return done

    async def close(self) -> None:
        """Close the connection; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        await finish_despite_cancel(self._conn.close())

    # -- state -----------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        """The schema version after the last migrate() (or as found, if opened unmigrated)."""
        return self._schema_version

    @property
    def in_transaction(self) -> bool:
        """Whether SQLite has a transaction open on this connection (any task's)."""
        return bool(self._conn.in_transaction)

    # -- writes ----------------------------------------------------------------------------

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return its rowcount. Outside a transaction it autocommits."""
        if self._holds_transaction():
            return await self._execute_now(sql, params)
        async with self._write_lock:
            return await self._execute_now(sql, params)

    async def executemany(self, sql: str, seq_of_params: Iterable[Params]) -> int:
        """Run one statement per parameter set; return the total rowcount.

        Outside a transaction the whole batch gets its own transaction: all rows or none,
        and far faster than one autocommit per row.
        """
        async with self.transaction():
            with self._watch():
                cursor = await self._conn.executemany(sql, seq_of_params)
                try:
                    return int(cursor.rowcount)
                finally:
                    await cursor.close()

    def transaction(self) -> AbstractAsyncContextManager[None]:
        """``async with db.transaction():`` BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error.

        Cancellation included: the task's cancellation is re-raised only after ROLLBACK has
        really run, so no transaction is ever left open.
        """
        return self._transaction()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        if self._holds_transaction():
            yield  # nested: join the outer transaction
            return
        async with self._write_lock:
            marker = _Transaction()
            self._active = marker
            token = _current_transaction.set(marker)
            try:
                await self._begin()
                try:
                    yield
                except BaseException:
                    await rollback_quietly(self._conn)
                    raise
                await self._commit()
            finally:
                self._active = None
                _current_transaction.reset(token)

    async def _begin(self) -> None:
        try:
            with self._watch():
                await finish_despite_cancel(self._conn.execute("BEGIN IMMEDIATE"))
        except BaseException:
            await rollback_quietly(self._conn)  # BEGIN may have run before the cancel landed
            raise

    async def _commit(self) -> None:
        try:
            with self._watch():
                await finish_despite_cancel(self._conn.execute("COMMIT"))
        except BaseException:
            await rollback_quietly(self._conn)  # COMMIT failed (e.g. busy): leave nothing open
            raise

    async def backup_to(self, dest: str) -> None:
        """Write a consistent copy of the database to ``dest`` (which must not exist yet).

        Uses VACUUM INTO (SQLite >= 3.27) rather than aiosqlite's backup(): it works the same
        on aiosqlite 0.17 and compacts the copy. Waits for any open transaction to finish.
        """
        if self._holds_transaction():
            raise RuntimeError("backup_to() cannot run inside a transaction")
        async with self._write_lock:
            await self._execute_now("VACUUM INTO ?", (os.fspath(dest),))

    # -- reads -----------------------------------------------------------------------------

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        with self._watch():
            cursor = await self._conn.execute(sql, params)
            try:
                return await cursor.fetchone()
            finally:
                await cursor.close()

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        with self._watch():
            return list(await self._conn.execute_fetchall(sql, params))

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row, or None when there is no row."""
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]

    async def fetchcolumn(self, sql: str, params: Params = ()) -> list[Any]:
        """The first column of every row: for reading big entry sets without dicts."""
        with self._watch():
            return [row[0] for row in await self._conn.execute_fetchall(sql, params)]

    # -- internals -------------------------------------------------------------------------

    def _holds_transaction(self) -> bool:
        return self._active is not None and _current_transaction.get() is self._active

    async def _execute_now(self, sql: str, params: Params) -> int:
        with self._watch():
            cursor = await self._conn.execute(sql, params)
            try:
                return int(cursor.rowcount)
            finally:
                await cursor.close()

    @contextmanager
    def _watch(self) -> Iterator[None]:
        """Report the first statement that finds the file damaged; re-raise every error."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if self.corrupt is None and is_corruption(exc):
                self.corrupt = exc
                log.error("db=%s damaged: %s", self.path, exc)
                if self.on_corrupt is not None:
                    self.on_corrupt(exc)
            raise


async def _connect(path: str) -> aiosqlite.Connection:
    try:
        return await aiosqlite.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise MigrationError(
            f"cannot open database {path}: {exc}: check that the path is a file and that "
            "bangd may read and write it and its directory"
        ) from exc


def _has_content(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


def _ensure_parent_dir(path: str) -> None:
    """Create the database's directory (0750: the data is nobody else's business)."""
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, mode=0o750, exist_ok=True)
    except OSError as exc:
        raise MigrationError(
            f"cannot create directory {parent} for database {path}: {exc.strerror}: "
            "create it or point database: elsewhere"
        ) from exc
