"""Blocklist parsing at list scale: bangd's parser against a naive `ipaddress` one.

Generates two seeded synthetic lists, random public IPv4 lines only and a mix with about
6% CIDRs (with `; SBL` comments), IPv6, comment and blank lines and some CRLF endings, and
times on each in one run: `raw_digest` (how an unchanged download is recognised),
`parse_blocklist`, and a parser built on `ipaddress.ip_network` doing the same
normalisation and digest. Then the other feed formats (`sources[].format`) on the same
addresses written in each format's shape, timed with the `text` parse of the plain list as
the yardstick. Prints times and the ratio; nothing here asserts a time.

    .venv/bin/python bench/bench_parse.py [--lines N] [--seed S] [--formats-only]
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import NamedTuple, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bangd.config import FORMATS
from bangd.entries import entries_digest
from bangd.sources.parse import parse_blocklist, raw_digest

T = TypeVar("T")

_PUBLIC_FIRST_OCTETS = [
    o for o in range(1, 224) if o not in (10, 100, 127, 169, 172, 192, 198, 203)
]


def _public_ipv4(rng: random.Random) -> str:
    octets = (rng.choice(_PUBLIC_FIRST_OCTETS), *(rng.randrange(256) for _ in range(3)))
    return ".".join(map(str, octets))


def _line(rng: random.Random, mixed: bool) -> str:
    roll = rng.random() if mixed else 0.0
    if roll < 0.94:
        return _public_ipv4(rng)
    if roll < 0.97:
        return f"{_public_ipv4(rng)}/{rng.randrange(12, 32)} ; SBL{rng.randrange(10**6)}"
    if roll < 0.985:
        groups = [f"{rng.randrange(0x10000):x}" for _ in range(3)]
        return f"2a0{rng.randrange(10)}:{':'.join(groups)}::{rng.randrange(0x10000):x}"
    if roll < 0.995:
        return "# generated comment line"
    return ""


def make_list(lines: int, seed: int, *, mixed: bool) -> bytes:
    """A seeded list: plain IPv4 lines only, or about 6% CIDRs, IPv6, comments and blanks."""
    rng = random.Random(seed)
    parts = []
    for _ in range(lines):
        parts.append(_line(rng, mixed))
        parts.append("\r\n" if mixed and rng.random() < 0.1 else "\n")
    return "".join(parts).encode("ascii")


def naive_parse(data: bytes) -> tuple[frozenset[str], str]:
    """What a straightforward implementation does: one ip_network per line."""
    entries: set[str] = set()
    for raw in data.decode("utf-8").splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        try:
            network = ipaddress.ip_network(line, strict=False)
        except ValueError:
            continue
        full = network.prefixlen == network.max_prefixlen
        entries.add(str(network.network_address) if full else str(network))
    return frozenset(entries), entries_digest(entries)


class Timing(NamedTuple):
    """Shortest wall and CPU time over the repeats: other work on a shared machine only adds."""

    wall: float
    cpu: float

    def __str__(self) -> str:
        return f"{self.wall:7.3f} s wall {self.cpu:7.3f} s cpu"


def best_of(repeat: int, fn: Callable[[], T]) -> tuple[Timing, T]:
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return Timing(min(walls), min(cpus)), result


def bench(label: str, data: bytes, lines: int, repeat: int) -> None:
    print(f"\n{label}: {lines:,} lines, {len(data) / 1e6:.1f} MB (best of {repeat})")
    raw_t, _ = best_of(repeat, lambda: raw_digest(data))
    fast_t, parsed = best_of(repeat, lambda: parse_blocklist(data))
    digest_t, _ = best_of(repeat, lambda: entries_digest(parsed.entries))
    naive_t, (naive_entries, naive_digest) = best_of(1, lambda: naive_parse(data))
    print(f"  raw_digest (sha256 of the bytes)    {raw_t}")
    print(f"  parse_blocklist, digest included    {fast_t}")
    print(f"  entries_digest of the frozenset     {digest_t}  (hash order: worst case)")
    print(f"  naive ipaddress parser (1 run)      {naive_t}")
    print(
        f"  parse rate {lines / fast_t.wall / 1e6:.2f} M lines/s; speed-up over naive: "
        f"{naive_t.wall / fast_t.wall:.1f}x wall, {naive_t.cpu / fast_t.cpu:.1f}x cpu"
    )
    print(
        f"  entries {len(parsed.entries):,}, duplicates {parsed.duplicates:,}, "
        f"invalid {parsed.invalid}, skipped reserved {parsed.skipped_reserved}"
    )
    # The naive parser skips nothing, so it can only agree when nothing reserved was drawn.
    if parsed.skipped_reserved == 0:
        same = parsed.entries == naive_entries and naive_digest == parsed.digest
        print(f"  same entries and digest as naive: {same}")


def _v4_range(rng: random.Random) -> tuple[str, str]:
    first = _public_ipv4(rng)
    a, b, c, _ = first.split(".")
    return f"{a}.{b}.{c}.0", f"{a}.{b}.{c}.{rng.randrange(1, 256)}"


def format_lines(name: str, rng: random.Random) -> str:
    """One data row of the named format, around a random public address."""
    ip = _public_ipv4(rng)
    if name == "ranges":
        low, high = _v4_range(rng)
        return f"Some Hosting Org {rng.randrange(1000)}:{low}-{high}"
    if name == "spamhaus-json":
        return f'{{"cidr":"{ip}/{rng.randrange(16, 25)}","sblid":"SBL{rng.randrange(10**6)}",' \
            '"rir":"ripencc"}'
    if name == "dshield":
        low, high = _v4_range(rng)
        return f"{low}\t{high}\t24\t{rng.randrange(10**4)}\tSOME-NET\tNL\tabuse@example.net"
    if name == "ipsum":
        return f"{ip}\t{rng.randrange(1, 10)}"
    if name == "abuseipdb-csv":
        return f"{ip},US,{rng.randrange(101)},2025-01-01T00:00:00+00:00"
    if name == "crowdsec-raw":
        return f"{rng.randrange(10**7)},CAPI,Ip:{ip},crowdsecurity/ssh-bf,ban,US,64500 SOME ISP," \
            f"{rng.randrange(100)},167h59m,false,0"
    if name == "tor-exits":
        return f"ExitAddress {ip} 2025-01-01 00:00:00"
    return ip


HEADERS = {
    "dshield": "Start\tEnd\tNetblock\tAttacks\tName\tCountry\temail",
    "abuseipdb-csv": "ipAddress,countryCode,abuseConfidenceScore,lastReportedAt",
    "crowdsec-raw": "id,source,ip,reason,action,country,as,events_count,expiration,simulated,"
    "alert_id",
}


def make_format_list(name: str, lines: int, seed: int) -> bytes:
    rng = random.Random(seed)
    rows = [HEADERS[name]] if name in HEADERS else []
    rows.extend(format_lines(name, rng) for _ in range(lines))
    return ("\n".join(rows) + "\n").encode("ascii")


def bench_formats(lines: int, seed: int, repeat: int) -> None:
    print(f"\nother formats: {lines:,} rows each (best of {repeat}), against text on plain IPv4")
    plain = make_list(lines, seed, mixed=False)
    base_t, _ = best_of(repeat, lambda: parse_blocklist(plain))
    print(f"  {'text (plain IPv4)':18} {base_t}  1.00x")
    for name, feed in FORMATS.items():
        if name in ("text", "columns", "json"):
            continue
        data = make_format_list(name, lines, seed)
        timing, parsed = best_of(repeat, partial(parse_blocklist, data, feed=feed))
        print(
            f"  {name:18} {timing}  {timing.cpu / base_t.cpu:4.2f}x cpu  "
            f"entries {len(parsed.entries):,} invalid {parsed.invalid}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--format-lines", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--formats-only", action="store_true")
    args = parser.parse_args()
    if not args.formats_only:
        for label, mixed in (("plain IPv4", False), ("mixed", True)):
            data = make_list(args.lines, args.seed, mixed=mixed)
            bench(label, data, args.lines, args.repeat)
    bench_formats(args.format_lines, args.seed, args.repeat)


if __name__ == "__main__":
    main()
