"""`stats`: banned addresses by country or AS from the geo cache, networks weighted by
their size, top N and "other"; and the bounded per-country metric. In-process against the
real private fail2ban (LISTED: 198.51.100.1, 198.51.100.2, 203.0.113.0/24)."""

from __future__ import annotations

from bangd import jobs
from bangd.geo.model import GeoInfo
from bangd.reports import COUNTRY_METRIC_TOP
from tests import test_app
from tests.test_app import PEER, T0, World

world = test_app.world


async def with_geo(world: World) -> None:
    await jobs.import_source(world.app, "local")
    store = world.app.geo_store
    await store.upsert(GeoInfo("198.51.100.1", "DE", "Germany", 3320, "DTAG", "mmdb", False), T0)
    await store.upsert(GeoInfo("203.0.113.0", "US", "United States", 15169, "Google LLC",
                               "mmdb", False), T0)


async def test_stats_weighs_a_network_by_its_size(world: World) -> None:
    await with_geo(world)
    reply = await world.commands()["stats"]({}, PEER)
    assert [(g["key"], g["addresses"]) for g in reply["groups"]] == [
        ("US", 256), ("DE", 1), ("unknown", 1)]
    assert reply["total"] == 258


async def test_stats_by_asn_names_the_as(world: World) -> None:
    await with_geo(world)
    reply = await world.commands()["stats"]({"by": "asn"}, PEER)
    assert (reply["groups"][0]["key"], reply["groups"][0]["label"]) == ("AS15169", "Google LLC")


async def test_stats_sums_what_is_beyond_the_top_as_other(world: World) -> None:
    await with_geo(world)
    reply = await world.commands()["stats"]({"top": 1}, PEER)
    assert [(g["key"], g["addresses"]) for g in reply["groups"]] == [("US", 256), ("other", 2)]


async def test_the_country_metric_has_a_label_per_top_country(world: World) -> None:
    await with_geo(world)
    text = (await world.commands()["metrics"]({}, PEER))["text"]
    assert 'bangd_banned_addresses_by_country{country="US"} 256' in text
    assert COUNTRY_METRIC_TOP >= 3 and 'country="other"' not in text


async def test_the_country_metric_sums_countries_beyond_the_top_as_other(
    world: World,
) -> None:
    addresses = [f"192.0.2.{i}" for i in range(1, COUNTRY_METRIC_TOP + 3)]
    (world.tmp / "local.txt").write_text("\n".join(addresses) + "\n")
    await jobs.import_source(world.app, "local")
    for i, address in enumerate(addresses):
        code = f"{chr(65 + i)}{chr(65 + i)}"
        await world.app.geo_store.upsert(
            GeoInfo(address, code, None, None, None, "mmdb", False), T0)
    text = (await world.commands()["metrics"]({}, PEER))["text"]
    labelled = [line for line in text.splitlines()
                if line.startswith("bangd_banned_addresses_by_country{")]
    assert len(labelled) == COUNTRY_METRIC_TOP + 1
    assert 'bangd_banned_addresses_by_country{country="other"} 2' in labelled



async def test_an_ipv6_network_counts_once_not_by_its_two_to_the_80_addresses(
    world: World,
) -> None:
    (world.tmp / "local.txt").write_text("198.51.100.1\n2001:db8::/48\n")
    await jobs.import_source(world.app, "local")
    reply = await world.commands()["stats"]({}, PEER)
    assert reply["total"] == 2
