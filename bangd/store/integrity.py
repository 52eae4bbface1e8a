"""Is the database file sound? `PRAGMA quick_check`, bounded in time, on its own connection.

Measured: with 64 KiB of garbage written into the middle of the file, bangd used to start,
send READY=1 and then answer `status` with `internal: database disk image is malformed`
while every reconcile failed: the service looked healthy and bans were no longer kept up.
So the file is checked before bangd starts and again on a slow timer, and the first
SQLITE_CORRUPT a statement meets stops the daemon (see `is_corruption`).

The check opens its own read-only connection in a thread: it never holds the daemon's
connection or the event loop, and WAL lets it read while the daemon writes. A progress
handler stops it after `budget` seconds, so a big database cannot delay a start for long;
an unfinished check says so and counts as passed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import urllib.parse
from dataclasses import dataclass

from ..errors import BangdError

SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26
SQLITE_INTERRUPT = 9
_PROGRESS_STEPS = 10_000  # VM instructions between deadline checks (~1 ms)
_SHOWN_PROBLEMS = 3


class DatabaseCorrupt(BangdError):
    """The database file is damaged; bangd refuses to run on it (nothing is deleted)."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        lines = [line.strip() for line in detail.splitlines() if line.strip()]
        self.detail = "; ".join(lines[:2]) + (f"; +{len(lines) - 2} more" if len(lines) > 2
                                              else "")
        super().__init__(
            f"database {path} is damaged ({self.detail}); bangd will not run on it and has "
            "changed nothing: stop bangd and recover the file as `man bangd` describes "
            "under RECOVERY"
        )


@dataclass(frozen=True)
class IntegrityReport:
    ok: bool
    complete: bool  # False: the budget ran out before the check finished
    problems: tuple[str, ...]
    took: float


def is_corruption(exc: BaseException) -> bool:
    """Whether an sqlite3 error says the file itself is damaged (not locked, not full)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)
    return isinstance(exc, sqlite3.DatabaseError) and "malformed" in str(exc)


def _not_checked(exc: Exception, started: float) -> IntegrityReport:
    """The file could not be read (permissions, no file descriptors, locked): that says
    nothing about damage, so the check counts as unfinished, not failed."""
    return IntegrityReport(True, False, (f"not checked: {exc}",), time.monotonic() - started)


def _quick_check(path: str, budget: float, stop: threading.Event) -> IntegrityReport:
    started = time.monotonic()
    deadline = started + budget
    uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        if is_corruption(exc):
            return IntegrityReport(False, True, (str(exc),), time.monotonic() - started)
        return _not_checked(exc, started)
    try:
        conn.set_progress_handler(
            lambda: int(stop.is_set() or time.monotonic() > deadline), _PROGRESS_STEPS
        )
        try:
            rows = conn.execute(f"PRAGMA quick_check({_SHOWN_PROBLEMS})").fetchall()
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) == SQLITE_INTERRUPT or (
                "interrupted" in str(exc)
            ):
                return IntegrityReport(True, False, (), time.monotonic() - started)
            if is_corruption(exc):
                return IntegrityReport(False, True, (str(exc),), time.monotonic() - started)
            return _not_checked(exc, started)
        except sqlite3.DatabaseError as exc:
            if is_corruption(exc):
                return IntegrityReport(False, True, (str(exc),), time.monotonic() - started)
            return _not_checked(exc, started)
    finally:
        conn.close()
    problems = tuple(str(row[0]) for row in rows if row[0] != "ok")
    return IntegrityReport(not problems, True, problems, time.monotonic() - started)


async def quick_check(path: str, *, budget: float) -> IntegrityReport:
    """Check `path` within about `budget` seconds, off the event loop. Cancelling stops
    the check within a millisecond: a thread cannot be cancelled, and asyncio.run waits
    for it at exit, so a stop during a long check would outlast systemd's stop timeout."""
    stop = threading.Event()
    try:
        return await asyncio.to_thread(_quick_check, path, budget, stop)
    except asyncio.CancelledError:
        stop.set()
        raise


def raise_if_damaged(path: str, report: IntegrityReport) -> None:
    if not report.ok:
        raise DatabaseCorrupt(path, "; ".join(report.problems) or "integrity check failed")
