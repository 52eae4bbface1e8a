"""Writes the feed samples in this directory, and for each the exact set it must parse to.

Each sample has its feed's real header, comments and quirks; the addresses are seeded and
public-looking (tests/addresses.py). `NAME.expected` is computed here with `ipaddress`,
independently of bangd's parser, so the tests compare two implementations. Run it again
after changing it (tests/test_formats.py checks the files are what it writes):

    .venv/bin/python -m tests.data.feeds.generate
"""

from __future__ import annotations

import ipaddress
import json
import random
from collections.abc import Callable, Iterable
from pathlib import Path

from tests.addresses import public_ipv4

HERE = Path(__file__).parent
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _net(text: str) -> Net:
    return ipaddress.ip_network(text, strict=False)


def _entry(net: Net) -> str:
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _cover(first: str, last: str) -> list[str]:
    low, high = ipaddress.ip_address(first), ipaddress.ip_address(last)
    return [_entry(n) for n in ipaddress.summarize_address_range(low, high)]


def _v6(rng: random.Random) -> str:
    return f"2a0{rng.randrange(1, 10)}:{rng.randrange(0x100, 0xffff):x}:{rng.randrange(0xffff):x}::"


class Sample:
    """One feed file being written: its lines and the entries they must yield."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self.expected: set[str] = set()

    def add(self, line: str, *entries: str) -> None:
        self.lines.append(line)
        self.expected.update(entries)

    def files(self) -> dict[str, str]:
        return {
            self.name: "\n".join(self.lines) + "\n",
            self.name + ".expected": "".join(f"{e}\n" for e in sorted(self.expected)),
        }


def spamhaus(version: int, count: int, seed: int) -> Sample:
    rng = random.Random(seed)
    sample = Sample(f"drop_v{version}.json")
    rirs = ("apnic", "arin", "ripencc", "lacnic", "afrinic")
    addresses = public_ipv4(count, seed) if version == 4 else [_v6(rng) for _ in range(count)]
    for address in addresses:
        prefix = rng.randrange(14, 25) if version == 4 else rng.choice((29, 32, 36, 48))
        net = _net(f"{address}/{prefix}")
        record = {"cidr": str(net), "sblid": f"SBL{rng.randrange(100000, 700000)}",
                  "rir": rng.choice(rirs)}
        sample.add(json.dumps(record, separators=(",", ":")), _entry(net))
    metadata = {"type": "metadata", "timestamp": 1735689600, "size": 9000 + count,
                "records": count, "copyright": "(c) 2025 The Spamhaus Project SLU",
                "terms": "https://www.spamhaus.org/drop/terms/"}
    sample.add(json.dumps(metadata, separators=(",", ":")))
    return sample


DSHIELD_HEAD = """#
#   DShield.org Recommended Block List
#   (c) 2025 DShield.org
#   some rights reserved. Details http://creativecommons.org/licenses/by-nc-sa/2.5/
#   use on your own risk. No warranties implied.
#   primary URL: http://feeds.dshield.org/block.txt
#    PGP Sign.: http://feeds.dshield.org/block.txt.asc
#
#   comments: info@dshield.org
#    updated about once an hour
#
# This list summarizes the top 20 attacking class C (/24) subnets
#   over the last three days. The number of 'attacks' indicates the
#   number of targets reporting scans from this subnet.
#
#
#    Columns (tab delimited):
#
#    (1) start of netblock
#    (2) end of netblock
#    (3) subnet (/24 for class C)
#    (4) number of targets scanned
#    (5) name of Network
#    (6) Country
#    (7) contact email address
#
#    If a range is assigned to multiple users, the first one is listed.
#
Start	End	Netblock	Attacks	Name	Country	email"""


def dshield(count: int, seed: int) -> Sample:
    """The real list has 20 rows; this one has more, all of the same shape."""
    rng = random.Random(seed)
    sample = Sample("block.txt")
    for line in DSHIELD_HEAD.splitlines():
        sample.add(line)
    names = ("CHINANET-BACKBONE", "DIGITALOCEAN-ASN", "PONYNET", "M247", "", "OVH")
    for address in public_ipv4(count, seed):
        net = _net(f"{address}/24")
        first, last = net.network_address, net.broadcast_address
        name = rng.choice(names)
        email = f"abuse@{name.lower() or 'example'}.net" if name else ""
        sample.add(f"{first}\t{last}\t24\t{rng.randrange(200, 9000)}\t{name}\t"
                   f"{rng.choice(('CN', 'US', 'NL', 'RU', 'BG'))}\t{email}", _entry(net))
    sample.add("# completed 2025-01-01 00:00:00 UTC")
    return sample


IPSUM_HEAD = """# IPsum Threat Intelligence Feed
# (https://github.com/stamparm/ipsum)
#
# Last update: Wed, 01 Jan 2025 03:08:19 +0100
#
# IP	number of (black)lists
#"""


def ipsum(count: int, seed: int, min_score: int) -> Sample:
    rng = random.Random(seed)
    suffix = "" if min_score == 1 else f".min{min_score}"
    sample = Sample(f"ipsum{suffix}.txt")
    for line in IPSUM_HEAD.splitlines():
        sample.add(line)
    rows = [(rng.choice((1, 1, 1, 2, 2, 3, 4, 5, 6, 8, 10)), a) for a in public_ipv4(count, seed)]
    for score, address in sorted(rows, key=lambda r: -r[0]):  # the feed sorts by count
        sample.add(f"{address}\t{score}", *([address] if score >= min_score else []))
    return sample


def abuseipdb(count: int, seed: int, min_score: int) -> Sample:
    rng = random.Random(seed)
    suffix = "" if min_score == 0 else f".min{min_score}"
    sample = Sample(f"abuseipdb{suffix}.csv")
    sample.add("ipAddress,countryCode,abuseConfidenceScore,lastReportedAt")
    addresses: list[str] = public_ipv4(count, seed)
    addresses[::25] = [f"{_v6(rng)}{rng.randrange(1, 0xffff):x}" for _ in addresses[::25]]
    for address in addresses:
        score = rng.choice((100, 100, 100, 99, 97, 88, 75, 60, 42, 25))
        country = rng.choice(("CN", "US", "DE", "IN", "BR", "VN", ""))  # some rows have none
        when = f"2025-01-01T{rng.randrange(24):02d}:{rng.randrange(60):02d}:07+00:00"
        canonical = str(ipaddress.ip_address(address))
        sample.add(f"{address},{country},{score},{when}",
                   *([canonical] if score >= min_score else []))
    return sample


def p2p(count: int, seed: int) -> Sample:
    """iblocklist level1 style: `label:first-last`, labels with colons, dashes and `#`."""
    rng = random.Random(seed)
    sample = Sample("level1.p2p")
    sample.add("# List distributed by iblocklist.com")
    sample.add("")
    labels = ("Some Hosting Org", "Acme Networks, Inc", "Example-Net: Datacenter 2",
              "Tele-Com Ltd", "NOC #7 Ltd", "Bogus; Ranges")
    for address in public_ipv4(count, seed):
        a, b, c, _ = address.split(".")
        start = rng.choice((0, 0, 0, 16, 64, 100))
        end = rng.choice((255, 255, 127, 199, start + 3))
        first, last = f"{a}.{b}.{c}.{start}", f"{a}.{b}.{c}.{end}"
        if rng.random() < 0.1:  # some lists pad every octet to three digits
            first_text = ".".join(f"{int(p):03d}" for p in first.split("."))
        else:
            first_text = first
        sample.add(f"{rng.choice(labels)}:{first_text}-{last}", *_cover(first, last))
    return sample


CROWDSEC_HEADER = "id,source,ip,reason,action,country,as,events_count,expiration,simulated,alert_id"


def crowdsec(count: int, seed: int) -> Sample:
    rng = random.Random(seed)
    sample = Sample("crowdsec-decisions.csv")
    sample.add(CROWDSEC_HEADER)
    scenarios = ("crowdsecurity/ssh-bf", "crowdsecurity/http-probing", "crowdsecurity/ssh-slow-bf",
                 "crowdsecurity/http-crawl-non_statics")
    ases = ('"4134 CHINANET-BACKBONE No.31,Jin-rong Street"', "14061 DIGITALOCEAN-ASN",
            "16276 OVH SAS", "")
    for i, address in enumerate(public_ipv4(count, seed)):
        source = rng.choice(("crowdsec", "CAPI", "CAPI", "lists"))
        if i % 20 == 0:
            value = _entry(_net(f"{address}/24"))
            scope = f"Range:{value}"
        elif i % 97 == 5:
            sample.add(f"{1000 + i},cscli,Country:{rng.choice(('CN', 'RU'))},manual,ban,,,0,"
                       "3h59m,false,0")
            value = address
            scope = f"Ip:{address}"
        else:
            value = address
            scope = f"Ip:{address}"
        sample.add(f"{1000 + i},{source},{scope},{rng.choice(scenarios)},ban,"
                   f"{rng.choice(('CN', 'US', 'RU', ''))},{rng.choice(ases)},"
                   f"{rng.randrange(0, 40)},{rng.randrange(1, 167)}h{rng.randrange(60)}m,false,"
                   f"{rng.randrange(10**5)}", value)
    return sample


def tor(count: int, seed: int) -> Sample:
    rng = random.Random(seed)
    sample = Sample("exit-addresses")
    addresses = public_ipv4(count + count // 10, seed)
    for i in range(count):
        fp = "".join(rng.choice("0123456789ABCDEF") for _ in range(40))
        day = f"2025-01-0{rng.randrange(1, 8)}"
        sample.add(f"ExitNode {fp}")
        sample.add(f"Published {day} {rng.randrange(24):02d}:{rng.randrange(60):02d}:11")
        sample.add(f"LastStatus {day} 23:00:00")
        sample.add(f"ExitAddress {addresses[i]} {day} 23:1{rng.randrange(10)}:42", addresses[i])
        if i % 10 == 3:  # a relay seen exiting from a second address
            extra = addresses[count + i // 10]
            sample.add(f"ExitAddress {extra} {day} 23:40:02", extra)
    return sample


SAMPLES: tuple[Callable[[], Sample], ...] = (
    lambda: spamhaus(4, 320, 11),
    lambda: spamhaus(6, 60, 12),
    lambda: dshield(200, 13),
    lambda: ipsum(400, 14, 1),
    lambda: ipsum(400, 14, 3),
    lambda: abuseipdb(300, 15, 0),
    lambda: abuseipdb(300, 15, 75),
    lambda: p2p(300, 16),
    lambda: crowdsec(300, 17),
    lambda: tor(100, 18),
)


def render() -> dict[str, str]:
    """Every file this module writes, by name, with its content."""
    files: dict[str, str] = {}
    for make in SAMPLES:
        files.update(make().files())
    return files


def write(files: Iterable[tuple[str, str]]) -> None:
    for name, text in files:
        (HERE / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    write(render().items())
