"""Schema migrations: discovery, one transaction per file, refusals, backups, and upgrades
that keep every row (from every earlier shipped version)."""

from __future__ import annotations

import hashlib
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bangd.errors import MigrationError
from bangd.store.db import Database
from bangd.store.imports import ImportStore
from bangd.store.migrate import (
    Migration,
    applied_version,
    apply,
    available,
    pending,
    split_statements,
)

SHIPPED = available()
LATEST = len(SHIPPED)
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "bangd" / "store" / "migrations"
DATA_DIR = Path(__file__).resolve().parent / "migration_data"
FIXED_NOW = 1704164645.0  # 2024-01-02 03:04:05 UTC
INSERT_JOB = "INSERT INTO job_state (name, failures) VALUES (?, ?)"

Contents = dict[str, tuple[list[str], list[tuple[Any, ...]]]]


@asynccontextmanager
async def raw_connection(path: Path) -> AsyncIterator[aiosqlite.Connection]:
    """A bare aiosqlite connection, so the runner is tested without Database around it."""
    conn = await aiosqlite.connect(str(path), isolation_level=None)
    try:
        yield conn
    finally:
        await conn.close()


def then(*extra: Migration) -> list[Migration]:
    """The shipped migrations followed by test-only ones numbered after them."""
    return [*SHIPPED, *extra]


def next_migration(name: str, sql: str, offset: int = 1) -> Migration:
    return Migration(LATEST + offset, name, sql)


def table_contents(path: Path) -> Contents:
    """Every table's columns and rows, read with plain sqlite3 (independent of the code)."""
    with closing(sqlite3.connect(path)) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        contents: Contents = {}
        for table in tables:
            cursor = conn.execute(f'SELECT * FROM "{table}"')
            contents[table] = ([d[0] for d in cursor.description], cursor.fetchall())
        return contents


def user_version(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def backups_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".bak"))


async def database_at_v1_with_jobs(path: Path) -> None:
    async with raw_connection(path) as conn:
        await apply(conn, target=1)
        await conn.executemany(INSERT_JOB, [("import:a", 0), ("retention", 2)])


# -- discovery ------------------------------------------------------------------------------


def test_shipped_migrations_are_numbered_contiguously_from_one() -> None:
    assert [m.version for m in SHIPPED] == list(range(1, LATEST + 1))
    assert [m.filename for m in SHIPPED] == sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql"))
    assert SHIPPED[0].label == "0001_init"


def test_every_shipped_migration_has_a_data_file_for_the_upgrade_test() -> None:
    missing = [m.filename for m in SHIPPED if not (DATA_DIR / f"{m.version:04d}.sql").is_file()]
    assert missing == [], f"add tests/migration_data/NNNN.sql with rows for {missing}"


def test_discovery_refuses_a_gap_in_the_numbers(tmp_path: Path) -> None:
    (tmp_path / "0001_init.sql").write_text("CREATE TABLE a (x);")
    (tmp_path / "0003_later.sql").write_text("CREATE TABLE c (x);")
    with pytest.raises(MigrationError, match=r"expected version 0002 .*0003_later\.sql"):
        available(tmp_path)


def test_discovery_refuses_a_duplicate_number(tmp_path: Path) -> None:
    (tmp_path / "0001_init.sql").write_text("CREATE TABLE a (x);")
    (tmp_path / "0001_other.sql").write_text("CREATE TABLE b (x);")
    with pytest.raises(MigrationError, match="duplicate"):
        available(tmp_path)


def test_discovery_refuses_a_misnamed_sql_file(tmp_path: Path) -> None:
    (tmp_path / "0001_init.sql").write_text("CREATE TABLE a (x);")
    (tmp_path / "2-imports.sql").write_text("CREATE TABLE b (x);")
    with pytest.raises(MigrationError, match=r"2-imports\.sql"):
        available(tmp_path)


def test_transaction_statements_in_a_migration_file_are_refused() -> None:
    with pytest.raises(MigrationError, match=r"0009_bad\.sql line 2: COMMIT"):
        split_statements(Migration(9, "bad", "CREATE TABLE a (x);\nCOMMIT;"))


# -- applying -------------------------------------------------------------------------------


async def test_fresh_database_is_migrated_to_the_newest_version(tmp_path: Path) -> None:
    path = tmp_path / "bangd.db"
    db = await Database.open(str(path))
    assert db.schema_version == LATEST
    assert await db.fetchval("SELECT count(*) FROM job_state") == 0
    await db.close()
    ledger = table_contents(path)["schema_migrations"][1]
    assert [(version, name) for version, name, _ in ledger] == [
        (m.version, m.name) for m in SHIPPED
    ]
    assert user_version(path) == LATEST


async def test_second_open_applies_nothing_and_takes_no_backup(tmp_path: Path) -> None:
    path = tmp_path / "bangd.db"
    await (await Database.open(str(path))).close()
    ledger_before = table_contents(path)["schema_migrations"]
    db = await Database.open(str(path))
    async with raw_connection(path) as conn:
        assert await pending(conn) == []
    await db.close()
    assert table_contents(path)["schema_migrations"] == ledger_before
    assert backups_in(tmp_path) == []


async def test_apply_stops_at_the_target_version(tmp_path: Path) -> None:
    two = Migration(2, "two", "CREATE TABLE two (x);")
    async with raw_connection(tmp_path / "bangd.db") as conn:
        assert await apply(conn, target=1, migrations=[SHIPPED[0], two]) == [SHIPPED[0]]
        assert await applied_version(conn) == 1
        assert await pending(conn, migrations=[SHIPPED[0], two]) == [two]


async def test_database_newer_than_this_code_is_refused_and_left_untouched(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bangd.db"
    db = await Database.open(str(path))
    await db.migrate(migrations=then(next_migration("future", "CREATE TABLE future (x);")))
    await db.execute(INSERT_JOB, ("retention", 1))
    await db.close()
    digest = sha256(path)
    with pytest.raises(MigrationError) as info:
        await Database.open(str(path))
    assert str(info.value) == (
        f"database {path} is at schema version {LATEST + 1} but this bangd only knows up to "
        f"{LATEST}: upgrade bangd or restore a backup"
    )
    assert sha256(path) == digest


async def test_failed_migration_leaves_the_database_at_its_previous_version_with_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bangd.db"
    await database_at_v1_with_jobs(path)
    before = table_contents(path)
    broken = Migration(2, "broken", "CREATE TABLE half_done (x);\nINSERT INTO missing VALUES (1);")
    async with raw_connection(path) as conn:
        with pytest.raises(MigrationError) as info:
            await apply(conn, migrations=[SHIPPED[0], broken])
        assert not conn.in_transaction
        assert await applied_version(conn) == 1
    message = str(info.value)
    assert "0002_broken.sql failed at line 2: no such table: missing" in message
    assert "still at schema version 1" in message
    assert table_contents(path) == before


async def test_migration_leaving_foreign_key_violations_is_rolled_back(tmp_path: Path) -> None:
    orphan = next_migration(
        "orphans",
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);\n"
        "CREATE TABLE child (parent_id INTEGER REFERENCES parent (id));\n"
        "INSERT INTO child VALUES (42);",
    )
    path = tmp_path / "bangd.db"
    async with raw_connection(path) as conn:
        await conn.execute("PRAGMA foreign_keys=ON")
        with pytest.raises(MigrationError, match="foreign key violations"):
            await apply(conn, migrations=then(orphan))
        assert await applied_version(conn) == LATEST
        assert (await (await conn.execute("PRAGMA foreign_keys")).fetchone()) == (1,)
    assert "child" not in table_contents(path)


async def test_triggers_and_semicolons_in_literals_survive_statement_splitting(
    tmp_path: Path,
) -> None:
    audit = next_migration(
        "audit",
        "-- a comment; with a semicolon\n"
        "CREATE TABLE audit (note TEXT);\n"
        "CREATE TRIGGER job_audit AFTER INSERT ON job_state BEGIN\n"
        "    INSERT INTO audit VALUES ('added; ' || NEW.name);\n"
        "END;\n"
        "INSERT INTO audit VALUES ('a;b');  -- trailing comment\n",
    )
    path = tmp_path / "bangd.db"
    async with raw_connection(path) as conn:
        await apply(conn, migrations=then(audit))
        await conn.execute(INSERT_JOB, ("retention", 0))
    assert table_contents(path)["audit"][1] == [("a;b",), ("added; retention",)]


async def test_backup_is_taken_before_migrating_a_non_empty_database(tmp_path: Path) -> None:
    path = tmp_path / "bangd.db"
    await database_at_v1_with_jobs(path)
    before = table_contents(path)
    extra = Migration(2, "extra", "CREATE TABLE extra (x);")
    async with raw_connection(path) as conn:
        await apply(conn, migrations=[SHIPPED[0], extra], clock=lambda: FIXED_NOW)
    backup = tmp_path / "bangd.db.v1-20240102030405.bak"
    assert backups_in(tmp_path) == [backup.name]
    assert user_version(backup) == 1
    assert table_contents(backup) == before


async def test_backup_goes_to_the_backup_dir_when_one_is_given(tmp_path: Path) -> None:
    path = tmp_path / "bangd.db"
    await database_at_v1_with_jobs(path)
    extra = Migration(2, "extra", "CREATE TABLE extra (x);")
    async with raw_connection(path) as conn:
        await apply(
            conn,
            migrations=[SHIPPED[0], extra],
            backup_dir=str(tmp_path / "backups"),
            clock=lambda: FIXED_NOW,
        )
    assert backups_in(tmp_path / "backups") == ["bangd.db.v1-20240102030405.bak"]
    assert backups_in(tmp_path) == []


async def test_fresh_database_gets_no_backup(tmp_path: Path) -> None:
    await (await Database.open(str(tmp_path / "bangd.db"))).close()
    assert backups_in(tmp_path) == []


async def test_database_of_another_program_is_refused_and_left_untouched(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fail2ban.sqlite3"
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE bans (jail TEXT, ip TEXT)")
        conn.execute("INSERT INTO bans VALUES ('sshd', '192.0.2.1')")
    before = table_contents(path)
    with pytest.raises(MigrationError, match=r"holds tables \(bans\).*not a bangd database"):
        await Database.open(str(path))
    assert table_contents(path) == before


# -- upgrades keep data ---------------------------------------------------------------------


def load_rows_up_to(path: Path, version: int) -> None:
    """Insert each version's sample rows, at the schema they were written for."""
    with closing(sqlite3.connect(path)) as conn:
        for data_version in range(1, version + 1):
            data_file = DATA_DIR / f"{data_version:04d}.sql"
            assert data_file.is_file(), f"add {data_file} with rows for migration {data_version}"
            conn.executescript(data_file.read_text(encoding="utf-8"))


def rows_projected(contents: Contents, table: str, columns: list[str]) -> Counter[tuple[Any, ...]]:
    """The table's rows restricted to ``columns``: later versions may add columns."""
    after_columns, rows = contents[table]
    missing = [c for c in columns if c not in after_columns]
    assert missing == [], f"upgrade dropped columns {missing} of table {table}"
    positions = [after_columns.index(c) for c in columns]
    return Counter(tuple(row[i] for i in positions) for row in rows)


@pytest.mark.parametrize("version", range(LATEST), ids=lambda v: f"from_v{v}")
async def test_upgrade_from_an_earlier_version_keeps_every_row(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / "bangd.db"
    async with raw_connection(path) as conn:
        await apply(conn, target=version)
    load_rows_up_to(path, version)
    before = table_contents(path)
    if version >= 1:
        assert sum(len(rows) for _, rows in before.values()) > version, "data files are empty"

    db = await Database.open(str(path))
    assert db.schema_version == LATEST
    await db.close()

    after = table_contents(path)
    for table, (columns, rows) in before.items():
        assert table in after, f"upgrade from v{version} dropped table {table}"
        still_there = rows_projected(after, table, columns)
        lost = Counter(rows) - still_there
        assert not lost, f"upgrade from v{version} lost rows of {table}: {sorted(lost)}"


async def test_pending_rows_of_an_older_bangd_become_batches_recovery_still_sees(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bangd.db"
    async with raw_connection(path) as conn:
        await apply(conn, target=4)
    with closing(sqlite3.connect(path)) as raw, raw:
        raw.execute(
            "INSERT INTO applied (jail, entry, source, state, owned, run_id) VALUES"
            " ('bl', '203.0.113.1', 'a', 'pending', 1, NULL),"
            " ('bl', '203.0.113.2', 'a', 'pending', 1, NULL),"
            " ('bl', '203.0.113.3', 'a', 'applied', 1, NULL)"
        )
    db = await Database.open(str(path))
    try:
        store = ImportStore(db)
        unfinished = sorted((u.entry, u.state) for u in await store.unfinished("a"))
        assert unfinished == [("203.0.113.1", "pending"), ("203.0.113.2", "pending")]
        assert await store.entries_of("a", "bl") == ["203.0.113.3"]
        await store.settle("a", "bl", arrived=["203.0.113.2"], lost=["203.0.113.1"])
        assert await store.unfinished("a") == []
        assert await store.entries_of("a", "bl") == ["203.0.113.2", "203.0.113.3"]
    finally:
        await db.close()
