"""Geolocation from local MaxMind-format databases (GeoLite2, DB-IP lite).

Lookups use maxminddb's reader directly rather than geoip2's model classes: geoip2 builds
a tree of model objects per answer and only lets each method run on one database type,
while bangd needs four fields, and the raw record dicts are about three times faster
(see bench/bench_geo_lookup.py). geoip2 itself wraps the same maxminddb reader, so no
extra dependency is involved.

Everything here is synchronous and CPU-bound: callers run it off the event loop
(`asyncio.to_thread`), in chunks.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable
from typing import Protocol

import maxminddb

from bangd.errors import GeoError
from bangd.geo.model import ORIGIN_MMDB, GeoInfo, negative_geo

log = logging.getLogger(__name__)

_COUNTRY_TYPE_WORDS = ("Country", "City")
_ASN_TYPE_WORDS = ("ASN",)


class _RecordReader(Protocol):
    """The part of maxminddb's reader (C extension or pure Python) used here."""

    def get(self, ip_address: str) -> object: ...

    def close(self) -> None: ...


class MmdbResolver:
    """Answers from a Country/City database, an ASN database, or both combined.

    Either path may be None (that half of the answer then stays empty), not both. Each
    file is opened once and checked for the right `database_type`, so a swapped or
    corrupt file fails at startup with a message naming the config key and the file.
    Lookups never raise for unknown or malformed addresses: they answer negative.
    """

    def __init__(self, country_path: str | None, asn_path: str | None) -> None:
        if country_path is None and asn_path is None:
            raise ValueError("MmdbResolver needs a country or an ASN database path")
        self._country: _RecordReader | None = None
        self._asn: _RecordReader | None = None
        self._country_ipv4_only = False
        self._asn_ipv4_only = False
        self._closed = False
        self.corrupt = False  # a lookup hit a broken data section: shown in status
        try:
            if country_path is not None:
                self._country, self._country_ipv4_only = _open_checked(
                    country_path, "geo.mmdb", _COUNTRY_TYPE_WORDS, "a Country or City"
                )
            if asn_path is not None:
                self._asn, self._asn_ipv4_only = _open_checked(
                    asn_path, "geo.asn_mmdb", _ASN_TYPE_WORDS, "an ASN"
                )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the memory maps; safe to call twice. Lookups after close raise."""
        for reader in (self._country, self._asn):
            if reader is not None:
                reader.close()
        self._country = None
        self._asn = None
        self._closed = True

    def __enter__(self) -> MmdbResolver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def lookup(self, ip: str) -> GeoInfo:
        """What the databases know about `ip`; negative when neither knows anything.

        Written flat (no helper per database) because it runs once per address in
        bulk imports: each Python call saved is measurable against the C lookup.
        """
        if self._closed:
            # A negative answer here would be cached as "nothing known" for negative_ttl.
            raise GeoError("the MMDB was closed (bangd is reloading or stopping)")
        key = _lookup_key(ip)
        if key is None:
            return negative_geo(ip, ORIGIN_MMDB)
        is_ipv6 = ":" in key
        country_code = country_name = as_org = None
        asn = None
        if self._country is not None and not (is_ipv6 and self._country_ipv4_only):
            record = self._get(self._country, key)
            if record is not None:
                country_code, country_name = _country_fields(record)
        if self._asn is not None and not (is_ipv6 and self._asn_ipv4_only):
            record = self._get(self._asn, key)
            if record is not None:
                asn, as_org = _asn_fields(record)
        if country_code is None and country_name is None and asn is None and as_org is None:
            return negative_geo(ip, ORIGIN_MMDB)
        return GeoInfo(ip, country_code, country_name, asn, as_org, ORIGIN_MMDB, False)

    def _get(self, reader: _RecordReader, key: str) -> object:
        """The record for `key`, or None when the reader refuses the address or the
        file's data is broken (then `corrupt` is set, once logged, for status to show)."""
        try:
            return reader.get(key)
        except ValueError:
            return None
        except maxminddb.InvalidDatabaseError as err:
            if not self.corrupt:
                log.error("MMDB data is corrupt (%s): lookups answer nothing known; "
                          "download the database again and reload bangd", err)
            self.corrupt = True
            return None

    def lookup_many(self, ips: Iterable[str]) -> list[GeoInfo]:
        """`lookup` for each address, answers in the same order."""
        lookup = self.lookup
        return [lookup(ip) for ip in ips]


def _open_checked(
    path: str, config_key: str, type_words: tuple[str, ...], wanted: str
) -> tuple[_RecordReader, bool]:
    """Open `path` and insist its database_type contains one of `type_words`."""
    try:
        reader = maxminddb.open_database(path)
    except OSError as err:
        reason = err.strerror or str(err)
        raise GeoError(
            f"{config_key}: cannot open {path}: {reason}; fix the path or set {config_key}: null"
        ) from err
    except Exception as err:  # InvalidDatabaseError, or TypeError/ValueError in pure Python
        raise GeoError(
            f"{config_key}: {path} is not a valid MaxMind DB file ({err}); download it again"
        ) from err
    metadata = reader.metadata()
    database_type = str(metadata.database_type)
    if not any(word in database_type for word in type_words):
        reader.close()
        raise GeoError(
            f"{config_key}: {path} is a {database_type!r} database, not {wanted} one; "
            f"point {config_key} at {wanted} database"
        )
    return reader, metadata.ip_version == 4


def _lookup_key(ip: str) -> str | None:
    """The string to hand the reader, or None when `ip` is not a plain IP address.

    IPv4 is checked with inet_pton, which is strict (the C reader would also accept
    forms like "8.8.2056" and answer for the wrong address) and much cheaper than
    `ipaddress`. IPv6 goes through `ipaddress` to unwrap IPv4-mapped addresses, which
    databases written by mmdb-writer (and DB-IP's) do not alias to their IPv4 records.
    """
    if ":" not in ip:
        try:
            socket.inet_pton(socket.AF_INET, ip)
        except (OSError, ValueError):
            return None
        return ip
    if "%" in ip:
        return None
    try:
        address = ipaddress.IPv6Address(ip)
    except ValueError:
        return None
    mapped = address.ipv4_mapped
    return str(mapped) if mapped is not None else str(address)


def _country_fields(record: object) -> tuple[str | None, str | None]:
    """ISO code and English name; registered_country stands in when location is unknown."""
    if not isinstance(record, dict):
        return None, None
    country = record.get("country") or record.get("registered_country")
    if not isinstance(country, dict):
        return None, None
    code = country.get("iso_code")
    names = country.get("names")
    name = names.get("en") if isinstance(names, dict) else None
    return (
        code if isinstance(code, str) and code else None,
        name if isinstance(name, str) and name else None,
    )


def _asn_fields(record: object) -> tuple[int | None, str | None]:
    if not isinstance(record, dict):
        return None, None
    number = record.get("autonomous_system_number")
    org = record.get("autonomous_system_organization")
    return (
        number if isinstance(number, int) and not isinstance(number, bool) else None,
        org if isinstance(org, str) and org else None,
    )
