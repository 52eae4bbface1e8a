"""Geolocation for bangd, over the geo cache (bangd/store/geo.py) and the resolvers
(bangd/geo/):

  chain.py     the cache in front of the resolvers: resolve many addresses at once
  warming.py   after imports, in the background: resolve what was newly banned
  service.py   GeoService, the one object the daemon holds, and how config builds it

`bangctl lookup`'s replies are shaped in bangd/services/lookup.py; geo across reloads is
bangd/services/geo_runtime.py.
"""

from bangd.services.geo.chain import DAY, POSITIVE_TTL, GeoResolver
from bangd.services.geo.service import GeoService, build_geo_service, make_ipapi
from bangd.services.geo.warming import GeoWarmer

__all__ = [
    "DAY",
    "POSITIVE_TTL",
    "GeoResolver",
    "GeoService",
    "GeoWarmer",
    "build_geo_service",
    "make_ipapi",
]
