"""Enforcement cost, side by side in one run, inside a network namespace of its own.

100k entries (90% addresses, 10% networks, IPv4 and IPv6, some addresses inside listed
networks) are banned through bangd's Fail2banClient into a private fail2ban-server at
loglevel NOTICE that runs in a fresh `unshare -n` namespace (the machine's ruleset is never
touched):
  1. jail with no action: fail2ban's bookkeeping alone, the ceiling;
  2. jail with bangd-nftables: until banip returns, and until `enforced` confirms that the
     kernel holds every entry; then a fail2ban restart, timed until all 100k are enforced;
  3. jail with Debian's nftables-allports: 5,000 entries (one `nft` process per ban, so
     100k would take most of an hour), extrapolated, and the networks that reached its set.

    .venv/bin/python bench/bench_enforce.py [--entries 100000] [--stock-entries 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import socket
import sqlite3
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


async def restart_until_restored(fail2ban: PrivateFail2ban, count: int) -> float:
    """Stop, start, and wait until fail2ban holds `count` bans again. Polled with the cheap
    `status JAIL short`: `enforced` lists the whole table, which would slow the restore."""
    fail2ban.stop()
    started = time.perf_counter()
    fail2ban.start()
    client = Fail2banClient(fail2ban.socket, timeout=TIMEOUT)
    try:
        while (await client.jail_status(JAIL)).currently_banned < count:
            if time.perf_counter() - started > 300:
                raise RuntimeError("bans not restored 300 s after the restart")
            await asyncio.sleep(0.05)
    finally:
        await client.close()
    return time.perf_counter() - started


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
    args = parser.parse_args()
    require_tools()
    listed = entries(args.entries)
    n_networks = sum("/" in e for e in listed)
    stock_listed = listed[: args.stock_entries]
    stock_networks = sum("/" in e for e in stock_listed)
    print(f"{len(listed):,} entries ({n_networks:,} networks, "
          f"{sum(':' in e for e in listed):,} IPv6), fail2ban at NOTICE, in a namespace:")

    agent = Agent("bench")
    try:
        plain = server(agent)
        try:
            t_plain = await ban(plain, listed)
            wait_saved(plain, len(listed))
            t_plain_restart = await restart_until_restored(plain, len(listed))
        finally:
            discard(plain)

        ours = server(agent, "bangd-nftables.py", [ACTION_FILE])
        try:
            started = time.perf_counter()
            t_ours = await ban(ours, listed)
            report = await enforced(ours)  # writes what is pending, then checks the kernel
            t_ours_all = time.perf_counter() - started
            assert report["missing_count"] == 0, report
            wait_saved(ours, len(listed))
            started = time.perf_counter()
            await restart_until_restored(ours, len(listed))
            restarted = await enforced(ours)
            t_restart = time.perf_counter() - started
            assert restarted["missing_count"] == 0, restarted
        finally:
            discard(ours)

        stock = server(agent, f"nftables-allports[name={JAIL}]", STOCK_FILES)
        try:
            t_stock = await ban(stock, stock_listed)
            in_kernel, nets_in_kernel = stock_networks_in_kernel(agent)
        finally:
            discard(stock)
    finally:
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
    print(f"  fail2ban restart until all {len(listed):,} bans are restored, no action: "
          f"{t_plain_restart:.2f} s")
    print(f"  fail2ban restart until all {restarted['banned']:,} are enforced, bangd-nftables: "
          f"{t_restart:.2f} s (check included)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
