"""Numbered SQL migrations shipped as package files, and the runner that applies them.

Migrations live in ``bangd/store/migrations/NNNN_name.sql``, numbered contiguously from 1.
The ledger table ``schema_migrations`` (keyed by version) records each applied file and
``PRAGMA user_version`` mirrors the newest one, so ``sqlite3 bangd.db 'PRAGMA user_version'``
answers "which schema is this?" without bangd.

Each file runs in ONE transaction together with its ledger row and ``user_version`` bump:
either all of it lands or the database stays exactly at its previous version. Files must
therefore not contain BEGIN/COMMIT/ROLLBACK/VACUUM (checked). The runner switches foreign
keys off while it migrates (so a table rebuild cannot cascade deletes) and runs
``PRAGMA foreign_key_check`` before each commit instead.

The runner never repairs by destroying: a database newer than this code, or one that is not
bangd's, is refused with a MigrationError, and a non-empty database is backed up (VACUUM INTO)
before anything is applied to it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import aiosqlite

from bangd.errors import MigrationError
from bangd.store.sqlite import finish_despite_cancel, rollback_quietly

log = logging.getLogger(__name__)

LEDGER_TABLE = "schema_migrations"
_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_LEADING_COMMENTS = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_FORBIDDEN_FIRST_WORDS = frozenset({"BEGIN", "COMMIT", "END", "ROLLBACK", "VACUUM", "SAVEPOINT"})
_CREATE_LEDGER = f"""
CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at REAL NOT NULL
)"""

@dataclass(frozen=True)
class Migration:
    """One migration file: ``version`` 1-based, ``name`` without number or suffix."""

    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        """The file's stem, e.g. ``0001_init``: what logs and errors call this migration."""
        return f"{self.version:04d}_{self.name}"

    @property
    def filename(self) -> str:
        return f"{self.label}.sql"


@dataclass(frozen=True)
class Statement:
    """One statement of a migration file and the line it starts on, for error messages."""

    line: int
    sql: str


# ---------------------------------------------------------------------------------------
# Discovery


def available(source: Traversable | None = None) -> list[Migration]:
    """The migrations in ``source`` (default: the shipped package directory), in order.

    Raises MigrationError for a misnamed .sql file, a duplicate number or name, or a gap,
    because applying an incomplete series would leave a schema no code version expects.
    """
    directory = source if source is not None else resources.files("bangd.store") / "migrations"
    found: list[Migration] = []
    for entry in directory.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise MigrationError(
                f"migration file {entry.name!r} is not named NNNN_name.sql "
                "(4 digits, lowercase name): rename it"
            )
        found.append(
            Migration(int(match["version"]), match["name"], entry.read_text(encoding="utf-8"))
        )
    found.sort(key=lambda migration: migration.version)
    check_sequence(found)
    return found


def check_sequence(migrations: Sequence[Migration]) -> None:
    """Raise MigrationError unless versions run 1, 2, 3, ... with unique names."""
    names: set[str] = set()
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            problem = "duplicate" if migration.version < expected else "missing"
            raise MigrationError(
                f"migrations are not contiguous: expected version {expected:04d} but found "
                f"{migration.filename} ({problem} number): renumber the migration files"
            )
        if migration.name in names:
            raise MigrationError(
                f"migration name {migration.name!r} is used twice (at {migration.filename}): "
                "give each migration a unique name"
            )
        names.add(migration.name)


def split_statements(migration: Migration) -> list[Statement]:
    """Split a migration's SQL into statements, keeping trigger bodies and literals intact.

    Split ourselves instead of using executescript() because executescript() commits any open
    transaction first, which would break "one migration, one transaction".
    """
    sql = migration.sql
    statements: list[Statement] = []
    start = 0
    for index, char in enumerate(sql):
        if char == ";" and sqlite3.complete_statement(sql[start : index + 1]):
            _add_statement(statements, migration, sql, start, index + 1)
            start = index + 1
    _add_statement(statements, migration, sql, start, len(sql))
    return statements


def _add_statement(
    statements: list[Statement], migration: Migration, sql: str, start: int, end: int
) -> None:
    chunk = sql[start:end]
    body_offset = _LEADING_COMMENTS.match(chunk)
    body = chunk[body_offset.end() if body_offset else 0 :]
    if not body.strip(" \t\r\n;"):
        return
    line = sql.count("\n", 0, start + len(chunk) - len(body)) + 1
    first_word = body.split(None, 1)[0].rstrip(";").upper()
    if first_word in _FORBIDDEN_FIRST_WORDS:
        raise MigrationError(
            f"{migration.filename} line {line}: {first_word} is not allowed in a migration "
            "because the runner wraps each file in one transaction: remove it"
        )
    statements.append(Statement(line, chunk))


# ---------------------------------------------------------------------------------------
# Inspection


async def applied_version(conn: aiosqlite.Connection) -> int:
    """The schema version the database is at (0 for a database bangd never migrated).

    Raises MigrationError when the ledger and ``user_version`` disagree: that database was
    changed behind bangd's back, and guessing which one is right could lose data.
    """
    user_version = await _fetch_int(conn, "PRAGMA user_version")
    if not await _table_exists(conn, LEDGER_TABLE):
        if user_version != 0:
            raise MigrationError(
                f"database {await _describe(conn)} has user_version {user_version} but no "
                f"{LEDGER_TABLE} table: it is not a bangd database; point database: elsewhere"
            )
        return 0
    versions = [
        int(row[0])
        for row in await conn.execute_fetchall(
            f"SELECT version FROM {LEDGER_TABLE} ORDER BY version"
        )
    ]
    if versions != list(range(1, len(versions) + 1)) or user_version != len(versions):
        raise MigrationError(
            f"database {await _describe(conn)} is inconsistent: {LEDGER_TABLE} lists versions "
            f"{versions} but user_version is {user_version}: restore a backup"
        )
    return user_version


async def pending(
    conn: aiosqlite.Connection, *, migrations: Sequence[Migration] | None = None
) -> list[Migration]:
    """The migrations not yet applied, oldest first; refuses a database newer than the code."""
    known = await _resolve(migrations)
    current = await applied_version(conn)
    await _refuse_unknown_database(conn, current, known)
    return list(known[current:])


# ---------------------------------------------------------------------------------------
# Applying


async def apply(
    conn: aiosqlite.Connection,
    *,
    target: int | None = None,
    db_path: str | None = None,
    backup_dir: str | None = None,
    clock: Callable[[], float] = time.time,
    migrations: Sequence[Migration] | None = None,
) -> list[Migration]:
    """Apply pending migrations up to ``target`` (default: the newest); return those applied.

    ``db_path`` names the database in messages and places the backup; by default it is read
    from the connection. ``migrations`` replaces the shipped set (tests inject broken ones).
    ``clock`` stamps the ledger and the backup name (UTC).
    """
    known = await _resolve(migrations)
    if target is not None and not 0 <= target <= len(known):
        raise ValueError(f"target {target} is outside 0..{len(known)}")
    path = db_path if db_path is not None else await _main_file(conn)
    current = await applied_version(conn)
    await _refuse_unknown_database(conn, current, known, path)
    todo = list(known[current : len(known) if target is None else target])
    if not todo:
        log.debug("db=%s schema_version=%d up_to_date", path, current)
        return []
    if current >= 1:
        await take_backup(conn, path, current, backup_dir=backup_dir, clock=clock)
    foreign_keys_were_on = bool(await _fetch_int(conn, "PRAGMA foreign_keys"))
    await conn.execute("PRAGMA foreign_keys=OFF")
    try:
        for migration in todo:
            await _apply_one(conn, migration, path, clock)
    finally:
        if foreign_keys_were_on:
            await finish_despite_cancel(conn.execute("PRAGMA foreign_keys=ON"))
    return todo


async def _apply_one(
    conn: aiosqlite.Connection, migration: Migration, path: str, clock: Callable[[], float]
) -> None:
    """Run one migration, its ledger row and user_version bump as a single transaction."""
    previous = migration.version - 1
    started = time.monotonic()
    statements = split_statements(migration)
    await finish_despite_cancel(conn.execute("BEGIN IMMEDIATE"))
    try:
        await conn.execute(_CREATE_LEDGER)
        for statement in statements:
            try:
                await conn.execute(statement.sql)
            except sqlite3.Error as exc:
                raise MigrationError(
                    f"migration {migration.filename} failed at line {statement.line}: {exc}; "
                    f"database {path} is still at schema version {previous}: "
                    "fix the migration or restore a backup"
                ) from exc
        await _check_foreign_keys(conn, migration, path, previous)
        await conn.execute(
            f"INSERT INTO {LEDGER_TABLE} (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, clock()),
        )
        await conn.execute(f"PRAGMA user_version = {int(migration.version)}")
        await finish_despite_cancel(conn.execute("COMMIT"))
    except BaseException:
        await rollback_quietly(conn)
        raise
    log.info(
        "migration=%s from=%d to=%d took=%.2fs",
        migration.label,
        previous,
        migration.version,
        time.monotonic() - started,
    )


async def _check_foreign_keys(
    conn: aiosqlite.Connection, migration: Migration, path: str, previous: int
) -> None:
    violations = list(await conn.execute_fetchall("PRAGMA foreign_key_check"))
    if violations:
        first = violations[0]
        raise MigrationError(
            f"migration {migration.filename} leaves foreign key violations (first: table "
            f"{first[0]} rowid {first[1]} -> {first[2]}); database {path} is still at schema "
            f"version {previous}: fix the migration"
        )


async def take_backup(
    conn: aiosqlite.Connection,
    db_path: str,
    version: int,
    *,
    backup_dir: str | None = None,
    clock: Callable[[], float] = time.time,
) -> str | None:
    """Copy the database online to ``<db>.v<version>-<UTC stamp>.bak``; return that path.

    Returns None for a database without a file (``:memory:``): there is nothing to restore.
    """
    if not db_path or db_path == ":memory:":
        log.info("db=%s backup=skipped reason=no_file", db_path or ":memory:")
        return None
    dest = await asyncio.to_thread(_backup_path, db_path, version, backup_dir, clock())
    try:
        await conn.execute("VACUUM INTO ?", (dest,))
    except sqlite3.Error as exc:
        raise MigrationError(
            f"cannot back up database {db_path} to {dest} before migrating: {exc}; "
            "free disk space or set a writable backup directory"
        ) from exc
    await asyncio.to_thread(_copy_mode, db_path, dest)
    log.info("db=%s backup=%s schema_version=%d", db_path, dest, version)
    return dest


def _backup_path(db_path: str, version: int, backup_dir: str | None, now: float) -> str:
    """A backup file name that does not exist yet (VACUUM INTO refuses to overwrite)."""
    directory = backup_dir if backup_dir is not None else os.path.dirname(db_path) or "."
    os.makedirs(directory, mode=0o750, exist_ok=True)
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
    base = os.path.join(directory, f"{os.path.basename(db_path)}.v{version}-{stamp}")
    candidate = f"{base}.bak"
    suffix = 1
    while os.path.exists(candidate):
        candidate = f"{base}-{suffix}.bak"
        suffix += 1
    return candidate


def _copy_mode(source: str, dest: str) -> None:
    """Give the backup the database's permissions: it holds the same data."""
    try:
        os.chmod(dest, os.stat(source).st_mode & 0o777)
    except OSError as exc:
        log.warning("backup=%s chmod_failed=%s", dest, exc)


# ---------------------------------------------------------------------------------------
# Internals


async def _resolve(migrations: Sequence[Migration] | None) -> Sequence[Migration]:
    if migrations is None:
        return await asyncio.to_thread(available)
    check_sequence(migrations)
    return migrations


async def _refuse_unknown_database(
    conn: aiosqlite.Connection,
    current: int,
    known: Sequence[Migration],
    path: str | None = None,
) -> None:
    """Refuse a database newer than this code, or one holding someone else's tables."""
    where = path if path is not None else await _describe(conn)
    if current > len(known):
        raise MigrationError(
            f"database {where} is at schema version {current} but this bangd only knows up to "
            f"{len(known)}: upgrade bangd or restore a backup"
        )
    if current == 0:
        foreign = [
            str(row[0])
            for row in await conn.execute_fetchall(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name != ? ORDER BY name",
                (LEDGER_TABLE,),
            )
        ]
        if foreign:
            raise MigrationError(
                f"database {where} already holds tables ({', '.join(foreign)}) but no bangd "
                "schema: it is not a bangd database; point database: at a new file"
            )


async def _table_exists(conn: aiosqlite.Connection, table: str) -> bool:
    rows = await conn.execute_fetchall(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    )
    return bool(tuple(rows))


async def _fetch_int(conn: aiosqlite.Connection, sql: str) -> int:
    rows = tuple(await conn.execute_fetchall(sql))
    return int(rows[0][0])


async def _main_file(conn: aiosqlite.Connection) -> str:
    """The file behind the connection's main database ('' for an in-memory one)."""
    for row in await conn.execute_fetchall("PRAGMA database_list"):
        if row[1] == "main":
            return str(row[2] or "")
    return ""


async def _describe(conn: aiosqlite.Connection) -> str:
    return await _main_file(conn) or ":memory:"
