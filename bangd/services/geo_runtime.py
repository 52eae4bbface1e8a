"""The daemon's geolocation, kept for its whole life: a GeoService that reloads replace.

Importers and commands hold this object, not a GeoService: a reload that changes `geo:`
(or finds the MMDB files replaced, as geoipupdate does) swaps the service inside. A broken
MMDB is logged and shown in status, and geo runs without it, because losing geolocation
must never stop blocklist imports.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence

import aiohttp

from ..config import GeoConfig, IpApiConfig
from ..errors import BangdError
from ..files import FileIdentity, file_identity
from ..geo.ipapi import IpApiClient
from ..store.geo import GeoCacheStore
from .geo import GeoService, build_geo_service, make_ipapi

log = logging.getLogger(__name__)

GEO_DRAIN = 1.0  # background geo warming gets this long to finish before a reload/stop
_REOPEN_ON_CHANGE = ("mmdb", "asn_mmdb", "ip_api", "negative_ttl")


class GeoRuntime:
    def __init__(
        self, settings: GeoConfig, store: GeoCacheStore, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._clock = clock
        # ip-api gets an ordinary session: the list-fetching one leaves gzip to the fetcher.
        self._session = aiohttp.ClientSession()
        self._ipapi_settings: IpApiConfig | None = None
        self._ipapi: IpApiClient | None = None
        self._error: str | None = None
        self._files: tuple[FileIdentity | None, ...] = ()
        self._settings = settings
        self._service = self._open(settings)

    @property
    def service(self) -> GeoService:
        return self._service

    @property
    def problem(self) -> str | None:
        """What is wrong with geolocation now, for status: a file that would not open, or
        one whose data turned out corrupt during lookups."""
        if self._error is not None:
            return self._error
        if self._service.mmdb_corrupt:
            return ("the MMDB's data is corrupt: lookups answer nothing known; download it "
                    "again and reload bangd")
        return None

    def resolver_names(self) -> list[str]:
        names = []
        if (self._settings.mmdb or self._settings.asn_mmdb) and self._error is None:
            names.append("mmdb")
        if self._settings.ip_api.enabled:
            names.append("ip-api")
        return names

    async def reconfigure(self, settings: GeoConfig) -> None:
        """Reopen when a resolver setting changed, the MMDB was broken, or its files were
        replaced under the same names."""
        old, self._settings = self._settings, settings
        if (
            any(getattr(old, f) != getattr(settings, f) for f in _REOPEN_ON_CHANGE)
            or self._error is not None
            or _identities(settings) != self._files
        ):
            await self._close_service()
            self._service = self._open(settings)

    async def on_banned(self, source: str, addresses: Sequence[str]) -> None:
        await self._service.on_banned(source, addresses)

    async def on_unchanged(self, source: str) -> None:
        await self._service.on_unchanged(source)

    async def close(self) -> None:
        await self._close_service()
        await self._session.close()

    def _open(self, settings: GeoConfig) -> GeoService:
        if self._ipapi_settings != settings.ip_api:
            # One client across reloads: it carries ip-api's rate-limit budget.
            self._ipapi_settings = settings.ip_api
            self._ipapi = make_ipapi(settings.ip_api, self._session)
        self._files = _identities(settings)
        try:
            service = build_geo_service(settings, self._store, self._ipapi, self._clock)
        except BangdError as exc:
            self._error = str(exc)
            log.error("geo: %s; running without MMDB lookups until fixed and reloaded", exc)
            without_mmdb = dataclasses.replace(settings, mmdb=None, asn_mmdb=None)
            return build_geo_service(without_mmdb, self._store, self._ipapi, self._clock)
        self._error = None
        return service

    async def _close_service(self) -> None:
        await self._service.drain(GEO_DRAIN)  # let warming in progress land first
        await self._service.close()


def _identities(settings: GeoConfig) -> tuple[FileIdentity | None, ...]:
    return (file_identity(settings.mmdb), file_identity(settings.asn_mmdb))
