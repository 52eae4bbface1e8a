"""bangd's view of enforcement: what it applied against what the kernel drops, through the
jail's bangd-nftables action over fail2ban's socket (real fail2ban, real kernel, in a
network namespace of the test's own)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import pytest

from bangd.fail2ban.client import Fail2banClient
from bangd.services.enforcement import Enforcement
from tests.daemon_process import bangctl, bangctl_json, ready_daemon
from tests.enforcing import JAIL, OPEN_WAIT, enforcing_fail2ban, fail2ban_client
from tests.fail2ban_server import PrivateFail2ban
from tests.netns import NetnsPair

LISTED = ["198.51.100.7", "203.0.113.0/24", "2001:db8:2::7", "2001:db8:2:100::/56"]


class Applied:
    """What bangd's ledger says it applied (the store's `expected`), set by the test."""

    def __init__(self, entries: list[str]) -> None:
        self.entries = sorted(set(entries))

    async def expected(self, jail: str) -> list[str]:
        return list(self.entries)


@pytest.fixture
def fail2ban(netns: NetnsPair) -> Iterator[PrivateFail2ban]:
    with enforcing_fail2ban(netns, JAIL, "plain", plain_jails=("plain",)) as server:
        yield server


@pytest.fixture
async def client(fail2ban: PrivateFail2ban) -> AsyncIterator[Fail2banClient]:
    async with fail2ban_client(fail2ban) as f2b:
        yield f2b


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


def test_bangctl_verify_finds_a_firewall_flush_and_reconcile_repairs_it(
    netns: NetnsPair, fail2ban: PrivateFail2ban,
) -> None:
    """The whole path as an operator meets it: import, verify, `nft flush ruleset` (what a
    firewall reload does), verify again, reconcile, packets dropped again."""
    with ready_daemon(
        "bangd-verify-", fail2ban.socket, JAIL,
        files={"list.txt": "198.51.100.7\n203.0.113.0/24\n2001:db8:2::/48\n"},
        sources=[{"name": "list", "path": "list.txt", "interval": "1h"}],
        skip_reserved=False,  # documentation ranges, inside the test's namespaces
    ) as daemon:
        assert bangctl(daemon.socket, "import", "list").returncode == 0
        ok = bangctl(daemon.socket, "verify")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert re.search(r"blocklist\s+3\s+3\s+0\s+ok", ok.stdout), ok.stdout
        assert "kernel drops all 3" in bangctl(daemon.socket, "status").stdout
        (found,) = bangctl_json(daemon.socket, "lookup", "203.0.113.9")["results"]
        assert found["kernel"] == {JAIL: "dropped"}

        netns.nft("flush", "ruleset")
        assert netns.connect("203.0.113.9", timeout=OPEN_WAIT) == "open"
        gap = bangctl(daemon.socket, "verify")
        assert gap.returncode == 1
        assert "MISSING" in gap.stdout and "203.0.113.0/24" in gap.stdout
        looked = bangctl(daemon.socket, "lookup", "203.0.113.9").stdout
        assert "kernel: NOT dropped: missing 203.0.113.0/24" in looked, looked

        repaired = bangctl_json(daemon.socket, "reconcile")
        assert repaired["jails"][0]["enforcement"]["repaired"] is True
        assert bangctl(daemon.socket, "verify").returncode == 0
        assert netns.connect("203.0.113.9") == "timeout"


def test_a_jail_whose_action_is_not_bangds_is_flagged_by_status_and_verify(
    fail2ban: PrivateFail2ban,
) -> None:
    with ready_daemon(
        "bangd-verify-", fail2ban.socket, "plain",
        files={"list.txt": "198.51.100.7\n"},
        sources=[{"name": "list", "path": "list.txt", "interval": "1h"}],
        skip_reserved=False,
    ) as daemon:
        assert bangctl(daemon.socket, "import", "list").returncode == 0
        checked = bangctl(daemon.socket, "verify")
        assert checked.returncode == 1
        assert "CANNOT CHECK" in checked.stdout
        status = bangctl_json(daemon.socket, "status")
        kernel = next(j for j in status["jails"] if j["jail"] == "plain")["enforcement"]
        assert kernel["bangd_action"] is False
        assert "not bangd-nftables" in kernel["error"]
        assert "NOT ENFORCED BY BANGD" in bangctl(daemon.socket, "status").stdout
