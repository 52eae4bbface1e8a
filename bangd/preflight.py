"""Checks of what a valid config points at, for `bangd --check-config`.

They are warnings, not errors: the unit runs --check-config before every start, and a
missing local list or a broken MMDB must not keep bangd from importing its other sources
(the daemon runs without them and says so in `bangctl status`).
"""

from __future__ import annotations

import grp
import os

from .config import Config
from .errors import GeoError
from .geo.mmdb import MmdbResolver


def warnings_for(config: Config) -> list[str]:
    found: list[str] = []
    for index, source in enumerate(config.sources):
        if source.path is None or not source.enabled:
            continue
        if not os.path.isfile(source.path):
            found.append(f"sources[{index}].path: {source.path}: no such file; the source "
                         "fails until it exists")
        elif not os.access(source.path, os.R_OK):
            found.append(f"sources[{index}].path: {source.path}: not readable")
    if config.geo.mmdb is not None or config.geo.asn_mmdb is not None:
        try:
            MmdbResolver(config.geo.mmdb, config.geo.asn_mmdb).close()
        except GeoError as exc:
            found.append(f"{exc}; bangd runs without MMDB lookups until it is fixed")
    if config.control.group is not None:
        try:
            grp.getgrnam(config.control.group)
        except KeyError:
            found.append(f"control.group: no group {config.control.group!r} on this system; "
                         "bangd will not start until it exists (groupadd)")
    return [f"{config.path}: warning: {text}" for text in found]
