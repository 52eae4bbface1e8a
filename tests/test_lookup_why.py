"""`lookup` says why: the skip rules covering an address, a missing resolver, and a broken
jail kept to its own row. In-process against the real private fail2ban."""

from __future__ import annotations

import dataclasses
import ipaddress

from bangd import jobs
from bangd.config import SourceConfig
from bangd.services.lookup import skip_reasons
from tests import test_app
from tests.test_app import PEER, World

world = test_app.world


def test_a_reserved_address_names_its_reserved_range() -> None:
    assert skip_reasons("10.1.2.3", allowlist=(), skip_reserved=True, exempt=()) == [
        {"reason": "reserved", "rule": "10.0.0.0/8"}]


def test_an_allowlisted_address_names_the_allowlist_rule() -> None:
    rule = ipaddress.ip_network("127.0.0.0/8")
    assert skip_reasons("127.0.0.1", allowlist=(rule,), skip_reserved=False, exempt=()) == [
        {"reason": "allowlist", "rule": "127.0.0.0/8"}]


def test_an_exempted_address_names_the_exemption() -> None:
    rule = ipaddress.ip_network("2001:db8::/32")
    assert skip_reasons("2001:db8::1", allowlist=(), skip_reserved=False, exempt=(rule,)) == [
        {"reason": "exemption", "rule": "2001:db8::/32"}]


async def test_lookup_names_the_exemption_that_skips_an_address(world: World) -> None:
    await world.commands()["allow_add"]({"network": "192.0.2.0/24"}, PEER)
    [result] = (await world.commands()["lookup"]({"ips": ["192.0.2.9"]}, PEER))["results"]
    assert result["skipped"] == [{"reason": "exemption", "rule": "192.0.2.0/24"}]


async def test_lookup_says_no_resolver_is_configured(world: World) -> None:
    [result] = (await world.commands()["lookup"]({"ips": ["192.0.2.9"]}, PEER))["results"]
    assert result["geo_note"].startswith("no resolver configured")


async def test_a_missing_jail_only_affects_its_own_row(world: World) -> None:
    await jobs.import_source(world.app, "local")
    config = world.app.config
    await world.app.reconfigure(dataclasses.replace(config, sources=(
        *config.sources,
        SourceConfig(name="lost", jail="nosuchjail", interval=3600, path="/dev/null"))))
    [result] = (await world.commands()["lookup"]({"ips": ["198.51.100.1"]}, PEER))["results"]
    assert result["banned_in"] == ["bl"]
    assert list(result["jail_errors"]) == ["nosuchjail"]
