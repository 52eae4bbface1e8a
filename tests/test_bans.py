"""`bans`: what bangd applied, per jail and source, bounded; in-process against the real
private fail2ban."""

from __future__ import annotations

import dataclasses

import pytest

from bangd import jobs
from bangd.config import SourceConfig
from bangd.control.errors import error_reply
from bangd.errors import UnknownJailName, UnknownSource
from tests import test_app
from tests.test_app import LISTED, PEER, T0, World

world = test_app.world


async def with_second_source(world: World) -> None:
    """Source "more" lists one of local's entries and one of its own, in the same jail."""
    more = world.tmp / "more.txt"
    more.write_text("198.51.100.1\n192.0.2.7\n")
    config = world.app.config
    await world.app.reconfigure(dataclasses.replace(config, sources=(
        *config.sources, SourceConfig(name="more", jail="bl", interval=3600, path=str(more)))))


async def test_bans_lists_each_applied_entry_with_its_jail_sources_and_since(
    world: World,
) -> None:
    await jobs.import_source(world.app, "local")
    reply = await world.commands()["bans"]({}, PEER)
    assert [(e["jail"], e["entry"], e["sources"], e["since"]) for e in reply["entries"]] == [
        ("bl", entry, ["local"], T0) for entry in sorted(LISTED)
    ]


async def test_an_entry_two_sources_list_names_both(world: World) -> None:
    await with_second_source(world)
    await jobs.import_source(world.app, "local")
    await jobs.import_source(world.app, "more")
    reply = await world.commands()["bans"]({"source": "more"}, PEER)
    assert {e["entry"]: e["sources"] for e in reply["entries"]} == {
        "192.0.2.7": ["more"], "198.51.100.1": ["local", "more"]}


async def test_bans_counts_per_jail_and_source(world: World) -> None:
    await with_second_source(world)
    await jobs.import_source(world.app, "local")
    await jobs.import_source(world.app, "more")
    reply = await world.commands()["bans"]({}, PEER)
    assert (reply["by_jail"], reply["by_source"], reply["total"]) == (
        {"bl": 4}, {"local": 3, "more": 2}, 4)


async def test_bans_stops_at_the_limit_and_says_so(world: World) -> None:
    await jobs.import_source(world.app, "local")
    reply = await world.commands()["bans"]({"limit": 2}, PEER)
    assert (len(reply["entries"]), reply["total"], reply["truncated"]) == (2, 3, True)


@pytest.mark.parametrize(("args", "error"), [({"jail": "nosuch"}, UnknownJailName),
                                             ({"source": "nosuch"}, UnknownSource)],
                         ids=["jail", "source"])
async def test_bans_of_an_unknown_name_is_not_found(
    world: World, args: dict[str, str], error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        await world.commands()["bans"](args, PEER)
    assert error_reply(info.value)[0] == "not_found"  # type: ignore[arg-type]
