"""Small MaxMind-format databases for tests and benchmarks.

No GeoLite2 or DB-IP file can be installed here, so tests write their own with the
`mmdb_writer` package, using MaxMind's record layout so the resolver is exercised against
the same shapes it meets in production. Writing is pure Python and slow (about 3 s for
20k networks): keep databases at 1k-20k networks and generate them once per session.

Like MaxMind's own files, IPv6 databases here hold IPv4 networks at `::a.b.c.d`; unlike
MaxMind's they have no `::ffff:0:0/96` alias, which is why the resolver must turn
IPv4-mapped addresses into IPv4 itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPSet

COUNTRY_DB_TYPE = "GeoLite2-Country"
CITY_DB_TYPE = "GeoLite2-City"
ASN_DB_TYPE = "GeoLite2-ASN"

_FILLER_COUNTRIES = (
    ("DE", "Germany", "EU"),
    ("FR", "France", "EU"),
    ("JP", "Japan", "AS"),
    ("BR", "Brazil", "SA"),
    ("AU", "Australia", "OC"),
    ("ZA", "South Africa", "AF"),
    ("CA", "Canada", "NA"),
)
_FILLER_FIRST = ipaddress.IPv4Address("20.0.0.0")


@dataclass(frozen=True)
class CountryNet:
    """One network of a Country/City database; `located=False` leaves only registered_country."""

    network: str
    iso_code: str
    name: str
    continent: str = "EU"
    city: str | None = None
    located: bool = True


@dataclass(frozen=True)
class AsnNet:
    """One network of an ASN database."""

    network: str
    number: int
    organization: str


def filler_country_nets(count: int) -> list[CountryNet]:
    """`count` distinct IPv4 /24s from 20.0.0.0 upwards, so a database has a realistic size."""
    first = int(_FILLER_FIRST)
    nets = []
    for index in range(count):
        iso, name, continent = _FILLER_COUNTRIES[index % len(_FILLER_COUNTRIES)]
        network = f"{ipaddress.IPv4Address(first + index * 256)}/24"
        nets.append(CountryNet(network, iso, name, continent))
    return nets


def filler_asn_nets(count: int) -> list[AsnNet]:
    """ASN records for the same /24s as `filler_country_nets(count)`."""
    first = int(_FILLER_FIRST)
    return [
        AsnNet(f"{ipaddress.IPv4Address(first + index * 256)}/24", 64512 + index, f"Filler {index}")
        for index in range(count)
    ]


def filler_address(index: int, host: int = 1) -> str:
    """An address inside the `index`-th filler network."""
    return str(ipaddress.IPv4Address(int(_FILLER_FIRST) + index * 256 + host))


def write_country_db(
    path: Path,
    nets: Iterable[CountryNet],
    *,
    database_type: str = COUNTRY_DB_TYPE,
    ip_version: int = 6,
) -> Path:
    """Write a Country-style database (City-style when a net has a `city`)."""
    writer = _writer(database_type, ip_version)
    for net in nets:
        writer.insert_network(IPSet([net.network]), _country_record(net))
    writer.to_db_file(str(path))
    return path


def write_city_db(
    path: Path,
    nets: Iterable[CountryNet],
    *,
    database_type: str = CITY_DB_TYPE,
    ip_version: int = 6,
) -> Path:
    """Write a City-style database: country records plus a city name."""
    with_city = (
        net if net.city else CountryNet(net.network, net.iso_code, net.name, net.continent, "X")
        for net in nets
    )
    return write_country_db(path, with_city, database_type=database_type, ip_version=ip_version)


def write_asn_db(
    path: Path,
    nets: Iterable[AsnNet],
    *,
    database_type: str = ASN_DB_TYPE,
    ip_version: int = 6,
) -> Path:
    """Write an ASN database in GeoLite2-ASN's layout."""
    writer = _writer(database_type, ip_version)
    for net in nets:
        record = {
            "autonomous_system_number": net.number,
            "autonomous_system_organization": net.organization,
        }
        writer.insert_network(IPSet([net.network]), record)
    writer.to_db_file(str(path))
    return path


def _writer(database_type: str, ip_version: int) -> MMDBWriter:
    return MMDBWriter(
        ip_version=ip_version,
        database_type=database_type,
        languages=["en"],
        description="bangd test database",
        ipv4_compatible=ip_version == 6,
        int_type="u32",
    )


def _country_record(net: CountryNet) -> dict[str, Any]:
    country = {"iso_code": net.iso_code, "names": {"en": net.name}}
    record: dict[str, Any] = {
        "continent": {"code": net.continent, "names": {"en": net.continent}},
        "registered_country": country,
    }
    if net.located:
        record["country"] = country
    if net.city:
        record["city"] = {"names": {"en": net.city}}
    return record
