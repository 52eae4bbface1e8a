"""What `bangctl bans` lists: the entries bangd applied, per jail, with their sources.

Read from the `applied` ledger only (what bangd applied, not what fail2ban holds: that is
`verify`), bounded by a limit; the counts cover everything the filter matches.
"""

from __future__ import annotations

from typing import Any

from ..store.imports import ImportStore


async def list_bans(
    store: ImportStore, *, jail: str | None, source: str | None, limit: int
) -> dict[str, Any]:
    entries = await store.applied_listing(jail=jail, source=source, limit=limit)
    by_jail, by_source = await store.applied_counts(jail=jail, source=source)
    total = sum(by_jail.values())
    return {"entries": [e.as_dict() for e in entries], "total": total,
            "truncated": total > len(entries), "limit": limit,
            "by_jail": by_jail, "by_source": by_source}
