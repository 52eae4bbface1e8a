"""Runtime exemptions (migration 0004): what `bangctl allow` keeps from being banned.

Every query of `exemptions` lives here; each verb is one statement, so one commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .db import Database


@dataclass(frozen=True, slots=True)
class Exemption:
    network: str  # normalised, always with a prefix length ("203.0.113.9/32")
    comment: str | None
    created: float
    expires: float | None  # None: until removed

    def active(self, now: float) -> bool:
        return self.expires is None or self.expires > now

    def as_dict(self) -> dict[str, Any]:
        return {"network": self.network, "comment": self.comment, "created": self.created,
                "expires": self.expires}


class ExemptionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self) -> list[Exemption]:
        rows = await self.db.fetchall("SELECT * FROM exemptions ORDER BY network")
        return [Exemption(r["network"], r["comment"], r["created"], r["expires"])
                for r in rows]

    async def put(self, exemption: Exemption) -> None:
        """Add, or replace the comment and expiry of the same network's exemption."""
        await self.db.execute(
            "INSERT INTO exemptions (network, comment, created, expires) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(network) DO UPDATE SET comment = excluded.comment,"
            " created = excluded.created, expires = excluded.expires",
            (exemption.network, exemption.comment, exemption.created, exemption.expires),
        )

    async def delete(self, networks: list[str]) -> None:
        await self.db.executemany(
            "DELETE FROM exemptions WHERE network = ?", ((n,) for n in networks)
        )
