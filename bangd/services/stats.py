"""`bangctl stats` and the per-country metric: banned addresses grouped by country or AS.

An IPv4 network counts as many addresses as it holds (a /16 is 65,536), so one big listed
range weighs what it blocks; an IPv6 entry counts once (a /48 holds 2**80 addresses, which
would make every IPv4 figure vanish). Groups beyond the top N are summed into "other",
which keeps the table short and the metric's label set bounded.
"""

from __future__ import annotations

from typing import Any

from ..store.banstats import BanStatsStore

UNKNOWN = "unknown"
OTHER = "other"


async def banned_by(store: BanStatsStore, *, by: str, top: int) -> dict[str, Any]:
    merged: dict[str | int | None, list[Any]] = {}
    for group in [*await store.addresses_by(by), *await store.networks_by(by)]:
        slot = merged.setdefault(group.key, [group.label, 0])
        slot[0] = slot[0] or group.label
        slot[1] += group.count
    ranked = sorted(merged.items(), key=lambda kv: (-kv[1][1], str(kv[0])))
    total = sum(count for _, (_, count) in ranked)
    rows = [_row(by, key, label, count, total) for key, (label, count) in ranked[:top]]
    rest = sum(count for _, (_, count) in ranked[top:])
    if rest:
        rows.append({"key": OTHER, "label": f"{len(ranked) - top} more", "addresses": rest,
                     "share": rest / total})
    return {"by": by, "top": top, "total": total, "groups": rows}


def _row(by: str, key: str | int | None, label: str | None, count: int,
         total: int) -> dict[str, Any]:
    name = UNKNOWN if key is None else f"AS{key}" if by == "asn" else str(key)
    return {"key": name, "label": label, "addresses": count,
            "share": count / total if total else 0.0}
