"""The one shape every geolocation source answers in.

Resolvers differ (local MMDB files, the ip-api.com service), but the cache and the control
socket should not care which one answered, only whether anything is known and where it came
from.
"""

from __future__ import annotations

from typing import Final, NamedTuple

ORIGIN_MMDB: Final = "mmdb"
ORIGIN_IP_API: Final = "ip-api"


GeoAnswer = tuple[str | None, str | None, int | None, str | None, str, bool]
"""What a source says about an address, without the address: GeoInfo's fields after `ip`."""

Run = tuple[GeoAnswer, list[str]]
"""Addresses that got the same answer. Bulk paths carry answers so (one answer per network
of an MMDB, say), as plain tuples, which Python's garbage collector stops tracking once it
has seen them (it tracks every GeoInfo, like any tuple subclass, as long as it lives)."""


class GeoInfo(NamedTuple):
    """What is known about one address.

    `ip` is the address exactly as the caller asked for it, so results map back onto the
    caller's keys without re-normalising. `negative` is True when the source knows nothing;
    a negative answer is still worth caching (for a shorter time) so the same unknown
    address is not asked about again and again.

    A named tuple rather than a frozen dataclass: bulk resolves make one per address, and a
    frozen dataclass took 740 ns to build against 200 ns (its __init__ goes through
    object.__setattr__ per field). Its fields are also, in order, the cache row's first
    seven columns.
    """

    ip: str
    country_code: str | None
    country_name: str | None
    asn: int | None
    as_org: str | None
    origin: str
    negative: bool


def negative_geo(ip: str, origin: str) -> GeoInfo:
    """An answer that says "this source knows nothing about `ip`"."""
    return GeoInfo(ip, None, None, None, None, origin, True)


def geo_from_fields(
    ip: str,
    country_code: str | None,
    country_name: str | None,
    asn: int | None,
    as_org: str | None,
    origin: str,
) -> GeoInfo:
    """Build an answer, marking it negative when every field is empty.

    Sources report "nothing known" in several ways (no record, empty strings, a record with
    no usable keys); deciding negativity here keeps that rule in one place.
    """
    negative = country_code is None and country_name is None and asn is None and as_org is None
    return GeoInfo(ip, country_code, country_name, asn, as_org, origin, negative)
