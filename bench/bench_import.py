"""bangd's import of N addresses vs a bare batched socket loop, side by side in one run.

Both send the same addresses to the same private fail2ban-server (NOTICE level, no action)
in batches of 1000 on one connection; the jail is emptied between rounds and the order
alternates, so the machine's noise hits both alike. bangd's figure includes everything a
real import does: reading the file, parsing, hashing, the SQLite bookkeeping committed
batch by batch, and fail2ban's round trips. Also shown: re-importing the unchanged file,
and a re-import after 1% of the list was replaced (the delta: ban the new, unban the gone).

    .venv/bin/python bench/bench_import.py [--entries 100000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bangd.config import SourceConfig
from bangd.fail2ban.client import Fail2banClient
from bangd.fail2ban.wire import CLOSE_COMMAND, END, decode_reply, encode_command
from bangd.services.importer import FilterSettings, Importer
from bangd.sources.fetch import Fetcher, make_session
from bangd.store.db import Database
from bangd.store.imports import ImportStore
from tests.addresses import public_ipv4
from tests.fail2ban_server import PrivateFail2ban

BATCH = 1000


def bare_loop(sock_path: str, jail: str, addrs: list[str]) -> float:
    """What a hand-written script does at best: one connection, batched banip."""
    t0 = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(sock_path)
        for start in range(0, len(addrs), BATCH):
            sock.sendall(encode_command(["set", jail, "banip", *addrs[start : start + BATCH]]))
            reply = bytearray()
            while not reply.endswith(END):
                reply += sock.recv(65536)
            code, _ = decode_reply(bytes(reply[: -len(END)]))
            assert code == 0
        sock.sendall(CLOSE_COMMAND)
    return time.perf_counter() - t0


@dataclass
class BangdTimes:
    first: float
    unchanged: float
    delta: float
    added: int


async def bangd_import(sock_path: str, jail: str, list_path: str, db_path: str) -> BangdTimes:
    db = await Database.open(db_path)
    client = Fail2banClient(sock_path, timeout=60, batch_size=BATCH)
    async with make_session() as session:
        importer = Importer(
            ImportStore(db), client, Fetcher(session, user_agent="bench"), batch_size=BATCH
        )
        source = SourceConfig(name="bench", jail=jail, interval=3600, path=list_path)
        settings = FilterSettings(allowlist=(), skip_reserved=False)
        t0 = time.perf_counter()
        summary = await importer.run(source, settings)
        first = time.perf_counter() - t0
        assert summary.state == "completed", summary.error
        os.utime(list_path)  # same bytes, new mtime: forces a read, hash and compare
        t0 = time.perf_counter()
        again = await importer.run(source, settings)
        unchanged = time.perf_counter() - t0
        assert again.state == "unchanged"
        original = Path(list_path).read_text()
        lines = original.splitlines()
        changed = len(lines) // 100  # 1% of the list replaced by new addresses
        fresh = public_ipv4(len(lines) + changed, seed=99)[-changed:]
        Path(list_path).write_text("\n".join(lines[changed:] + fresh) + "\n")
        t0 = time.perf_counter()
        delta = await importer.run(source, settings)
        delta_time = time.perf_counter() - t0
        assert delta.state == "completed", delta.error
        Path(list_path).write_text(original)
    await client.close()
    await db.close()
    return BangdTimes(first, unchanged, delta_time, summary.added)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    addrs = public_ipv4(args.entries, seed=1)
    server = PrivateFail2ban(jails=("bl",), loglevel="NOTICE")
    server.start()
    work = tempfile.mkdtemp(prefix="bangd-bench-")
    list_path = os.path.join(work, "list.txt")
    Path(list_path).write_text("\n".join(addrs) + "\n")
    bare_times: list[float] = []
    bangd_times: list[float] = []
    unchanged_times: list[float] = []
    delta_times: list[float] = []
    try:
        for round_no in range(args.rounds):
            order = ["bare", "bangd"] if round_no % 2 == 0 else ["bangd", "bare"]
            for which in order:
                # Lifting 100k bans took over 10 s (the default) on a busy 2-core machine.
                assert server.command(["unban", "--all"], timeout=120)[0] == 0
                if which == "bare":
                    bare_times.append(bare_loop(server.socket, "bl", addrs))
                else:
                    db_path = os.path.join(work, f"bangd-{round_no}.db")
                    times = asyncio.run(bangd_import(server.socket, "bl", list_path, db_path))
                    assert times.added == len(addrs)
                    bangd_times.append(times.first)
                    unchanged_times.append(times.unchanged)
                    delta_times.append(times.delta)
    finally:
        server.stop()
    bare, bangd = min(bare_times), min(bangd_times)
    n = len(addrs)
    print(f"{n:,} addresses into a private fail2ban-server (loglevel NOTICE), batches of "
          f"{BATCH}, best of {args.rounds}:")
    print(f"  bare batched socket loop   {bare:7.2f} s  {n / bare:9,.0f} IPs/s")
    print(f"  bangd import (first run)   {bangd:7.2f} s  {n / bangd:9,.0f} IPs/s")
    print(f"  bangd / bare               {bangd / bare:7.2f}x")
    print(f"  bangd re-import, unchanged {min(unchanged_times):7.2f} s  (nothing sent)")
    print(f"  bangd re-import, 1% changed {min(delta_times):6.2f} s  "
          f"({n // 100:,} banned + {n // 100:,} unbanned)")


if __name__ == "__main__":
    main()
