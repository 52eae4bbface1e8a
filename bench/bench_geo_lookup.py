"""How much MmdbResolver costs over maxminddb's bare reader, measured side by side.

Writes a ~10k-network GeoLite2-Country-style database, draws 100,000 addresses (most
inside mapped networks, some not, a few IPv6), then times in one run:
  raw      maxminddb Reader.get() per address (the floor: C lookup + dict decoding)
  resolver MmdbResolver.lookup_many (validation, field extraction, GeoInfo objects)
  geoip2   geoip2 Reader.country() per address, for reference (model objects)
Run: .venv/bin/python bench/bench_geo_lookup.py
"""

from __future__ import annotations

import contextlib
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import geoip2.database
import geoip2.errors
import maxminddb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bangd.geo.mmdb import MmdbResolver
from tests.mmdb_factory import (
    CountryNet,
    filler_address,
    filler_country_nets,
    write_country_db,
)

NETWORKS = 10_000
ADDRESSES = 100_000
ROUNDS = 3


def make_addresses(rng: random.Random) -> list[str]:
    """80% mapped IPv4, 18% unmapped IPv4, 2% IPv6 (mapped range or not)."""
    addresses = []
    for _ in range(ADDRESSES):
        roll = rng.random()
        if roll < 0.80:
            addresses.append(filler_address(rng.randrange(NETWORKS), rng.randrange(1, 255)))
        elif roll < 0.98:
            addresses.append(f"203.0.{rng.randrange(256)}.{rng.randrange(1, 255)}")
        else:
            addresses.append(f"2a00:1450::{rng.randrange(1, 65535):x}")
    return addresses


def best_rate(run: Callable[[], object]) -> float:
    """Addresses per second of the fastest of ROUNDS runs (the least disturbed one)."""
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return ADDRESSES / best


def main() -> None:
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "country.mmdb"
        started = time.perf_counter()
        nets = [*filler_country_nets(NETWORKS), CountryNet("2a00:1450::/32", "IE", "Ireland")]
        write_country_db(path, nets)
        print(f"generated {len(nets)} networks in {time.perf_counter() - started:.1f} s")
        addresses = make_addresses(rng)

        raw_reader = maxminddb.open_database(str(path))
        resolver = MmdbResolver(str(path), None)
        geoip2_reader = geoip2.database.Reader(str(path))

        def raw() -> None:
            get = raw_reader.get
            for ip in addresses:
                get(ip)

        def geoip2_models() -> None:
            country = geoip2_reader.country
            for ip in addresses:
                with contextlib.suppress(geoip2.errors.AddressNotFoundError):
                    country(ip)

        raw_rate = best_rate(raw)
        resolver_rate = best_rate(lambda: resolver.lookup_many(addresses))
        geoip2_rate = best_rate(geoip2_models)
        print(f"raw maxminddb Reader.get():   {raw_rate:>10,.0f} lookups/s")
        print(f"MmdbResolver.lookup_many():   {resolver_rate:>10,.0f} lookups/s")
        print(f"geoip2 Reader.country():      {geoip2_rate:>10,.0f} lookups/s")
        print(f"resolver / raw:    {resolver_rate / raw_rate:.2f}")
        print(f"resolver / geoip2: {resolver_rate / geoip2_rate:.2f}")
        resolver.close()
        raw_reader.close()
        geoip2_reader.close()


if __name__ == "__main__":
    main()
