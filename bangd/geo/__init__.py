"""Geolocation resolvers: local MaxMind-format databases and the ip-api.com fallback.

Both answer with `GeoInfo`; the cache layer decides which to ask and what to keep.
"""

from bangd.geo.ipapi import IpApiClient, IpApiUnavailable
from bangd.geo.mmdb import MmdbResolver
from bangd.geo.model import ORIGIN_IP_API, ORIGIN_MMDB, GeoInfo, negative_geo

__all__ = [
    "ORIGIN_IP_API",
    "ORIGIN_MMDB",
    "GeoInfo",
    "IpApiClient",
    "IpApiUnavailable",
    "MmdbResolver",
    "negative_geo",
]
