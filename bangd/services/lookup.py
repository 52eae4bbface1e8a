"""Which jails hold an address: the fail2ban half of `bangctl lookup`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from .geo import Listings, covering_entries


class Asking(Protocol):
    async def command(self, cmd: Sequence[str]) -> object: ...


async def banned_in(
    fail2ban: Asking, listings: Listings, jails: Sequence[str], address: str
) -> list[str]:
    """The jails in which fail2ban has `address` banned, itself or through a listed
    network containing it (fail2ban keeps a CIDR ban as one entry: asking for an
    address inside it answers 0). `jails` are the ones to ask even without a listing."""
    asked = {jail: {address} for jail in jails}
    covering = await asyncio.to_thread(covering_entries, address)
    for match in await listings.applied_matches(covering):
        asked.setdefault(match.jail, {address}).add(match.entry)
    found = []
    for jail, entries in sorted(asked.items()):
        result = await fail2ban.command(["get", jail, "banned", *sorted(entries)])
        flags = result if isinstance(result, list) else [result]
        if any(flags):
            found.append(jail)
    return found
