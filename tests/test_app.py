"""The App, its jobs and its commands in-process, against the real private fail2ban.

Time comes from the clock seam, so retention and run records are exact; nothing here
waits on a fixed sleep.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bangd import jobs
from bangd.app import App
from bangd.commands import Commands
from bangd.config import Config, Fail2banConfig, SourceConfig
from bangd.control.errors import error_reply
from bangd.control.server import Peer
from bangd.errors import BangdError, SourceDisabled, UnknownSource
from bangd.geo.model import negative_geo
from tests.fail2ban_server import PrivateFail2ban

T0 = 1_700_000_000.0
DAY = 86400.0
PEER = Peer(pid=1, uid=0, gid=0)
LISTED = ["198.51.100.1", "198.51.100.2", "203.0.113.0/24"]


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class World:
    app: App
    clock: Clock
    tmp: Path
    server: PrivateFail2ban
    reloads: int = 0

    def banned(self, jail: str = "bl") -> set[str]:
        code, result = self.server.command(["get", jail, "banned"])
        assert code == 0 and isinstance(result, list)
        return set(result)

    def commands(self) -> dict[str, Any]:
        async def reload() -> dict[str, Any]:
            self.reloads += 1
            return {"reloaded": True}

        return Commands(self.app, reload=reload).handlers()


def config_for(tmp: Path, socket: str, **changes: Any) -> Config:
    listed = tmp / "local.txt"
    if not listed.exists():
        listed.write_text("\n".join(LISTED) + "\n")
    config = Config(
        path=str(tmp / "bangd.yaml"),
        database=str(tmp / "bangd.db"),
        fail2ban=Fail2banConfig(socket=socket, jail="bl", batch_size=2),
        allowlist=(),
        skip_reserved=False,
        sources=(
            SourceConfig(name="local", jail="bl", interval=3600, path=str(listed)),
            SourceConfig(name="off", jail="bl", interval=3600, path=str(listed), enabled=False),
        ),
    )
    return dataclasses.replace(config, **changes)


@pytest.fixture
async def world(
    tmp_path: Path, fail2ban_server: PrivateFail2ban, fail2ban_jail: str
) -> AsyncIterator[World]:
    clock = Clock()
    async with contextlib.AsyncExitStack() as stack:
        app = await App.open(config_for(tmp_path, fail2ban_server.socket), stack, clock=clock)
        jobs.schedule(app)  # jobs known to the scheduler, whose timers stay off
        yield World(app, clock, tmp_path, fail2ban_server)


# -- the App -------------------------------------------------------------------------------


async def test_reconfigure_keeps_every_member_and_passes_on_the_new_settings(
    world: World,
) -> None:
    app = world.app
    members = (app.fail2ban, app.importer, app.reconciler, app.monitor, app.geo,
               app.scheduler, app.imports)
    new = config_for(world.tmp, world.server.socket, fail2ban=dataclasses.replace(
        app.config.fail2ban, batch_size=7, timeout=3.0))
    await app.reconfigure(new)
    assert (app.fail2ban, app.importer, app.reconciler, app.monitor, app.geo,
            app.scheduler, app.imports) == members
    assert app.config is new
    assert app.fail2ban.settings.timeout == 3.0
    assert app.importer.applier.batch_size == app.reconciler.applier.batch_size == 7
    assert await app.fail2ban.version() == "1.0.2"


async def test_the_importer_and_the_reconciler_share_one_apply_protocol(world: World) -> None:
    assert world.app.importer.applier is world.app.reconciler.applier


# -- jobs ----------------------------------------------------------------------------------


async def test_the_import_job_bans_the_list_and_returns_its_summary(world: World) -> None:
    outcome = await jobs.import_source(world.app, "local")
    assert outcome.error is None
    assert (outcome.result["state"], outcome.result["added"]) == ("completed", 3)
    assert world.banned() == set(LISTED)
    assert world.app.last_import is not None and world.app.last_import.startswith("local ")


async def test_a_failed_import_is_an_outcome_recorded_as_failed_not_an_exception(
    world: World,
) -> None:
    (world.tmp / "local.txt").unlink()
    result = await world.app.scheduler.run_now(
        jobs.import_job("local"), lambda: jobs.import_source(world.app, "local")
    )
    assert result["state"] == "failed" and "local.txt" in result["error"]
    state = world.app.scheduler.state(jobs.import_job("local"))
    assert state is not None
    assert (state.last_state, state.failures, state.last_finished) == ("failed", 1, T0)


async def test_the_reconcile_job_withdraws_a_source_the_config_no_longer_has(
    world: World,
) -> None:
    await jobs.import_source(world.app, "local")
    await world.app.reconfigure(dataclasses.replace(world.app.config, sources=()))
    outcome = await jobs.reconcile(world.app)
    assert outcome.error is None
    assert world.banned() == set()
    assert await world.app.imports.known_sources() == []


async def test_the_reconcile_job_rebans_what_fail2ban_lost(world: World) -> None:
    await jobs.import_source(world.app, "local")
    assert world.server.command(["unban", "--all"])[0] == 0
    outcome = await jobs.reconcile(world.app, "bl")
    assert outcome.error is None
    assert outcome.result["jails"][0]["rebanned"] == 3
    assert world.banned() == set(LISTED)


async def test_the_retention_job_deletes_by_the_app_clock_and_counts_it(world: World) -> None:
    store = world.app.geo_store
    await store.upsert_many([negative_geo("192.0.2.1", "mmdb")], T0)
    await store.upsert_many([negative_geo("192.0.2.2", "mmdb")], T0 + 5 * DAY)
    world.clock.now = T0 + world.app.config.geo.retention_days * DAY + 1
    result = await jobs.retention(world.app)
    assert result["deleted"] == 1
    assert world.app.retention_deleted == 1
    assert await store.get("192.0.2.2") is not None


# -- commands ------------------------------------------------------------------------------


async def test_the_import_command_runs_the_job_and_answers_its_summary(world: World) -> None:
    reply = await world.commands()["import"]({"sources": ["local"]}, PEER)
    assert [r["state"] for r in reply["imports"]] == ["completed"]
    state = world.app.scheduler.state(jobs.import_job("local"))
    assert state is not None and state.last_state == "ok"


@pytest.mark.parametrize(
    ("args", "error", "code"),
    [({"sources": ["nope"]}, UnknownSource, "not_found"),
     ({"sources": ["off"]}, SourceDisabled, "invalid_argument")],
    ids=["unknown", "disabled"],
)
async def test_the_import_command_refuses_with_a_typed_error_the_table_maps(
    world: World, args: dict[str, Any], error: type[BangdError], code: str
) -> None:
    with pytest.raises(error) as info:
        await world.commands()["import"](args, PEER)
    assert error_reply(info.value)[0] == code


async def test_status_reports_fail2ban_sources_and_jail_counts(world: World) -> None:
    await jobs.import_source(world.app, "local")
    await world.app.monitor.check()
    status = await world.commands()["status"]({}, PEER)
    assert status["fail2ban"]["reachable"] is True
    assert status["uptime"] == 0.0
    assert [s["entries"] for s in status["sources"]] == [3, 0]
    assert {j["jail"]: j["currently_banned"] for j in status["jails"]} == {"bl": 3}


async def test_lookup_names_the_jail_that_bans_an_address_through_a_network(
    world: World,
) -> None:
    await jobs.import_source(world.app, "local")
    reply = await world.commands()["lookup"]({"ips": ["203.0.113.9"]}, PEER)
    [result] = reply["results"]
    assert result["banned_in"] == ["bl"]
    assert [s["entry"] for s in result["sources"]] == ["203.0.113.0/24"]


async def test_metrics_count_the_sources_entries_and_the_jail(world: World) -> None:
    await jobs.import_source(world.app, "local")
    await world.app.monitor.check()
    text = (await world.commands()["metrics"]({}, PEER))["text"]
    assert 'bangd_source_entries{jail="bl",source="local"} 3' in text
    assert 'bangd_fail2ban_jail_banned{jail="bl"} 3' in text
    assert "bangd_fail2ban_up 1" in text


async def test_the_reload_command_is_the_daemons_reload(world: World) -> None:
    assert await world.commands()["reload"]({}, PEER) == {"reloaded": True}
    assert world.reloads == 1
