"""Runtime exemptions: addresses and networks an operator keeps from being banned, now.

They are the importer's allowlist screen extended (FilterSettings.exempt): while one
stands, no import and no reconciliation bans what it covers. Adding one lifts at once,
through the apply protocol, every entry bangd applied that it overlaps (the screen drops
an entry that overlaps an allowlisted network, so the next import agrees); one that is
removed or expires changes the filter's digest, so the next import puts the entries back.
Kept in memory for the synchronous filter, in the database for restarts.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from ..config import IPNetwork
from ..errors import InvalidRequest, UnknownExemption
from ..sources.parse_process import screened_out
from ..store.exemptions import Exemption, ExemptionStore
from ..store.imports import ImportStore
from .apply import Applier

log = logging.getLogger(__name__)

MAX_COMMENT = 200


def normalised(text: str | None) -> IPNetwork:
    """The network an operator typed: host bits cleared, IPv4-mapped IPv6 as IPv4."""
    if not text:
        raise InvalidRequest("network is required: an address or network such as "
                             "203.0.113.7 or 2001:db8::/48")
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise InvalidRequest(
            f"network {text!r} is not an address or network; e.g. 203.0.113.7 or 2001:db8::/48"
        ) from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96 \
            and network.network_address.ipv4_mapped is not None:
        mapped = network.network_address.ipv4_mapped
        network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}", strict=False)
    return network


class Exemptions:
    def __init__(self, store: ExemptionStore, *, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock
        self._by_network: dict[str, Exemption] = {}

    async def load(self) -> None:
        self._by_network = {e.network: e for e in await self.store.all()}

    def all(self) -> list[Exemption]:
        return sorted(self._by_network.values(), key=lambda e: e.network)

    def active(self) -> list[Exemption]:
        now = self.clock()
        return [e for e in self.all() if e.active(now)]

    def networks(self) -> tuple[IPNetwork, ...]:
        """What the importer's screen adds to the allowlist right now."""
        return tuple(ipaddress.ip_network(e.network) for e in self.active())

    def covering(self, address: str) -> list[Exemption]:
        """Active exemptions that hold `address` (an address or a network)."""
        target = ipaddress.ip_network(address, strict=False)
        return [e for e in self.active()
                if _overlap(ipaddress.ip_network(e.network), target)]

    async def add(self, text: str | None, *, seconds: int, comment: str | None) -> Exemption:
        network = normalised(text)
        now = self.clock()
        exemption = Exemption(str(network), comment, now, now + seconds if seconds else None)
        await self.store.put(exemption)
        self._by_network[exemption.network] = exemption
        return exemption

    async def remove(self, text: str | None) -> Exemption:
        key = str(normalised(text))
        exemption = self._by_network.get(key)
        if exemption is None:
            raise UnknownExemption(
                f"no exemption for {key}; see bangctl allow --list"
            )
        await self.store.delete([key])
        del self._by_network[key]
        return exemption

    async def expire(self) -> list[Exemption]:
        """Forget the exemptions whose time is up (the filter already ignores them)."""
        now = self.clock()
        gone = [e for e in self._by_network.values() if not e.active(now)]
        if gone:
            await self.store.delete([e.network for e in gone])
            for exemption in gone:
                del self._by_network[exemption.network]
                log.info("exemption network=%s expired", exemption.network)
        return gone


async def lift(store: ImportStore, applier: Applier, network: IPNetwork) -> int:
    """Unban now, through the apply protocol, every applied entry `network` overlaps;
    return how many (source, jail, entry) rows were lifted."""
    lifted = 0
    async with applier.lock:
        for source in await store.known_sources():
            for jail in await store.jails_of(source):
                entries = await store.entries_of(source, jail)
                covered = await screened_out(entries, allowlist=(network,),
                                             skip_reserved=False)
                if covered:
                    lifted += await applier.remove(source, jail, covered)
                    await store.mark_stale(source)
    return lifted


def _overlap(a: IPNetwork, b: IPNetwork) -> bool:
    return a.version == b.version and a.overlaps(b)


async def unscreen(store: ImportStore) -> None:
    """An exemption went: every source re-applies its whole list at its next import (the
    filter's digest alone could match a run that raced the exemption's arrival)."""
    for name in await store.known_sources():
        await store.mark_stale(name)
