"""The geo service the daemon holds: the resolver chain (chain.py), warming after
imports (warming.py), the replies of `bangctl lookup` (bangd/services/lookup.py) and
`bangctl cache stats`, behind one object; and how it is built from the `geo:` config.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from bangd.config import GeoConfig, IpApiConfig
from bangd.geo.ipapi import IpApiClient
from bangd.geo.mmdb import MmdbResolver
from bangd.services.geo.chain import DEFAULT_CHUNK, POSITIVE_TTL, GeoResolver
from bangd.services.geo.warming import GeoWarmer
from bangd.services.lookup import BannedIn, Listings, lookup_replies
from bangd.store.geo import CachedRows, GeoCacheStore
from bangd.store.imports import ImportStore


class GeoService:
    """Geolocation for one daemon: what the importer, the control commands and status
    use. It owns the resolvers it is given: `close()` cancels background warming and
    closes the MMDB files."""

    def __init__(
        self,
        store: GeoCacheStore,
        *,
        mmdb: MmdbResolver | None,
        ipapi: IpApiClient | None,
        negative_ttl: float,
        clock: Callable[[], float] = time.time,
        chunk: int = DEFAULT_CHUNK,
        positive_ttl: float | None = POSITIVE_TTL,
        listings: Listings | None = None,
    ) -> None:
        """`positive_ttl` None keeps positive rows fresh forever. `listings` defaults to
        the import ledger in the same database."""
        self.store = store
        self._ledger = listings if listings is not None else ImportStore(store.db)
        self._clock = clock
        self._resolver = GeoResolver(
            store, mmdb=mmdb, ipapi=ipapi, negative_ttl=negative_ttl, clock=clock,
            chunk=chunk, positive_ttl=positive_ttl,
        )
        self._warmer = GeoWarmer(self._resolver, self._ledger, clock=clock)

    @property
    def has_resolvers(self) -> bool:
        """False when neither an MMDB nor ip-api is configured: only the cache answers."""
        return self._resolver.has_resolvers

    @property
    def mmdb_corrupt(self) -> bool:
        return self._resolver.mmdb_corrupt

    async def resolve(self, ips: Sequence[str], *, refresh_seen: bool = True) -> CachedRows:
        """See GeoResolver.resolve."""
        return await self._resolver.resolve(ips, refresh_seen=refresh_seen)

    # -- importer hooks (warming.py) -----------------------------------------------------

    async def on_banned(self, source: str, addresses: Sequence[str]) -> None:
        await self._warmer.on_banned(source, addresses)

    async def on_unchanged(self, source: str) -> None:
        await self._warmer.on_unchanged(source)

    async def warm(self, source: str, addresses: list[str]) -> None:
        await self._warmer.warm(source, addresses)

    async def drain(self, grace: float) -> bool:
        return await self._warmer.drain(grace)

    async def close(self) -> None:
        """Cancel background warming, wait for MMDB threads, close the MMDB; idempotent."""
        await self._warmer.close()
        await self._resolver.close()

    # -- control commands ----------------------------------------------------------------

    async def lookup(
        self, ips: Sequence[str], *, banned_in: BannedIn | None = None
    ) -> list[dict[str, Any]]:
        """`bangctl lookup`: see bangd.services.lookup.lookup_replies."""
        return await lookup_replies(
            self.resolve, self._ledger, ips, banned_in=banned_in, clock=self._clock
        )

    async def stats(self) -> dict[str, Any]:
        """`bangctl cache stats`: rows, negative rows, last_seen range, rows per origin."""
        return await self.store.stats()


def make_ipapi(
    ip_api: IpApiConfig, session: aiohttp.ClientSession | None
) -> IpApiClient | None:
    """The ip-api client `geo.ip_api` asks for, or None. Keep it for the daemon's life:
    it carries the X-Rl/X-Ttl budget, which a fresh client would not know was spent."""
    if not ip_api.enabled:
        return None
    if session is None:
        raise ValueError("geo.ip_api.enabled needs an aiohttp session")
    return IpApiClient(session, ip_api.url, timeout=ip_api.timeout)


def build_geo_service(
    geo_config: GeoConfig,
    store: GeoCacheStore,
    ipapi: IpApiClient | None,
    clock: Callable[[], float] = time.time,
) -> GeoService:
    """The GeoService `geo:` asks for. Opens the MMDB files now, so a missing or wrong
    file fails at once (GeoError naming geo.mmdb / geo.asn_mmdb and the file)."""
    mmdb = None
    if geo_config.mmdb is not None or geo_config.asn_mmdb is not None:
        mmdb = MmdbResolver(geo_config.mmdb, geo_config.asn_mmdb)
    return GeoService(
        store, mmdb=mmdb, ipapi=ipapi, negative_ttl=geo_config.negative_ttl, clock=clock
    )
