"""What `bangctl lookup` answers beside the geo data: the address in bangd's form, the
listed entries that cover it, and which jails hold it.

The geo cache answers what an address is; this module shapes one lookup reply and asks
fail2ban about it, each answer bounded in time, so a slow fail2ban never holds a lookup.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from ..config import IPNetwork
from ..errors import Fail2banError, Fail2banUnreachable, InvalidRequest
from ..sources.parse import RESERVED_NETWORKS
from ..store.geo import CachedGeo
from ..store.imports import AppliedMatch

BANNED_IN_TIMEOUT = 15.0  # bound on the daemon's "which jails ban it" question per address
BANNED_IN_BUDGET = 30.0  # and on all of them in one lookup
MAX_LOOKUP = 256  # addresses per lookup request: each costs ~130 key searches

BannedIn = Callable[[str], Awaitable[list[str]]]


class BannedJails(list[str]):
    """The jails holding an address, and `errors`: the jails that could not be asked,
    each with why (a missing jail only affects its own row)."""

    def __init__(self, jails: Sequence[str] = (), errors: dict[str, str] | None = None) -> None:
        super().__init__(jails)
        self.errors = errors or {}


class Listings(Protocol):
    """What the import ledger knows that geo needs: which entries the sources list."""

    async def applied_matches(self, entries: Sequence[str]) -> list[AppliedMatch]: ...
    async def mark_listed_seen(self, source: str, now: float) -> int: ...


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
    found = BannedJails()
    for jail, entries in sorted(asked.items()):
        try:
            result = await fail2ban.command(["get", jail, "banned", *sorted(entries)])
        except Fail2banUnreachable:
            raise  # every jail would fail the same way, each after a timeout
        except Fail2banError as exc:
            found.errors[jail] = str(exc)
            continue
        flags = result if isinstance(result, list) else [result]
        if any(flags):
            found.append(jail)
    if found.errors and not found and len(found.errors) == len(asked):
        raise Fail2banError("; ".join(f"{j}: {e}" for j, e in sorted(found.errors.items())))
    return found


def skip_reasons(
    address: str, *, allowlist: Sequence[IPNetwork], skip_reserved: bool,
    exempt: Sequence[IPNetwork],
) -> list[dict[str, str]]:
    """Why an import would skip `address` (or a listed network holding it): each config
    allowlist rule, runtime exemption and (with skip_reserved) reserved range covering it."""
    parsed = ipaddress.ip_address(address)
    rules = [("allowlist", n) for n in allowlist] + [("exemption", n) for n in exempt]
    if skip_reserved:
        rules += [("reserved", ipaddress.ip_network(n)) for n in RESERVED_NETWORKS]
    return [{"reason": reason, "rule": str(network)} for reason, network in rules
            if network.version == parsed.version and parsed in network]


def normalise_address(text: str) -> str:
    """The form bangd stores addresses in; IPv4-mapped IPv6 becomes IPv4.

    Raises InvalidRequest (a ValueError) naming `text` when it is not a single IP address.
    """
    try:
        if not isinstance(text, str):
            raise ValueError(text)
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        raise InvalidRequest(
            f"not an IP address: {text!r}; give single addresses like 192.0.2.1 or 2001:db8::1"
        ) from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def covering_map(addresses: list[str]) -> dict[str, list[str]]:
    """Each covering entry -> the addresses it covers (CPU work: run in a thread)."""
    covering: dict[str, list[str]] = {}
    for address in addresses:
        for entry in covering_entries(address):
            covering.setdefault(entry, []).append(address)
    return covering


def covering_entries(address: str) -> list[str]:
    """`address` itself and every network containing it, in canonical text form."""
    parsed = ipaddress.ip_address(address)
    entries = [address]
    for prefix in range(parsed.max_prefixlen, -1, -1):
        entries.append(str(ipaddress.ip_network((parsed, prefix), strict=False)))
    return entries


def geo_reply(address: str, row: CachedGeo | None, now: float) -> dict[str, Any]:
    if row is None:
        return {
            "ip": address, "cached": False, "country_code": None, "country_name": None,
            "asn": None, "as_org": None, "origin": None, "negative": None,
            "first_resolved": None, "last_resolved": None, "last_seen": None, "age": None,
        }
    info = row.info
    return {
        "ip": address, "cached": True, "country_code": info.country_code,
        "country_name": info.country_name, "asn": info.asn, "as_org": info.as_org,
        "origin": info.origin, "negative": info.negative,
        "first_resolved": row.first_resolved, "last_resolved": row.last_resolved,
        "last_seen": row.last_seen, "age": max(now - row.last_resolved, 0.0),
    }


async def ask_banned_in(banned_in: BannedIn | None, address: str) -> dict[str, Any]:
    if banned_in is None:
        return {"banned_in": None, "banned_in_error": "fail2ban was not asked",
                "jail_errors": {}}
    try:
        async with asyncio.timeout(BANNED_IN_TIMEOUT):
            jails = await banned_in(address)
    except TimeoutError:
        return {"banned_in": None,
                "banned_in_error": f"no answer within {BANNED_IN_TIMEOUT:g} s; try again",
                "jail_errors": {}}
    except Exception as err:
        return {"banned_in": None, "banned_in_error": str(err) or type(err).__name__,
                "jail_errors": {}}
    errors = jails.errors if isinstance(jails, BannedJails) else {}
    return {"banned_in": sorted(jails), "banned_in_error": None, "jail_errors": errors}
