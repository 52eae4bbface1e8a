"""Enforcement cost, side by side in one run, inside a network namespace of its own.

100k entries (90% addresses, 10% networks, IPv4 and IPv6, some addresses inside listed
networks) are banned through bangd's Fail2banClient into a private fail2ban-server at
loglevel NOTICE that runs in a fresh `unshare -n` namespace (the machine's ruleset is never
touched):
  1. jail with no action: fail2ban's bookkeeping alone, the ceiling;
  2. jail with bangd-nftables: until banip returns, and until `enforced` confirms that the
     kernel holds every entry;
  3. fail2ban restarts of both (1 and 2) in turn, `--restarts` times each (the order swapped
     every round, medians reported, so a noisy machine weighs on both alike): timed until
     fail2ban holds all 100k bans again, and for bangd-nftables also until `enforced`
     confirms them all in the kernel;
  4. jail with Debian's nftables-allports: 5,000 entries (one `nft` process per ban, so
     100k would take most of an hour), extrapolated, and the networks that reached its set.

    .venv/bin/python bench/bench_enforce.py [--entries 100000] [--stock-entries 5000]
                                            [--restarts 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import socket
import sqlite3
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bangd.fail2ban.client import Fail2banClient
from tests.fail2ban_server import PrivateFail2ban
from tests.netns import Agent, require_tools

REPO = Path(__file__).resolve().parent.parent
ACTION_FILE = REPO / "packaging" / "fail2ban" / "action.d" / "bangd-nftables.py"
STOCK_FILES = [Path("/etc/fail2ban/action.d") / n
               for n in ("nftables.conf", "nftables-allports.conf")]
JAIL = "bl"
TIMEOUT = 120.0


def entries(count: int, seed: int = 7) -> list[str]:
    """90% addresses, 10% networks; 70% IPv4. Every 20th address lies in a listed network."""
    rng = random.Random(seed)
    out: set[str] = set()
    networks4: list[int] = []
    networks6: list[int] = []
    n_networks = count // 10
    while len(out) < n_networks:
        if rng.random() < 0.7:
            plen = rng.choice((16, 20, 22, 24, 24, 24, 28))
            net = (rng.randrange(1 << 32) >> (32 - plen)) << (32 - plen)
            networks4.append(net)
            text = f"{socket.inet_ntop(socket.AF_INET, net.to_bytes(4, 'big'))}/{plen}"
        else:
            plen = rng.choice((32, 40, 48, 48, 56, 64))
            net = ((0x20010DB8 << 96) | rng.randrange(1 << 96)) >> (128 - plen) << (128 - plen)
            networks6.append(net)
            text = f"{socket.inet_ntop(socket.AF_INET6, net.to_bytes(16, 'big'))}/{plen}"
        out.add(text)
    while len(out) < count:
        inside = len(out) % 20 == 0
        if rng.random() < 0.7:
            addr = rng.choice(networks4) | rng.randrange(256) if inside else rng.randrange(1 << 32)
            out.add(socket.inet_ntop(socket.AF_INET, addr.to_bytes(4, "big")))
        else:
            base = rng.choice(networks6) if inside else (0x20010DB8 << 96)
            addr = base | rng.randrange(1 << 32 if inside else 1 << 96)
            out.add(socket.inet_ntop(socket.AF_INET6, addr.to_bytes(16, "big")))
    listed = sorted(out)
    rng.shuffle(listed)
    return listed


def server(agent: Agent, action: str = "", files: list[Path] | None = None) -> PrivateFail2ban:
    fail2ban = PrivateFail2ban(jails=(JAIL,), loglevel="NOTICE", action=action,
                               action_files=files or [], netns_pid=agent.pid)
    fail2ban.start()
    return fail2ban


async def ban(fail2ban: PrivateFail2ban, listed: list[str]) -> float:
    client = Fail2banClient(fail2ban.socket, timeout=TIMEOUT, batch_size=1000)
    try:
        started = time.perf_counter()
        assert await client.ban(JAIL, listed) == len(listed)
        return time.perf_counter() - started
    finally:
        await client.close()


async def enforced(fail2ban: PrivateFail2ban) -> dict[str, Any]:
    client = Fail2banClient(fail2ban.socket, timeout=TIMEOUT)
    try:
        report = await client.action_call(JAIL, "bangd-nftables", "enforced", {"limit": 5})
        assert isinstance(report, dict)
        return report
    finally:
        await client.close()


def wait_saved(fail2ban: PrivateFail2ban, count: int) -> float:
    """fail2ban writes bans to its database after banip answered; stopping earlier loses
    them (README section 3), and the restart measured below must restore all of them."""
    started = time.perf_counter()
    while True:
        with sqlite3.connect(f"{fail2ban.dir}/f2b.sqlite3") as db:
            (saved,) = db.execute("SELECT count(*) FROM bans").fetchone()
        if saved >= count:
            return time.perf_counter() - started
        if time.perf_counter() - started > 300:
            raise RuntimeError(f"fail2ban saved only {saved} of {count} bans")
        time.sleep(0.1)


async def start_until_restored(
    fail2ban: PrivateFail2ban, count: int, check: bool
) -> tuple[float, float | None, dict[str, Any] | None]:
    """Start a stopped server, wait until it holds `count` bans again (polled with the cheap
    `status JAIL short`: `enforced` lists the whole table, which would slow the restore),
    then, with `check`, until `enforced` confirms them; stop it again. Returns the seconds
    until restored, until enforced, and the last report."""
    started = time.perf_counter()
    fail2ban.start()
    client = Fail2banClient(fail2ban.socket, timeout=TIMEOUT)
    try:
        while (await client.jail_status(JAIL)).currently_banned < count:
            if time.perf_counter() - started > 300:
                raise RuntimeError("bans not restored 300 s after the restart")
            await asyncio.sleep(0.05)
        restored = time.perf_counter() - started
        if not check:
            return restored, None, None
        report = await client.action_call(JAIL, "bangd-nftables", "enforced", {"limit": 5})
        assert isinstance(report, dict) and report["missing_count"] == 0, report
        return restored, time.perf_counter() - started, report
    finally:
        await client.close()
        fail2ban.stop()


async def restarts(
    plain: PrivateFail2ban, ours: PrivateFail2ban, count: int, rounds: int
) -> tuple[list[float], list[float], list[float], list[dict[str, Any]]]:
    """Both servers are stopped; restart each in turn, the order swapped every round."""
    t_plain: list[float] = []
    t_ours: list[float] = []
    t_enforced: list[float] = []
    reports: list[dict[str, Any]] = []
    for round_ in range(rounds):
        for which in ((plain, ours) if round_ % 2 == 0 else (ours, plain)):
            restored, enforced_at, report = await start_until_restored(
                which, count, check=which is ours)
            if which is plain:
                t_plain.append(restored)
            else:
                assert enforced_at is not None and report is not None
                t_ours.append(restored)
                t_enforced.append(enforced_at)
                reports.append(report)
    return t_plain, t_ours, t_enforced, reports


def stock_networks_in_kernel(agent: Agent) -> tuple[int, int]:
    """Elements of nftables-allports' sets: (all, networks)."""
    listing = json.loads(agent.run("nft", "-j", "list", "ruleset").stdout)
    total = networks = 0
    for item in listing["nftables"]:
        for elem in item.get("set", {}).get("elem", []):
            total += 1
            networks += isinstance(elem, dict) and "prefix" in elem
    return total, networks


def discard(fail2ban: PrivateFail2ban) -> None:
    fail2ban.stop()
    shutil.rmtree(fail2ban.dir, ignore_errors=True)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--stock-entries", type=int, default=5_000)
    parser.add_argument("--restarts", type=int, default=3)
    args = parser.parse_args()
    require_tools()
    listed = entries(args.entries)
    n_networks = sum("/" in e for e in listed)
    stock_listed = listed[: args.stock_entries]
    stock_networks = sum("/" in e for e in stock_listed)
    print(f"{len(listed):,} entries ({n_networks:,} networks, "
          f"{sum(':' in e for e in listed):,} IPv6), fail2ban at NOTICE, in a namespace:")

    agent = Agent("bench")
    plain = ours = None
    try:
        plain = server(agent)
        t_plain = await ban(plain, listed)
        wait_saved(plain, len(listed))
        plain.stop()

        ours = server(agent, "bangd-nftables.py", [ACTION_FILE])
        started = time.perf_counter()
        t_ours = await ban(ours, listed)
        report = await enforced(ours)  # writes what is pending, then checks the kernel
        t_ours_all = time.perf_counter() - started
        assert report["missing_count"] == 0, report
        wait_saved(ours, len(listed))
        ours.stop()

        r_plain, r_ours, r_enforced, r_reports = await restarts(
            plain, ours, len(listed), args.restarts)
        discard(plain)
        discard(ours)
        plain = ours = None

        stock = server(agent, f"nftables-allports[name={JAIL}]", STOCK_FILES)
        try:
            t_stock = await ban(stock, stock_listed)
            in_kernel, nets_in_kernel = stock_networks_in_kernel(agent)
        finally:
            discard(stock)
    finally:
        for left in (plain, ours):
            if left is not None:
                discard(left)
        agent.close()

    rate = len(listed) / t_plain
    print(f"  no action (bookkeeping only)   {t_plain:7.2f} s  {rate:9,.0f} entries/s")
    print(f"  bangd-nftables, banip returned {t_ours:7.2f} s  "
          f"{len(listed) / t_ours:9,.0f} entries/s   no action / this: {t_plain / t_ours:.2f}x")
    print(f"  bangd-nftables, enforced+checked {t_ours_all:5.2f} s  "
          f"{report['enforced']:,} of {report['banned']:,} in the kernel "
          f"({100 * report['enforced'] / report['banned']:.0f}%; the check itself "
          f"{report['took']:.2f} s)")
    stock_100k = t_stock / len(stock_listed) * len(listed)
    print(f"  nftables-allports, {len(stock_listed):,} entries  {t_stock:7.2f} s  "
          f"{len(stock_listed) / t_stock:9,.0f} entries/s   -> {len(listed):,} ~ "
          f"{stock_100k:,.0f} s ({stock_100k / t_plain:.0f}x no action, "
          f"{stock_100k / t_ours:.0f}x bangd-nftables)")
    print(f"    networks that reached its kernel set: {nets_in_kernel} of {stock_networks} "
          f"(elements in the set: {in_kernel:,} of {len(stock_listed):,})")
    m_plain, m_ours, m_enforced = (statistics.median(r) for r in (r_plain, r_ours, r_enforced))
    m_check = statistics.median(r["took"] for r in r_reports)
    print(f"  fail2ban restart until all {len(listed):,} bans are restored (median of "
          f"{args.restarts}, each pair in turn):")
    print(f"    no action                      {m_plain:7.2f} s   ({_runs(r_plain)})")
    print(f"    bangd-nftables                 {m_ours:7.2f} s   ({_runs(r_ours)})   "
          f"this / no action: {m_ours / m_plain:.2f}x")
    print(f"    bangd-nftables, enforced+checked {m_enforced:5.2f} s   ({_runs(r_enforced)})   "
          f"this / no action: {m_enforced / m_plain:.2f}x   ({r_reports[-1]['enforced']:,} in "
          f"the kernel; the check itself {m_check:.2f} s)")
    return 0


def _runs(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
