"""What `bangctl stats` groups: bangd's applied entries joined with the geo cache.

Addresses are grouped in SQL (one key search in geo_cache per distinct entry); networks,
which the geo cache has no row for, are returned with the row of their first address so
the caller can weigh each by its size.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .db import Database
from .imports import IN_CHUNK, ImportStore, chunked

GROUP_COLUMNS = {"country": "g.country_code", "asn": "g.asn"}


@dataclass(frozen=True, slots=True)
class Group:
    key: str | int | None  # country code or AS number; None: not (yet) known
    label: str | None  # country name or AS organisation
    count: int  # addresses


class BanStatsStore:
    def __init__(self, db: Database, ledger: ImportStore) -> None:
        """`ledger` is the import ledger over the same connection: its confirmed batches are
        folded into `applied` before this reads it."""
        self.db = db
        self.ledger = ledger

    async def addresses_by(self, by: str) -> list[Group]:
        """Distinct applied single addresses per country or AS."""
        await self.ledger.folded()
        column = GROUP_COLUMNS[by]
        label = "g.country_name" if by == "country" else "g.as_org"
        rows = await self.db.fetchall(
            f"SELECT {column} AS k, max({label}) AS label, COUNT(*) AS n FROM"
            " (SELECT DISTINCT entry FROM applied WHERE state = 'applied'"
            "  AND instr(entry, '/') = 0) a"
            " LEFT JOIN geo_cache g ON g.ip = a.entry AND g.negative = 0"
            f" GROUP BY {column}"
        )
        return [Group(r["k"], r["label"], r["n"]) for r in rows]

    async def networks_by(self, by: str) -> list[Group]:
        """Distinct applied networks, each weighted by its number of addresses and
        grouped by the geo row of its first address (if one is cached)."""
        await self.ledger.folded()
        networks = [str(n) for n in await self.db.fetchcolumn(
            "SELECT DISTINCT entry FROM applied WHERE state = 'applied'"
            " AND instr(entry, '/') > 0"
        )]
        first = {n: str(ipaddress.ip_network(n).network_address) for n in networks}
        geo: dict[str, tuple[str | int | None, str | None]] = {}
        column = "country_code" if by == "country" else "asn"
        label = "country_name" if by == "country" else "as_org"
        for part in chunked(sorted(set(first.values())), IN_CHUNK):
            marks = ",".join("?" * len(part))
            for row in await self.db.fetchall(
                f"SELECT ip, {column} AS k, {label} AS label FROM geo_cache"
                f" WHERE negative = 0 AND ip IN ({marks})", tuple(part),
            ):
                geo[row["ip"]] = (row["k"], row["label"])
        groups: dict[str | int | None, tuple[str | None, int]] = {}
        for network, address in first.items():
            key, name = geo.get(address, (None, None))
            net = ipaddress.ip_network(network)
            # An IPv6 /48 holds 2**80 addresses and would drown every IPv4 figure: IPv6
            # entries count once each.
            size = net.num_addresses if net.version == 4 else 1
            _, count = groups.get(key, (name, 0))
            groups[key] = (name, count + size)
        return [Group(k, name, count) for k, (name, count) in groups.items()]
