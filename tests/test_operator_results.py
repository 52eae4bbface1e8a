"""Issue 12, "results that tell the truth": not_found for unknown names, one log line per
failure, an import that waited for the timer's run reports that run, and `sources` shows
a running import's phase and counts. In-process, against the real private fail2ban.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from bangd import jobs
from bangd.config import SourceConfig
from bangd.control.errors import error_reply
from bangd.errors import UnknownJailName, UnknownSource
from bangd.sources.fetch import Fetched
from tests import test_app
from tests.test_app import PEER, World

world = test_app.world  # the App against the real private fail2ban, as in test_app

READY_TIMEOUT = 10.0


async def until(condition: Callable[[], bool]) -> None:
    """A readiness wait: yield to the loop until `condition` holds (bounded)."""
    async with asyncio.timeout(READY_TIMEOUT):
        while not condition():  # noqa: ASYNC110  (the conditions are not events)
            await asyncio.sleep(0.005)


def source_row(rows: list[dict[str, Any]], name: str = "local") -> dict[str, Any]:
    return next(r for r in rows if r["name"] == name)


def spy_on(monkeypatch: pytest.MonkeyPatch, owner: object, method: str) -> asyncio.Event:
    """An event set when `owner.method` is entered (it then runs as before)."""
    entered = asyncio.Event()
    original = getattr(owner, method)

    async def spy(*args: Any, **kw: Any) -> Any:
        entered.set()
        return await original(*args, **kw)

    monkeypatch.setattr(owner, method, spy)
    return entered


class HeldFetcher:
    """The App's fetcher, holding every fetch until `release` is set."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.release = asyncio.Event()

    async def fetch(self, source: SourceConfig, **kw: Any) -> Fetched:
        await self.release.wait()
        result: Fetched = await self.inner.fetch(source, **kw)
        return result


async def test_runs_of_an_unknown_source_is_not_found(world: World) -> None:
    with pytest.raises(UnknownSource) as info:
        await world.commands()["runs"]({"source": "nosuch"}, PEER)
    assert error_reply(info.value)[0] == "not_found"
    assert "local" in str(info.value)


async def test_runs_of_a_configured_source_without_runs_is_an_empty_list(world: World) -> None:
    assert await world.commands()["runs"]({"source": "local"}, PEER) == {"runs": []}


async def test_runs_carry_trigger_and_error(world: World) -> None:
    (world.tmp / "local.txt").unlink()
    await world.commands()["import"]({"sources": ["local"]}, PEER)
    [run] = (await world.commands()["runs"]({"source": "local"}, PEER))["runs"]
    assert run["trigger"] == "manual" and "local.txt" in run["error"]


async def test_reconcile_of_an_unknown_jail_is_not_found(world: World) -> None:
    with pytest.raises(UnknownJailName) as info:
        await world.commands()["reconcile"]({"jail": "nosuch"}, PEER)
    assert error_reply(info.value)[0] == "not_found"
    assert "bl" in str(info.value)


async def test_sources_show_a_failing_sources_last_error(world: World) -> None:
    (world.tmp / "local.txt").unlink()
    await world.commands()["import"]({"sources": ["local"]}, PEER)
    status = await world.commands()["status"]({}, PEER)
    row = source_row(status["sources"])
    assert row["last_state"] == "failed" and "local.txt" in row["last_error"]


async def test_a_failed_timer_import_is_logged_once(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    (world.tmp / "local.txt").unlink()
    caplog.set_level(logging.INFO)
    await world.app.scheduler.run_now(jobs.import_job("local"))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "local.txt" in errors[0].getMessage()


async def test_an_import_that_waited_for_the_timers_run_reports_that_run(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = world.app
    held = HeldFetcher(app.importer.fetcher)
    app.importer.fetcher = held
    timer = asyncio.create_task(app.scheduler.run_now(jobs.import_job("local")))
    await until(lambda: "local" in app.importer.progress)
    waiting = spy_on(monkeypatch, app.scheduler, "join")
    manual = asyncio.create_task(world.commands()["import"]({"sources": ["local"]}, PEER))
    await waiting.wait()
    held.release.set()
    [reply] = (await manual)["imports"]
    assert (reply["state"], reply["added"], reply["joined"]) == ("completed", 3, True)
    assert reply["run_id"] == (await timer)["run_id"]
    assert len((await world.commands()["runs"]({"source": "local"}, PEER))["runs"]) == 1


async def test_a_forced_import_runs_again_after_the_timers_run(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = world.app
    held = HeldFetcher(app.importer.fetcher)
    app.importer.fetcher = held
    timer = asyncio.create_task(app.scheduler.run_now(jobs.import_job("local")))
    await until(lambda: "local" in app.importer.progress)
    waiting = spy_on(monkeypatch, app.scheduler, "run_now")
    manual = asyncio.create_task(
        world.commands()["import"]({"sources": ["local"], "force": True}, PEER)
    )
    await waiting.wait()
    held.release.set()
    [reply] = (await manual)["imports"]
    assert "joined" not in reply and reply["run_id"] != (await timer)["run_id"]


async def test_sources_show_a_dry_run_running_while_it_fetches(world: World) -> None:
    app = world.app
    held = HeldFetcher(app.importer.fetcher)
    app.importer.fetcher = held
    dry = asyncio.create_task(
        world.commands()["import"]({"sources": ["local"], "dry_run": True}, PEER)
    )
    await until(lambda: "local" in app.importer.progress)
    row = source_row((await world.commands()["sources"]({}, PEER))["sources"])
    assert (row["last_state"], row["progress"]) == ("running", {"phase": "fetching"})
    held.release.set()
    await dry
    row = source_row((await world.commands()["sources"]({}, PEER))["sources"])
    assert row["progress"] is None and row["last_state"] is None


class SnapshotBans:
    """fail2ban as the applier sees it, noting the import's progress at each `banip`."""

    def __init__(self, inner: Any, progress: dict[str, dict[str, Any]]) -> None:
        self.inner, self.progress = inner, progress
        self.seen: list[dict[str, Any]] = []

    async def ban(self, jail: str, addrs: Sequence[str]) -> int:
        self.seen.append(dict(self.progress["local"]))
        result: int = await self.inner.ban(jail, addrs)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_an_import_reports_applying_progress_batch_by_batch(world: World) -> None:
    applier = world.app.importer.applier
    spy = SnapshotBans(applier.fail2ban, world.app.importer.progress)
    applier.fail2ban = spy
    await jobs.import_source(world.app, "local")  # 3 entries, batch_size 2
    assert spy.seen == [{"phase": "applying"},
                        {"phase": "applying", "done": 2, "total": 3}]
    assert world.app.importer.progress == {}
