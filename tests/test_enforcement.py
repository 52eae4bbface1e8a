"""bangd-nftables, proven with packets: a real fail2ban-server running the shipped action
inside a network namespace of the test's own (tests/netns.py), bans sent through bangd's
own Fail2banClient, and TCP connects from the client namespace. A dropped SYN shows as a
connect timeout (1 s; a clean source gets 5 s to connect); nothing is slept on: `enforced`
writes pending bans before it answers.

Needs root, unshare, nsenter, ip and nft (CI has them); fails rather than skips without.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bangd.errors import Fail2banCommandFailed
from bangd.fail2ban.client import Fail2banClient
from tests.daemon_process import DaemonProcess, bangctl, ready_daemon
from tests.enforcing import (
    ACTION,
    ACTION_FILE,
    JAIL,
    OPEN_WAIT,
    REPO,
    enforcing_fail2ban,
    fail2ban_client,
)
from tests.fail2ban_server import PrivateFail2ban
from tests.netns import NetnsPair

JAIL_FILE = REPO / "packaging" / "fail2ban" / "jail.d" / "bangd.conf"
STOCK_ACTION_FILES = tuple(
    Path("/etc/fail2ban/action.d") / name for name in ("nftables.conf", "nftables-allports.conf")
)
CLEAN_V4 = "198.51.100.8"
CLEAN_V6 = "2001:db8:2:ffff::8"


@pytest.fixture
def fail2ban(netns: NetnsPair) -> Iterator[PrivateFail2ban]:
    """fail2ban-server in the server namespace, jail "blocklist" with bangd-nftables."""
    with enforcing_fail2ban(netns) as server:
        yield server


@pytest.fixture
async def client(fail2ban: PrivateFail2ban) -> AsyncIterator[Fail2banClient]:
    async with fail2ban_client(fail2ban) as f2b:
        yield f2b


async def enforced(client: Fail2banClient, jail: str = JAIL, **kwargs: Any) -> dict[str, Any]:
    result = await client.action_call(jail, ACTION, "enforced", kwargs)
    assert isinstance(result, dict)
    return result


async def test_a_listed_ipv4_address_is_dropped_and_a_clean_one_connects(
    netns: NetnsPair, client: Fail2banClient
) -> None:
    await client.ban(JAIL, ["198.51.100.7"])
    await enforced(client)

    assert netns.connect("198.51.100.7") == "timeout"
    assert netns.connect(CLEAN_V4, timeout=OPEN_WAIT) == "open"


async def test_an_address_inside_a_listed_ipv4_network_is_dropped(
    netns: NetnsPair, client: Fail2banClient
) -> None:
    await client.ban(JAIL, ["203.0.113.0/24"])
    await enforced(client)

    assert netns.connect("203.0.113.9") == "timeout"
    assert netns.connect(CLEAN_V4, timeout=OPEN_WAIT) == "open"


async def test_ipv6_addresses_and_networks_are_dropped(
    netns: NetnsPair, client: Fail2banClient
) -> None:
    await client.ban(JAIL, ["2001:db8:2::7", "2001:db8:2:100::/56"])
    await enforced(client)

    assert netns.connect("2001:db8:2::7") == "timeout"
    assert netns.connect("2001:db8:2:1ab::9") == "timeout"
    assert netns.connect(CLEAN_V6, timeout=OPEN_WAIT) == "open"


async def test_unban_reopens_the_source(netns: NetnsPair, client: Fail2banClient) -> None:
    await client.ban(JAIL, ["198.51.100.7"])
    await enforced(client)
    assert netns.connect("198.51.100.7") == "timeout"

    await client.unban(JAIL, ["198.51.100.7"])
    await enforced(client)

    assert netns.connect("198.51.100.7", timeout=OPEN_WAIT) == "open"


@pytest.mark.parametrize(
    ("wide", "narrow", "inside_narrow", "inside_wide_only"),
    [
        ("198.51.100.128/25", "198.51.100.192/26", "198.51.100.200", "198.51.100.130"),
        ("2001:db8:2::/48", "2001:db8:2::7", "2001:db8:2::7", "2001:db8:2::9"),
    ],
)
async def test_unbanning_one_of_two_overlapping_entries_keeps_the_other_enforced(
    netns: NetnsPair,
    client: Fail2banClient,
    wide: str,
    narrow: str,
    inside_narrow: str,
    inside_wide_only: str,
) -> None:
    await client.ban(JAIL, [wide, narrow])
    assert (await enforced(client))["missing_count"] == 0

    await client.unban(JAIL, [wide])
    await enforced(client)
    assert netns.connect(inside_narrow) == "timeout"
    assert netns.connect(inside_wide_only, timeout=OPEN_WAIT) == "open"

    await client.ban(JAIL, [wide])
    await client.unban(JAIL, [narrow])
    await enforced(client)
    assert netns.connect(inside_narrow) == "timeout"
    assert netns.connect(inside_wide_only) == "timeout"


async def test_banning_twice_and_unbanning_an_absent_entry_are_not_errors(
    client: Fail2banClient,
) -> None:
    await client.ban(JAIL, ["198.51.100.7", "203.0.113.0/24"])
    await client.ban(JAIL, ["198.51.100.7", "203.0.113.0/24"])
    await client.unban(JAIL, ["198.51.100.99"])

    report = await enforced(client)

    assert (report["banned"], report["enforced"], report["missing_count"]) == (2, 2, 0)


async def test_after_nft_flush_ruleset_repair_restores_enforcement(
    netns: NetnsPair, client: Fail2banClient
) -> None:
    await client.ban(JAIL, ["198.51.100.7", "203.0.113.0/24", "2001:db8:2::7"])
    await enforced(client)
    netns.nft("flush", "ruleset")
    assert netns.connect("198.51.100.7", timeout=OPEN_WAIT) == "open"
    broken = await enforced(client)
    assert (broken["table_present"], broken["missing_count"]) == (False, 3)

    repaired = await client.action_call(JAIL, ACTION, "repair")

    assert isinstance(repaired, dict) and repaired["elements"] == 3
    assert (await enforced(client))["missing_count"] == 0
    assert netns.connect("198.51.100.7") == "timeout"
    assert netns.connect("203.0.113.9") == "timeout"
    assert netns.connect("2001:db8:2::7") == "timeout"


async def test_a_ban_after_nft_flush_ruleset_rebuilds_the_whole_table(
    netns: NetnsPair, client: Fail2banClient
) -> None:
    await client.ban(JAIL, ["198.51.100.7"])
    await enforced(client)
    netns.nft("flush", "ruleset")

    await client.ban(JAIL, ["203.0.113.0/24"])
    report = await enforced(client)

    assert (report["banned"], report["missing_count"]) == (2, 0)
    assert netns.connect("198.51.100.7") == "timeout"


async def test_enforced_checks_given_entries_and_lists_at_most_limit_missing(
    client: Fail2banClient,
) -> None:
    await client.ban(JAIL, ["198.51.100.7", "203.0.113.0/24"])
    asked = ["198.51.100.7", "203.0.113.0/24", "203.0.113.9", "198.51.100.1", "2001:db8::1"]

    report = await enforced(client, entries=asked, limit=2)

    assert (report["checked"], report["enforced"], report["missing_count"]) == (5, 2, 3)
    assert len(report["missing"]) == 2


async def test_fail2ban_restart_restores_enforcement(
    netns: NetnsPair, fail2ban: PrivateFail2ban, client: Fail2banClient
) -> None:
    await client.ban(JAIL, ["198.51.100.7", "203.0.113.0/24", "2001:db8:2::/48"])
    await enforced(client)
    await client.close()
    _wait_until_saved(fail2ban, 3)
    fail2ban.stop()
    assert netns.nft("list", "ruleset").strip() == ""

    fail2ban.start()

    report = await _enforced_after_restore(client, 3)
    assert report["missing_count"] == 0
    assert netns.connect("198.51.100.7") == "timeout"
    assert netns.connect("203.0.113.9") == "timeout"
    assert netns.connect("2001:db8:2::9") == "timeout"
    assert netns.connect(CLEAN_V4, timeout=OPEN_WAIT) == "open"


async def test_fail2ban_reload_keeps_the_bans_enforced(
    netns: NetnsPair, fail2ban: PrivateFail2ban, client: Fail2banClient
) -> None:
    await client.ban(JAIL, ["198.51.100.7", "203.0.113.0/24"])
    await enforced(client)

    done = await asyncio.to_thread(
        subprocess.run,
        ["fail2ban-client", "-c", f"{fail2ban.dir}/conf", "-s", fail2ban.socket, "reload"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    report = await enforced(client)
    assert (report["banned"], report["missing_count"]) == (2, 0)
    assert netns.connect("203.0.113.9") == "timeout"


async def test_stopping_fail2ban_leaves_no_rule_behind(
    netns: NetnsPair, fail2ban: PrivateFail2ban, client: Fail2banClient
) -> None:
    await client.ban(JAIL, ["198.51.100.7"])
    await enforced(client)
    assert "bangd_blocklist" in netns.nft("list", "tables")

    fail2ban.stop()

    assert netns.nft("list", "ruleset").strip() == ""
    assert netns.connect("198.51.100.7", timeout=OPEN_WAIT) == "open"


async def test_two_jails_get_tables_of_their_own(netns: NetnsPair) -> None:
    with enforcing_fail2ban(netns, "a-b", "a_b") as server:
        async with fail2ban_client(server) as f2b:
            await f2b.ban("a-b", ["198.51.100.7"])
            await f2b.ban("a_b", ["203.0.113.0/24"])
            one, other = await enforced(f2b, "a-b"), await enforced(f2b, "a_b")

            assert one["table"] != other["table"]
            assert (one["kernel_elements"], other["kernel_elements"]) == (1, 1)
            await f2b.unban("a-b", ["198.51.100.7"])
            assert (await enforced(f2b, "a_b"))["missing_count"] == 0
            assert netns.connect("203.0.113.9") == "timeout"


async def test_options_name_the_table_and_make_bans_rejects(netns: NetnsPair) -> None:
    options = "bangd-nftables.py[table=edge_drop, blocktype=reject, priority=-50]"
    with enforcing_fail2ban(netns, action=options) as server:
        async with fail2ban_client(server) as f2b:
            await f2b.ban(JAIL, ["198.51.100.7"])
            report = await enforced(f2b)

            assert (report["table"], report["missing_count"]) == ("edge_drop", 0)
            assert "priority -50" in netns.nft("list", "chain", "inet", "edge_drop", "input")
            assert netns.connect("198.51.100.7") == "refused"


async def test_a_bad_argument_comes_back_as_an_error_bangd_can_read(
    client: Fail2banClient,
) -> None:
    with pytest.raises(Fail2banCommandFailed, match="limit must be an integer"):
        await client.action_call(JAIL, ACTION, "enforced", {"limit": -1})


async def test_jail_actions_name_bangds_action(client: Fail2banClient) -> None:
    assert await client.jail_actions(JAIL) == [ACTION]


async def test_calling_a_method_the_action_lacks_is_refused_without_setting_it(
    client: Fail2banClient, fail2ban: PrivateFail2ban
) -> None:
    with pytest.raises(Fail2banCommandFailed, match="no method"):
        await client.action_call(JAIL, ACTION, "no_such_method", {})

    code, _ = fail2ban.command(["get", JAIL, "action", ACTION, "no_such_method"])
    assert code == 1


@pytest.mark.slow
async def test_an_import_through_the_slow_stock_action_shrinks_batches_and_never_times_out(
    netns: NetnsPair,
) -> None:
    """nftables-allports forks one `nft` per ban (~5 ms): 1,000 entries in one banip would
    take ~5 s, more than this client's 2 s timeout; measured batch sizes keep each answer
    inside it."""
    entries = [f"198.51.{n // 250}.{n % 250 + 1}" for n in range(1000)]
    with enforcing_fail2ban(netns, action=f"nftables-allports[name={JAIL}]",
                            action_files=STOCK_ACTION_FILES) as server:
        async with fail2ban_client(server, timeout=2.0, batch_size=1000) as f2b:
            started = time.monotonic()

            assert await f2b.ban(JAIL, entries) == 1000

            assert time.monotonic() - started > 2.0, "too fast to prove anything"


@pytest.mark.slow
def test_bangd_imports_lists_and_the_kernel_drops_what_they_list(
    netns: NetnsPair, fail2ban: PrivateFail2ban
) -> None:
    """The real daemon, two sources, one jail with bangd-nftables. A network dropped from
    its list reopens; an overlapping network another source lists stays dropped."""
    with ready_daemon(
        "bangd-enf-", fail2ban.socket, JAIL,
        files={"first.txt": "198.51.100.7\n203.0.113.0/24\n2001:db8:2::/48\n",
               "second.txt": "203.0.113.128/25\n"},
        sources=[{"name": "first", "path": "first.txt", "interval": "1h"},
                 {"name": "second", "path": "second.txt", "interval": "1h"}],
        skip_reserved=False,  # documentation ranges, inside the test's namespaces
    ) as daemon:
        _bangctl_ok(daemon, "import", "first", "second")
        report = _enforced_now(fail2ban)
        assert (report["banned"], report["missing_count"]) == (4, 0)
        for source in ("198.51.100.7", "203.0.113.9", "203.0.113.200", "2001:db8:2::9"):
            assert netns.connect(source) == "timeout", source
        assert netns.connect(CLEAN_V4, timeout=OPEN_WAIT) == "open"

        Path(daemon.dir, "first.txt").write_text(
            "198.51.100.7\n2001:db8:2::/48\n# 203.0.113.0/24 delisted\n"
        )
        _bangctl_ok(daemon, "import", "first")

        assert _enforced_now(fail2ban)["banned"] == 3
        assert netns.connect("203.0.113.9", timeout=OPEN_WAIT) == "open"
        assert netns.connect("203.0.113.200") == "timeout"


def _bangctl_ok(daemon: DaemonProcess, *args: str) -> None:
    done = bangctl(daemon.socket, *args)
    assert done.returncode == 0 and "failed" not in done.stdout, (
        f"{done.stdout}{done.stderr}\n{daemon.log_text()[-3000:]}"
    )


def _enforced_now(fail2ban: PrivateFail2ban) -> dict[str, Any]:
    code, report = fail2ban.command(["set", JAIL, "action", ACTION, "enforced", "{}"])
    assert code == 0 and isinstance(report, dict), report
    return report


def test_the_shipped_jail_loads_in_debians_fail2ban_config(tmp_path: Path) -> None:
    """What the package installs, read by fail2ban-client against Debian's own config."""
    conf = tmp_path / "fail2ban"
    shutil.copytree("/etc/fail2ban", conf, symlinks=True)
    for stray in (conf / "jail.d").iterdir():
        stray.unlink()
    shutil.copy(JAIL_FILE, conf / "jail.d")
    shutil.copy(ACTION_FILE, conf / "action.d")

    done = subprocess.run(["fail2ban-client", "-c", str(conf), "-d"], capture_output=True,
                          text=True, timeout=60, check=False)

    assert done.returncode == 0, done.stderr
    assert "['set', 'blocklist', 'bantime', '-1']" in done.stdout
    assert (f"['set', 'blocklist', 'addaction', 'bangd-nftables', "
            f"'{conf}/action.d/bangd-nftables.py', '{{}}']") in done.stdout
    assert "addlogpath" not in done.stdout and "addfailregex" not in done.stdout


def _wait_until_saved(fail2ban: PrivateFail2ban, count: int, timeout: float = 30.0) -> None:
    """fail2ban writes bans to its database after banip answered (README section 3)."""
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(f"{fail2ban.dir}/f2b.sqlite3") as db:
            (saved,) = db.execute("SELECT count(*) FROM bans").fetchone()
        if saved >= count or time.monotonic() > deadline:
            assert saved >= count, f"fail2ban saved {saved} of {count} bans"
            return
        time.sleep(0.05)


async def _enforced_after_restore(client: Fail2banClient, count: int) -> dict[str, Any]:
    """Restored bans reach the action through fail2ban's actions thread after start."""
    async with asyncio.timeout(30.0):
        while True:
            report = await enforced(client)
            if report["banned"] >= count:
                return report
            await asyncio.sleep(0.05)
