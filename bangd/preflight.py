"""Checks of what a valid config points at, for `bangd --check-config`.

Most are warnings, not errors: the unit runs --check-config before every start, and a
missing local list or a broken MMDB must not keep bangd from importing its other sources
(the daemon runs without them and says so in `bangctl status`). Only what would stop the
daemon anyway (a control.group that does not exist) is a problem.
"""

from __future__ import annotations

import asyncio
import os

from .config import Config
from .control.server import control_group_id
from .errors import BangdError, Fail2banError, GeoError
from .fail2ban.client import Fail2banClient
from .geo.mmdb import MmdbResolver

FAIL2BAN_CHECK_TIMEOUT = 3.0  # --check-config runs before every start: never wait long


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
    found += missing_jails(config, asyncio.run(fail2ban_jails(config)))
    return [f"{config.path}: warning: {text}" for text in found]


async def fail2ban_jails(config: Config) -> list[str] | None:
    """fail2ban's jail list, or None when it does not answer (nothing to check then:
    bangd waits for fail2ban and says so in `bangctl status`)."""
    client = Fail2banClient(config.fail2ban.socket,
                            timeout=min(config.fail2ban.timeout, FAIL2BAN_CHECK_TIMEOUT))
    try:
        return await client.jails()
    except (Fail2banError, OSError):
        return None
    finally:
        await client.close()


def missing_jails(config: Config, jails: list[str] | None) -> list[str]:
    """One warning per enabled source whose jail fail2ban does not have."""
    if jails is None:
        return []
    have = ", ".join(sorted(jails)) or "none"
    return [f"sources[{index}].jail: fail2ban has no jail {source.jail!r} (it has: {have}); "
            "the source fails until the jail exists"
            for index, source in enumerate(config.sources)
            if source.enabled and source.jail not in jails]
