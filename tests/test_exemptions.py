"""Runtime exemptions (`bangctl allow`): effective at once through the apply protocol,
never re-banned while they stand, back in when they go, kept across restarts, shown by
status, lookup and metrics. In-process against the real private fail2ban."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from bangd import jobs
from bangd.app import App
from bangd.control.errors import error_reply
from bangd.errors import InvalidRequest, UnknownExemption
from bangd.services.exemptions import normalised
from tests import test_app
from tests.fail2ban_server import PrivateFail2ban
from tests.test_app import LISTED, PEER, T0, World, config_for

world = test_app.world
HOUR = 3600


async def imported(world: World) -> World:
    await jobs.import_source(world.app, "local")
    assert world.banned() == set(LISTED)
    return world


async def allow(world: World, network: str, **args: object) -> dict[str, Any]:
    reply: dict[str, Any] = await world.commands()["allow_add"]({"network": network, **args},
                                                                 PEER)
    return reply


async def test_allow_unbans_a_covered_entry_at_once(world: World) -> None:
    await imported(world)
    reply = await allow(world, "198.51.100.1")
    assert reply["lifted"] == 1
    assert world.banned() == set(LISTED) - {"198.51.100.1"}


async def test_allow_of_an_address_inside_a_listed_network_lifts_that_network(
    world: World,
) -> None:
    await imported(world)
    await allow(world, "203.0.113.9")
    assert "203.0.113.0/24" not in world.banned()


async def test_an_import_does_not_ban_what_an_exemption_covers(world: World) -> None:
    await imported(world)
    await allow(world, "198.51.100.0/30")
    await world.commands()["import"]({"sources": ["local"], "force": True}, PEER)
    assert world.banned() == {"203.0.113.0/24"}


async def test_reconcile_does_not_ban_what_an_exemption_covers(world: World) -> None:
    await imported(world)
    await allow(world, "198.51.100.2")
    world.server.command(["unban", "--all"])
    await jobs.reconcile(world.app)
    assert world.banned() == set(LISTED) - {"198.51.100.2"}


async def test_removing_an_exemption_makes_the_imports_due_and_they_ban_again(
    world: World,
) -> None:
    await imported(world)
    await allow(world, "198.51.100.1")
    await world.commands()["allow_remove"]({"network": "198.51.100.1"}, PEER)
    state = world.app.scheduler.state(jobs.import_job("local"))
    assert state is not None and state.next_run == T0
    await jobs.import_source(world.app, "local")
    assert world.banned() == set(LISTED)


async def test_an_expired_exemption_is_dropped_by_reconcile_and_banned_again(
    world: World,
) -> None:
    await imported(world)
    await allow(world, "198.51.100.1", seconds=HOUR)
    world.clock.now += HOUR
    await jobs.reconcile(world.app)
    assert (await world.commands()["allow_list"]({}, PEER))["exemptions"] == []
    await jobs.import_source(world.app, "local")
    assert world.banned() == set(LISTED)


async def test_allow_list_shows_network_comment_and_expiry(world: World) -> None:
    await allow(world, "192.0.2.0/24", seconds=HOUR, comment="ticket 4711")
    assert (await world.commands()["allow_list"]({}, PEER))["exemptions"] == [
        {"network": "192.0.2.0/24", "comment": "ticket 4711", "created": T0,
         "expires": T0 + HOUR}]


async def test_an_exemption_survives_a_restart(
    tmp_path: Path, fail2ban_server: PrivateFail2ban, fail2ban_jail: str
) -> None:
    config = config_for(tmp_path, fail2ban_server.socket)
    async with contextlib.AsyncExitStack() as stack:
        first = await App.open(config, stack)
        await first.exemptions.add("192.0.2.7", seconds=0, comment=None)
    async with contextlib.AsyncExitStack() as stack:
        again = await App.open(config, stack)
        assert [str(n) for n in again.filter_settings().exempt] == ["192.0.2.7/32"]


async def test_status_lookup_and_metrics_show_an_exemption(world: World) -> None:
    await allow(world, "198.51.100.0/24")
    status = await world.commands()["status"]({}, PEER)
    [result] = (await world.commands()["lookup"]({"ips": ["198.51.100.1"]}, PEER))["results"]
    metrics = (await world.commands()["metrics"]({}, PEER))["text"]
    assert [e["network"] for e in status["exemptions"]] == ["198.51.100.0/24"]
    assert [e["network"] for e in result["exemptions"]] == ["198.51.100.0/24"]
    assert "bangd_exemptions 1" in metrics


@pytest.mark.parametrize(("typed", "stored"), [("::ffff:203.0.113.9", "203.0.113.9/32"),
                                               ("10.1.2.3/8", "10.0.0.0/8"),
                                               ("2001:db8::1", "2001:db8::1/128")])
def test_an_exemption_is_stored_normalised(typed: str, stored: str) -> None:
    assert str(normalised(typed)) == stored


async def test_allow_of_something_not_an_address_is_invalid_argument(world: World) -> None:
    with pytest.raises(InvalidRequest) as info:
        await allow(world, "example.org")
    assert error_reply(info.value) == ("invalid_argument", info.value.args[0])
    assert "example.org" in str(info.value)


async def test_removing_an_exemption_that_is_not_there_is_not_found(world: World) -> None:
    with pytest.raises(UnknownExemption) as info:
        await world.commands()["allow_remove"]({"network": "192.0.2.1"}, PEER)
    assert error_reply(info.value)[0] == "not_found"
