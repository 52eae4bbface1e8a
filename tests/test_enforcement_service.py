"""bangd's view of enforcement: what it applied against what the kernel drops, through the
jail's bangd-nftables action over fail2ban's socket (real fail2ban, real kernel, in a
network namespace of the test's own)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator

import pytest

from bangd.fail2ban.client import Fail2banClient
from bangd.services.enforcement import Enforcement
from tests.fail2ban_server import PrivateFail2ban
from tests.netns import NetnsPair
from tests.test_enforcement import ACTION_FILE, JAIL

LISTED = ["198.51.100.7", "203.0.113.0/24", "2001:db8:2::7", "2001:db8:2:100::/56"]


class Applied:
    """What bangd's ledger says it applied (the store's `expected`), set by the test."""

    def __init__(self, entries: list[str]) -> None:
        self.entries = set(entries)

    async def expected(self, jail: str) -> set[str]:
        return set(self.entries)


@pytest.fixture
def netns() -> Iterator[NetnsPair]:
    pair = NetnsPair()
    try:
        yield pair
    finally:
        pair.close()


@pytest.fixture
def fail2ban(netns: NetnsPair) -> Iterator[PrivateFail2ban]:
    server = PrivateFail2ban(jails=(JAIL, "plain"), action="bangd-nftables.py",
                             action_files=[ACTION_FILE], netns_pid=netns.server.pid,
                             plain_jails=("plain",))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
async def client(fail2ban: PrivateFail2ban) -> AsyncIterator[Fail2banClient]:
    f2b = Fail2banClient(fail2ban.socket)
    try:
        yield f2b
    finally:
        await f2b.close()


async def test_everything_applied_and_banned_is_enforced(client: Fail2banClient) -> None:
    await client.ban(JAIL, LISTED)
    report = await Enforcement(client, Applied(LISTED)).check(JAIL)
    assert report.ok, report
    assert (report.applied, report.enforced, report.missing_count) == (4, 4, 0)


async def test_an_entry_applied_but_not_in_the_kernel_is_missing(client: Fail2banClient) -> None:
    await client.ban(JAIL, LISTED[:3])
    report = await Enforcement(client, Applied(LISTED)).check(JAIL)
    assert not report.ok
    assert report.missing == ["2001:db8:2:100::/56"]


async def test_after_a_firewall_flush_the_check_finds_the_gap_and_repair_closes_it(
    netns: NetnsPair, client: Fail2banClient
) -> None:
    await client.ban(JAIL, LISTED)
    enforcement = Enforcement(client, Applied(LISTED))
    assert (await enforcement.check(JAIL)).ok
    netns.nft("flush", "ruleset")

    assert (await enforcement.check(JAIL)).missing_count == 4
    repaired = await enforcement.check_and_repair(JAIL)
    assert repaired.ok and repaired.repaired
    assert netns.connect("203.0.113.9") == "timeout"


async def test_a_jail_without_bangds_action_cannot_be_checked_and_says_why(
    client: Fail2banClient,
) -> None:
    report = await Enforcement(client, Applied(LISTED)).check("plain")
    assert not report.ok and report.enforced is None
    assert report.error is not None and "not bangd-nftables" in report.error
