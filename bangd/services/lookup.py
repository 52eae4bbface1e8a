"""What `bangctl lookup` answers: the address in bangd's form, what the geo cache knows
of it, the listed entries that cover it, and which jails hold it.

The geo cache answers what an address is; this module shapes the lookup replies and asks
fail2ban about each address, each answer bounded in time, so a slow fail2ban never holds
a lookup.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
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
Resolve = Callable[[Sequence[str]], Awaitable[Mapping[str, CachedGeo]]]


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


async def lookup_replies(
    resolve: Resolve,
    listings: Listings,
    ips: Sequence[str],
    *,
    banned_in: BannedIn | None,
    clock: Callable[[], float],
) -> list[dict[str, Any]]:
    """`bangctl lookup`: one JSON-ready dict per distinct address, in the order given.

    Raises InvalidRequest (a ValueError) naming the first argument that is not an IP
    address. `resolve` is the geo cache's (looking an address up counts as seeing it:
    last_seen is refreshed). `sources` lists the applied entries that are the address
    itself or a network containing it. `banned_in` (the daemon asks fail2ban) is called
    once per address; when it fails, `banned_in` is None and `banned_in_error` says why.
    """
    if not ips:
        raise InvalidRequest("lookup needs at least one IP address")
    if len(ips) > MAX_LOOKUP:
        raise InvalidRequest(f"at most {MAX_LOOKUP} addresses per lookup, got {len(ips)}")
    addresses = list(dict.fromkeys(normalise_address(ip) for ip in ips))
    resolved = await resolve(addresses)
    started = time.monotonic()
    covered = await _listed_entries(listings, addresses)
    now = clock()
    replies = []
    for address in addresses:
        reply = geo_reply(address, resolved.get(address), now)
        reply["sources"] = [
            {"source": m.source, "jail": m.jail, "entry": m.entry}
            for m in covered.get(address, [])
        ]
        if time.monotonic() - started < BANNED_IN_BUDGET:
            reply.update(await ask_banned_in(banned_in, address))
        else:
            reply.update({"banned_in": None, "jail_errors": {},
                          "banned_in_error": "not asked: this lookup took too long"})
        replies.append(reply)
    return replies


async def _listed_entries(
    listings: Listings, addresses: list[str]
) -> dict[str, list[AppliedMatch]]:
    """Applied entries equal to each address or to a network containing it.

    Lists store networks with host bits cleared, so the networks containing an address
    are exactly its 33 (IPv4) or 129 (IPv6) prefixes: key searches, no scan.
    """
    covering = await asyncio.to_thread(covering_map, addresses)
    found: dict[str, list[AppliedMatch]] = {}
    for match in await listings.applied_matches(list(covering)):
        for address in covering[match.entry]:
            found.setdefault(address, []).append(match)
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
