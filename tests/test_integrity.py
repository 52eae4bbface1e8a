"""A damaged database is noticed: at start, on the timer, at the first corrupt read."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import subprocess
import textwrap
from pathlib import Path

import pytest

from bangd.store.db import Database
from bangd.store.integrity import DatabaseCorrupt, quick_check
from tests.daemon_process import DaemonProcess
from tests.shortdir import short_tmpdir


async def filled_database(path: Path) -> None:
    db = await Database.open(str(path))
    await db.execute("CREATE TABLE filler (n INTEGER PRIMARY KEY, blob BLOB)")
    await db.executemany("INSERT INTO filler (blob) VALUES (?)",
                         ((os.urandom(200),) for _ in range(20_000)))
    await db.close()


def damage(path: Path) -> str:
    """64 KiB of garbage in the middle of the file; return the file's digest afterwards."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2 // 4096 * 4096)
        f.write(b"\xa5\x5a" * 32768)
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_sound_database_passes_the_check(tmp_path: Path) -> None:
    await filled_database(tmp_path / "db.sqlite")
    report = await quick_check(str(tmp_path / "db.sqlite"), budget=30)
    assert report.ok and report.complete


async def test_a_damaged_database_is_refused_at_open_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    await filled_database(path)
    digest = damage(path)
    with pytest.raises(DatabaseCorrupt) as err:
        await Database.open(str(path), integrity_budget=30)
    assert str(path) in str(err.value)
    assert "RECOVERY" in str(err.value)
    assert "\n" not in str(err.value)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


async def test_a_check_out_of_time_is_unfinished_not_failed(tmp_path: Path) -> None:
    await filled_database(tmp_path / "db.sqlite")
    report = await quick_check(str(tmp_path / "db.sqlite"), budget=0.0)
    assert report.ok and not report.complete


async def test_the_first_corrupt_read_is_reported_once(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    await filled_database(path)
    damage(path)
    db = await Database.open(str(path), migrate=False)  # no check: find it at runtime
    seen: list[Exception] = []
    db.on_corrupt = seen.append
    try:
        for _ in range(2):
            with pytest.raises(sqlite3.DatabaseError):
                await db.fetchall("SELECT sum(length(blob)) FROM filler")
    finally:
        await db.close()
    assert len(seen) == 1


def test_bangd_refuses_to_start_on_a_damaged_database_with_one_line(
    tmp_path: Path,
) -> None:
    with short_tmpdir("bangd-integrity-") as d:
        proc = DaemonProcess(d, {"fail2ban": {"socket": os.path.join(d, "none.sock")}})
        try:
            proc.start()
            proc.wait_for("READY=1")
            proc.signal(signal.SIGTERM)
            assert proc.wait_exit(15) == 0
            db_path = Path(proc.config["database"])
            with sqlite3.connect(db_path) as conn:
                conn.execute("CREATE TABLE filler (blob BLOB)")
                conn.executemany("INSERT INTO filler VALUES (?)",
                                 ((os.urandom(200),) for _ in range(20_000)))
            conn.close()
            damage(db_path)
            proc.messages.clear()
            proc.start()
            assert proc.wait_exit(30) == 1
            errors = [line for line in proc.log_text().splitlines() if "is damaged" in line]
            assert len(errors) == 1, proc.log_text()[-3000:]
            assert str(db_path) in errors[0]
            with contextlib.suppress(AssertionError):
                proc.wait_for("nothing more", timeout=0.5)  # collects what bangd sent
            assert "READY=1" not in proc.messages

            run_documented_recovery(db_path)
            proc.messages.clear()
            proc.start()
            proc.wait_for("READY=1")
            proc.signal(signal.SIGTERM)
            assert proc.wait_exit(15) == 0
            with sqlite3.connect(db_path) as conn:
                salvaged = conn.execute("SELECT count(*) FROM filler").fetchone()[0]
            conn.close()
            assert 15_000 < salvaged < 20_000
        finally:
            proc.close()


def run_documented_recovery(db_path: Path) -> None:
    """The shell block under 'A damaged database' in docs/reliability.md, as written."""
    text = (Path(__file__).parent.parent / "docs" / "reliability.md").read_text()
    section = text.split("## A damaged database", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    script = textwrap.dedent(block).replace("DB=/var/lib/bangd/bangd.db", f"DB={db_path}")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


async def test_a_file_that_cannot_be_opened_is_not_called_damaged(tmp_path: Path) -> None:
    report = await quick_check(str(tmp_path / "missing" / "db.sqlite"), budget=5)
    assert report.ok and not report.complete
    assert report.problems[0].startswith("not checked: ")

