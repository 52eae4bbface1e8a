"""Checks of what a valid config points at, for `bangd --check-config`.

Most are warnings, not errors: the unit runs --check-config before every start, and a
missing local list or a broken MMDB must not keep bangd from importing its other sources
(the daemon runs without them and says so in `bangctl status`). Only what would stop the
daemon anyway (a control.group that does not exist) is a problem.
"""

from __future__ import annotations

import os

from .config import Config
from .control.server import control_group_id
from .errors import BangdError, GeoError
from .geo.mmdb import MmdbResolver


def problems_for(config: Config) -> list[str]:
    """What keeps bangd from starting at all, though the file itself is valid."""
    found: list[str] = []
    try:
        control_group_id(config.control.group)
    except BangdError as exc:
        found.append(str(exc))
    return [f"{config.path}: {text}" for text in found]


def warnings_for(config: Config) -> list[str]:
    """What bangd starts without, but should be fixed."""
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
    return [f"{config.path}: warning: {text}" for text in found]
