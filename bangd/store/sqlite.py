"""Ending SQLite statements exactly once, whatever happens to the task awaiting them.

Shared by the database (its transactions) and the migration runner (each migration's):
both must never report a COMMIT or ROLLBACK that did not happen, or leave one open.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable
from typing import TypeVar

import aiosqlite

log = logging.getLogger(__name__)

T = TypeVar("T")


async def finish_despite_cancel(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` to the end even if our task is cancelled meanwhile.

    aiosqlite runs a statement on its thread whether or not the awaiting task is cancelled,
    so a COMMIT/ROLLBACK we stopped waiting for would still happen later, after we had told
    the caller otherwise. Waiting it out keeps "what we report" equal to "what happened";
    the cancellation is re-raised afterwards.
    """
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():  # the work itself was cancelled (loop shutdown): give up
                raise
            cancelled = True
        except BaseException:
            pass  # the work's own error: task.result() below re-raises it
    if cancelled:
        if not task.cancelled():
            task.exception()  # mark retrieved; the cancellation wins
        raise asyncio.CancelledError
    return task.result()


async def rollback_quietly(conn: aiosqlite.Connection) -> None:
    """Roll back whatever is open, without hiding the error that made us roll back.

    Queued behind any statement still running on aiosqlite's thread, so it always lands after
    it. "no transaction is active" is expected when BEGIN never ran or COMMIT already did.
    """
    try:
        await finish_despite_cancel(conn.execute("ROLLBACK"))
    except sqlite3.Error as exc:
        if "no transaction is active" not in str(exc):
            log.warning("rollback_failed=%s", exc)
    except ValueError as exc:  # aiosqlite: the connection was closed under us
        log.warning("rollback_failed=%s", exc)
