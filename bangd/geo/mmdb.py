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

import logging
from collections.abc import Callable, Iterable
from socket import AF_INET, AF_INET6, inet_ntop, inet_pton
from typing import Any, Protocol

import maxminddb

from bangd.errors import GeoError
from bangd.geo.model import ORIGIN_MMDB, GeoAnswer, GeoInfo, Run

log = logging.getLogger(__name__)

_COUNTRY_TYPE_WORDS = ("Country", "City")
_ASN_TYPE_WORDS = ("ASN",)


class _RecordReader(Protocol):
    """The part of maxminddb's reader (C extension or pure Python) used here."""

    def get_with_prefix_len(self, ip_address: str) -> tuple[Any, int]: ...

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
        """What the databases know about `ip`; negative when neither knows anything."""
        return self.lookup_many((ip,))[0]

    def lookup_many(self, ips: Iterable[str]) -> list[GeoInfo]:
        """`lookup` for each address, answers in the same order."""
        new = tuple.__new__
        return [new(GeoInfo, (ip, *answer)) for answer, run in self.lookup_runs(ips) for ip in run]

    def lookup_runs(self, ips: Iterable[str]) -> list[Run]:
        """lookup_many for bulk callers: the addresses in the order given, cut into runs
        that got the same answer (a Run each).

        Each database remembers the network its last answer came from (the reader gives
        its prefix length), and an address inside both databases' last networks takes
        the last answer without a lookup: in a list sorted by address (resolve sends key
        order) the addresses of one network come in runs. Written flat, because it runs
        once per address in bulk imports: each Python call saved is measurable against
        the C lookup.
        """
        if self._closed:
            # A negative answer here would be cached as "nothing known" for negative_ttl.
            raise GeoError("the MMDB was closed (bangd is reloading or stopping)")
        country = _Network(self, self._country, self._country_ipv4_only, _country_fields)
        asn = _Network(self, self._asn, self._asn_ipv4_only, _asn_fields)
        # Where both databases' last networks overlap, and the answer there.
        first, last = 1, 0
        answer: GeoAnswer = _NEGATIVE
        runs: list[Run] = []
        run_answer: GeoAnswer | None = None
        run: list[str] = []
        from_bytes = int.from_bytes
        for ip in ips:
            this = _NEGATIVE
            key, number, bits = ip, -1, 32
            if ":" not in ip:  # IPv4, inline: nearly every address in a blocklist
                try:
                    number = from_bytes(inet_pton(AF_INET, ip), "big")
                except (OSError, ValueError):
                    number = -1  # not an address: negative
            else:
                where = _locate_ipv6(ip)
                if where is not None:
                    key, number, bits = where
            if number >= 0:
                if not first <= number <= last:
                    answer = self._answer(country, asn, key, number, bits)
                    first, last = max(country.first, asn.first), min(country.last, asn.last)
                    if not first <= number <= last:  # a database remembered no network
                        first, last = 1, 0
                this = answer
            if this is not run_answer:
                if this != run_answer:
                    run = []
                    runs.append((this, run))
                run_answer = this
            run.append(ip)
        return runs

    @staticmethod
    def _answer(
        country: _Network, asn: _Network, key: str, number: int, bits: int
    ) -> GeoAnswer:
        """Both databases' answer for an address outside their shared last network."""
        if country.first <= number <= country.last:
            code, name = country.fields
        else:
            code, name = country.find(key, number, bits)
        if asn.first <= number <= asn.last:
            asn_number, as_org = asn.fields
        else:
            asn_number, as_org = asn.find(key, number, bits)
        if code is None and name is None and asn_number is None and as_org is None:
            return _NEGATIVE
        return (code, name, asn_number, as_org, ORIGIN_MMDB, False)

    def _flag_corrupt(self, err: Exception) -> None:
        """A lookup hit a broken data section: set `corrupt` (shown in status), log once."""
        if not self.corrupt:
            log.error("MMDB data is corrupt (%s): lookups answer nothing known; "
                      "download the database again and reload bangd", err)
        self.corrupt = True


_NOTHING: tuple[None, None] = (None, None)
_NEGATIVE: GeoAnswer = (None, None, None, None, ORIGIN_MMDB, True)
_IPV6 = 1 << 128  # added to IPv6 numbers, so no IPv6 address falls in an IPv4 network
_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


class _Network:
    """One database within one lookup_many: the network [first, last] its last answer
    covers and that answer's two fields. Without a database every address is in it."""

    __slots__ = ("_extract", "_ipv4_only", "_reader", "_resolver", "fields", "first", "last")

    def __init__(
        self,
        resolver: MmdbResolver,
        reader: _RecordReader | None,
        ipv4_only: bool,
        extract: Callable[[object], tuple[Any, str | None]],
    ) -> None:
        self._resolver = resolver
        self._reader = reader
        self._ipv4_only = ipv4_only
        self._extract = extract
        self.first, self.last = (1, 0) if reader is not None else (0, 2 * _IPV6)
        self.fields: tuple[Any, str | None] = _NOTHING

    def find(self, key: str, number: int, bits: int) -> tuple[Any, str | None]:
        """Look `key` up and remember the network it belongs to (mapped or not)."""
        if self._reader is None or (bits == 128 and self._ipv4_only):
            return _NOTHING
        try:
            record, prefix = self._reader.get_with_prefix_len(key)
        except ValueError:  # the reader refuses the address
            return _NOTHING
        except maxminddb.InvalidDatabaseError as err:
            self._resolver._flag_corrupt(err)
            return _NOTHING
        fields = _NOTHING if record is None else self._extract(record)
        if 0 <= prefix <= bits:
            shift = bits - prefix
            self.first = number >> shift << shift
            self.last = self.first | ((1 << shift) - 1)
            self.fields = fields
        return fields


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


def _locate_ipv6(ip: str) -> tuple[str, int, int] | None:
    """For an address with a colon: the string to hand the reader, the address as a
    number and its width in bits; None when `ip` is not a plain IPv6 address.

    IPv4-mapped addresses are looked up as IPv4: databases written by mmdb-writer (and
    DB-IP's) do not alias them to their IPv4 records. Other IPv6 numbers get _IPV6 added,
    so that none falls inside an IPv4 network. inet_pton is strict (for IPv4 too: the C
    reader would also accept forms like "8.8.2056" and answer for the wrong address) and
    much cheaper than `ipaddress`.
    """
    if "%" in ip:  # a zone index: a link-local address, never in a database
        return None
    try:
        packed = inet_pton(AF_INET6, ip)
    except (OSError, ValueError):
        return None
    if packed[:12] == _MAPPED_PREFIX:
        return inet_ntop(AF_INET, packed[12:]), int.from_bytes(packed[12:], "big"), 32
    return ip, _IPV6 | int.from_bytes(packed, "big"), 128


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
