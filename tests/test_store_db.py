"""The shared SQLite connection: pragmas, transactions, and writes that never interleave."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from pathlib import Path

import pytest

from bangd.errors import MigrationError
from bangd.store.db import Database

INSERT_JOB = "INSERT INTO job_state (name) VALUES (?)"
# Long enough that a cancel lands while aiosqlite's thread is still running it.
SLOW_INSERT = (
    "INSERT INTO job_state (name, failures) "
    "SELECT 'slow', count(*) FROM (WITH RECURSIVE n(x) AS "
    "(SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 300000) SELECT x FROM n)"
)


class Boom(Exception):
    pass


async def job_names(db: Database) -> list[str]:
    return [row["name"] for row in await db.fetchall("SELECT name FROM job_state ORDER BY name")]


async def test_open_sets_wal_foreign_keys_busy_timeout_and_normal_sync(db: Database) -> None:
    assert await db.fetchval("PRAGMA journal_mode") == "wal"
    assert await db.fetchval("PRAGMA foreign_keys") == 1
    assert await db.fetchval("PRAGMA busy_timeout") == 5000
    assert await db.fetchval("PRAGMA synchronous") == 1  # NORMAL


async def test_rows_come_back_addressable_by_column_name(db: Database) -> None:
    await db.execute(INSERT_JOB, ("retention",))
    row = await db.fetchone("SELECT name, failures FROM job_state")
    assert row is not None
    assert (row["name"], row["failures"]) == ("retention", 0)


async def test_open_creates_the_missing_parent_directory_as_0750(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "bangd" / "bangd.db"
    db = await Database.open(str(path))
    await db.close()
    assert path.is_file()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750


async def test_execute_returns_the_rowcount(db: Database) -> None:
    await db.executemany(INSERT_JOB, [("a",), ("b",), ("c",)])
    assert await db.execute("UPDATE job_state SET failures = 1 WHERE name != 'a'") == 2


async def test_fetchval_returns_none_when_there_is_no_row(db: Database) -> None:
    assert await db.fetchval("SELECT name FROM job_state") is None


async def test_transaction_commits_when_the_block_ends(db: Database) -> None:
    async with db.transaction():
        await db.execute(INSERT_JOB, ("a",))
        await db.execute(INSERT_JOB, ("b",))
    assert not db.in_transaction
    assert await job_names(db) == ["a", "b"]


async def test_transaction_rolls_back_when_the_block_raises(db: Database) -> None:
    with pytest.raises(Boom):
        async with db.transaction():
            await db.execute(INSERT_JOB, ("a",))
            raise Boom
    assert not db.in_transaction
    assert await job_names(db) == []


async def test_cancelled_task_waiting_in_a_transaction_leaves_nothing_behind(
    db: Database,
) -> None:
    inside = asyncio.Event()

    async def writer() -> None:
        async with db.transaction():
            await db.execute(INSERT_JOB, ("a",))
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(writer())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not db.in_transaction
    assert await job_names(db) == []


async def test_cancel_during_a_running_statement_still_rolls_back(db: Database) -> None:
    queued = asyncio.Event()

    async def writer() -> None:
        async with db.transaction():
            await db.execute(INSERT_JOB, ("a",))
            queued.set()  # nothing yields between here and handing SLOW_INSERT to the thread
            await db.execute(SLOW_INSERT)

    task = asyncio.create_task(writer())
    await queued.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not db.in_transaction
    assert await job_names(db) == []
    async with db.transaction():  # and the lock was released
        await db.execute(INSERT_JOB, ("after",))
    assert await job_names(db) == ["after"]


async def test_transactions_of_two_tasks_do_not_interleave(db: Database) -> None:
    order: list[str] = []
    a_inside, b_waiting, release_a = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def task_a() -> None:
        async with db.transaction():
            order.append("a-begin")
            await db.execute(INSERT_JOB, ("a1",))
            a_inside.set()
            await release_a.wait()
            await db.execute(INSERT_JOB, ("a2",))
            order.append("a-end")

    async def task_b() -> None:
        await a_inside.wait()
        b_waiting.set()
        async with db.transaction():
            order.append("b-begin")
            await db.execute(INSERT_JOB, ("b1",))
            order.append("b-end")

    running = [asyncio.create_task(task_a()), asyncio.create_task(task_b())]
    await b_waiting.wait()
    assert order == ["a-begin"]
    release_a.set()
    await asyncio.gather(*running)
    assert order == ["a-begin", "a-end", "b-begin", "b-end"]
    assert await job_names(db) == ["a1", "a2", "b1"]


async def test_write_outside_a_transaction_waits_for_another_tasks_transaction(
    db: Database,
) -> None:
    a_inside, b_waiting, release_a = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def failing_transaction() -> None:
        async with db.transaction():
            await db.execute(INSERT_JOB, ("a",))
            a_inside.set()
            await release_a.wait()
            raise Boom

    async def plain_write() -> None:
        await a_inside.wait()
        b_waiting.set()
        await db.execute(INSERT_JOB, ("b",))

    a = asyncio.create_task(failing_transaction())
    b = asyncio.create_task(plain_write())
    await b_waiting.wait()
    assert not b.done()
    release_a.set()
    with pytest.raises(Boom):
        await a
    await b
    # Had b's insert slipped into a's transaction, the rollback would have taken it too.
    assert await job_names(db) == ["b"]


async def test_nested_transaction_joins_the_outer_one(db: Database) -> None:
    with pytest.raises(Boom):
        async with db.transaction():
            await db.execute(INSERT_JOB, ("outer",))
            async with db.transaction():
                await db.execute(INSERT_JOB, ("inner",))
            assert db.in_transaction
            raise Boom
    assert await job_names(db) == []


async def test_tasks_started_inside_a_transaction_write_into_it(db: Database) -> None:
    # Were the children to wait for the lock their parent holds, this would deadlock.
    async with asyncio.timeout(5), db.transaction(), asyncio.TaskGroup() as group:
        group.create_task(db.execute(INSERT_JOB, ("child-1",)))
        group.create_task(db.execute(INSERT_JOB, ("child-2",)))
    assert await job_names(db) == ["child-1", "child-2"]


async def test_executemany_outside_a_transaction_is_all_or_nothing(db: Database) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        await db.executemany(INSERT_JOB, [("a",), ("b",), ("a",)])
    assert await job_names(db) == []
    assert await db.executemany(INSERT_JOB, [("a",), ("b",)]) == 2


async def test_backup_to_writes_a_readable_copy(db: Database, tmp_path: Path) -> None:
    await db.execute(INSERT_JOB, ("retention",))
    copy = tmp_path / "copy.db"
    await db.backup_to(str(copy))
    with sqlite3.connect(copy) as conn:
        assert conn.execute("SELECT name FROM job_state").fetchall() == [("retention",)]
        assert conn.execute("PRAGMA user_version").fetchone() == (db.schema_version,)


async def test_close_twice_is_harmless(tmp_path: Path) -> None:
    db = await Database.open(str(tmp_path / "bangd.db"))
    await db.close()
    await db.close()


async def test_non_sqlite_file_is_refused_with_its_path_and_left_untouched(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bangd.db"
    content = b"# this is a YAML file, not a database\n" * 200
    path.write_bytes(content)
    with pytest.raises(MigrationError) as info:
        await Database.open(str(path))
    message = str(info.value)
    assert str(path) in message
    assert "not a database" in message
    assert "\n" not in message
    assert path.read_bytes() == content


async def test_directory_in_place_of_the_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bangd.db"
    path.mkdir()
    with pytest.raises(MigrationError, match="cannot"):
        await Database.open(str(path))
    assert path.is_dir()


async def test_the_reader_sees_each_commit_never_waits_for_a_write_and_cannot_write(
    tmp_path: Path,
) -> None:
    db = await Database.open(str(tmp_path / "bangd.db"))
    reader = await db.reader()
    try:
        await db.execute("INSERT INTO exemptions (network, created) VALUES ('192.0.2.1/32', 1)")
        assert await reader.fetchcolumn("SELECT network FROM exemptions") == ["192.0.2.1/32"]
        async with db.transaction():
            await db.execute("DELETE FROM exemptions")
            # The writer's transaction is open: the reader answers from the last commit.
            assert await asyncio.wait_for(
                reader.fetchcolumn("SELECT network FROM exemptions"), 5
            ) == ["192.0.2.1/32"]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await reader.execute("DELETE FROM exemptions")
    finally:
        await reader.close()
        await db.close()
