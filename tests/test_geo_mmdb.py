"""MmdbResolver against small MaxMind-layout databases written once per session."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import maxminddb
import pytest

from bangd.errors import GeoError
from bangd.geo import GeoInfo, MmdbResolver
from tests.mmdb_factory import (
    AsnNet,
    CountryNet,
    filler_address,
    filler_asn_nets,
    filler_country_nets,
    write_asn_db,
    write_city_db,
    write_country_db,
)

FILLER = 1000
COUNTRY_NETS = [
    *filler_country_nets(FILLER),
    CountryNet("8.8.8.0/24", "US", "United States", "NA"),
    CountryNet("81.2.69.0/24", "GB", "United Kingdom"),
    CountryNet("5.5.5.0/24", "SE", "Sweden", located=False),
]
COUNTRY6_NETS = [*COUNTRY_NETS, CountryNet("2a00:1450::/32", "IE", "Ireland")]
ASN_NETS = [
    *filler_asn_nets(FILLER),
    AsnNet("8.8.8.0/24", 15169, "Google LLC"),
    AsnNet("9.9.9.0/24", 19281, "Quad9"),
]


@dataclass(frozen=True)
class Databases:
    country: str
    country_ipv4_only: str
    city: str
    asn: str
    directory: Path


@pytest.fixture(scope="session")
def dbs(tmp_path_factory: pytest.TempPathFactory) -> Databases:
    directory = tmp_path_factory.mktemp("mmdb")
    return Databases(
        country=str(write_country_db(directory / "country.mmdb", COUNTRY6_NETS)),
        country_ipv4_only=str(
            write_country_db(directory / "country4.mmdb", COUNTRY_NETS, ip_version=4)
        ),
        city=str(write_city_db(directory / "city.mmdb", COUNTRY6_NETS)),
        asn=str(write_asn_db(directory / "asn.mmdb", ASN_NETS)),
        directory=directory,
    )


def negative(ip: str) -> GeoInfo:
    return GeoInfo(ip, None, None, None, None, "mmdb", True)


def test_country_hit_gives_iso_code_and_english_name(dbs: Databases) -> None:
    with MmdbResolver(dbs.country, None) as resolver:
        assert resolver.lookup("81.2.69.160") == GeoInfo(
            "81.2.69.160", "GB", "United Kingdom", None, None, "mmdb", False
        )


def test_filler_networks_answer_too(dbs: Databases) -> None:
    with MmdbResolver(dbs.country, None) as resolver:
        assert resolver.lookup(filler_address(1)).country_code == "FR"


def test_city_database_is_accepted_as_country_source(dbs: Databases) -> None:
    with MmdbResolver(dbs.city, None) as resolver:
        assert resolver.lookup("8.8.8.8").country_code == "US"


def test_country_and_asn_answers_are_combined(dbs: Databases) -> None:
    with MmdbResolver(dbs.country, dbs.asn) as resolver:
        assert resolver.lookup("8.8.8.8") == GeoInfo(
            "8.8.8.8", "US", "United States", 15169, "Google LLC", "mmdb", False
        )


def test_address_known_only_to_the_asn_database_is_not_negative(dbs: Databases) -> None:
    with MmdbResolver(dbs.country, dbs.asn) as resolver:
        assert resolver.lookup("9.9.9.9") == GeoInfo(
            "9.9.9.9", None, None, 19281, "Quad9", "mmdb", False
        )


def test_registered_country_stands_in_when_location_is_missing(dbs: Databases) -> None:
    with MmdbResolver(dbs.country, None) as resolver:
        assert resolver.lookup("5.5.5.5").country_code == "SE"


def test_unmapped_address_is_negative(dbs: Databases) -> None:
    with MmdbResolver(dbs.country, dbs.asn) as resolver:
        assert resolver.lookup("203.0.113.9") == negative("203.0.113.9")


def test_ipv6_address_is_found_in_an_ipv6_database(dbs: Databases) -> None:
    with MmdbResolver(dbs.country, None) as resolver:
        assert resolver.lookup("2a00:1450:4001::1").country_code == "IE"


def test_ipv6_in_an_ipv4_only_database_is_negative(dbs: Databases) -> None:
    with MmdbResolver(dbs.country_ipv4_only, None) as resolver:
        assert resolver.lookup("2a00:1450:4001::1") == negative("2a00:1450:4001::1")


@pytest.mark.parametrize("which", ["country", "country_ipv4_only"])
def test_ipv4_mapped_ipv6_is_answered_as_ipv4(dbs: Databases, which: str) -> None:
    with MmdbResolver(getattr(dbs, which), dbs.asn) as resolver:
        assert resolver.lookup("::ffff:8.8.8.8") == GeoInfo(
            "::ffff:8.8.8.8", "US", "United States", 15169, "Google LLC", "mmdb", False
        )


@pytest.mark.parametrize("odd", ["", "bogus", "8.8.2056", "8.8.8.8/24", "fe80::1%eth0", "1:2"])
def test_malformed_address_is_negative_not_an_error(dbs: Databases, odd: str) -> None:
    with MmdbResolver(dbs.country, dbs.asn) as resolver:
        assert resolver.lookup(odd) == negative(odd)


def test_lookup_many_answers_in_the_order_asked(dbs: Databases) -> None:
    ips = ["203.0.113.9", "8.8.8.8", "::ffff:81.2.69.1", "bogus", filler_address(2)]
    with MmdbResolver(dbs.country, dbs.asn) as resolver:
        results = resolver.lookup_many(iter(ips))
    assert [r.ip for r in results] == ips
    assert [r.country_code for r in results] == [None, "US", "GB", None, "JP"]


def test_asn_database_given_as_country_source_is_refused(dbs: Databases) -> None:
    with pytest.raises(GeoError) as caught:
        MmdbResolver(dbs.asn, None)
    message = str(caught.value)
    assert "geo.mmdb" in message
    assert dbs.asn in message
    assert "'GeoLite2-ASN'" in message
    assert "\n" not in message


def test_country_database_given_as_asn_source_is_refused(dbs: Databases) -> None:
    with pytest.raises(GeoError, match=r"geo\.asn_mmdb: .*'GeoLite2-Country' database"):
        MmdbResolver(None, dbs.country)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "GeoLite2-Country.mmdb"
    with pytest.raises(GeoError, match=r"geo\.mmdb: cannot open .*No such file"):
        MmdbResolver(str(missing), None)


@pytest.mark.parametrize("content", [b"", b"not a database at all" * 100])
def test_corrupt_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    corrupt = tmp_path / "asn.mmdb"
    corrupt.write_bytes(content)
    with pytest.raises(GeoError, match=r"geo\.asn_mmdb: .* is not a valid MaxMind DB file"):
        MmdbResolver(None, str(corrupt))


def test_resolver_without_any_database_is_refused() -> None:
    with pytest.raises(ValueError, match="country or an ASN"):
        MmdbResolver(None, None)


def test_close_twice_is_harmless(dbs: Databases) -> None:
    resolver = MmdbResolver(dbs.country, dbs.asn)
    resolver.close()
    resolver.close()


def test_a_lookup_after_close_raises_instead_of_answering_nothing_known(
    tmp_path: Path,
) -> None:
    path = write_country_db(tmp_path / "c.mmdb", [CountryNet("45.10.0.0/16", "NL", "Netherlands")])
    resolver = MmdbResolver(str(path), None)
    resolver.close()
    with pytest.raises(GeoError, match="closed"):
        resolver.lookup("45.10.1.1")


def test_a_corrupt_data_section_answers_negative_and_is_flagged(tmp_path: Path) -> None:
    path = write_country_db(tmp_path / "c.mmdb", [CountryNet("45.10.0.0/16", "NL", "Netherlands")])
    data = bytearray(path.read_bytes())
    with maxminddb.open_database(str(path)) as reader:
        meta = reader.metadata()
        tree = meta.node_count * meta.record_size * 2 // 8
    end = data.rfind(b"\xab\xcd\xefMaxMind.com")
    data[tree + 16 : end] = b"\xff" * (end - tree - 16)  # the data section, garbled
    path.write_bytes(data)
    resolver = MmdbResolver(str(path), None)
    try:
        assert resolver.lookup("45.10.1.1").negative
        assert resolver.corrupt
    finally:
        resolver.close()


# -- runs of addresses in one network ---------------------------------------------------------

NESTED_COUNTRY = [
    CountryNet("45.0.0.0/8", "NL", "Netherlands"),
    CountryNet("45.10.0.0/16", "DE", "Germany"),
    CountryNet("45.10.1.0/24", "FR", "France"),
    CountryNet("45.10.1.128/25", "BE", "Belgium"),
    CountryNet("2a00:1450::/32", "IE", "Ireland"),
    CountryNet("2a00:1450:4001::/48", "PT", "Portugal"),
]
NESTED_ASN = [
    AsnNet("45.10.0.0/15", 1, "One"),
    AsnNet("45.10.1.64/26", 2, "Two"),
    AsnNet("2a00:1450:4000::/36", 3, "Three"),
]
# In key (text) order, as resolve sends them: runs inside one network, then a more or less
# specific one, networks of the other database ending elsewhere, unmapped gaps, IPv4 and
# IPv6 forms of the same number, and odd entries in between.
RUNS = sorted([
    "44.255.255.255", "45.0.0.1", "45.9.255.255", "45.10.0.1", "45.10.0.255", "45.10.1.0",
    "45.10.1.63", "45.10.1.64", "45.10.1.127", "45.10.1.128", "45.10.1.200", "45.10.2.1",
    "45.11.0.1", "45.11.255.255", "45.12.0.0", "45.255.255.255", "46.0.0.0", "bogus",
    "::45.10.1.1", "::ffff:45.10.1.129", "::ffff:45.10.9.9", "2a00:1450::1",
    "2a00:1450:4000::1", "2a00:1450:4001::1", "2a00:1450:4001:ffff::1", "2a00:1450:4002::1",
    "2a00:1450:ffff::1", "2a00:1451::1", "fe80::1%eth0",
])


@pytest.fixture(scope="session")
def nested(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("mmdb-nested")
    return {
        "country": str(write_country_db(directory / "c6.mmdb", NESTED_COUNTRY)),
        "country4": str(write_country_db(
            directory / "c4.mmdb", [n for n in NESTED_COUNTRY if ":" not in n.network],
            ip_version=4,
        )),
        "asn": str(write_asn_db(directory / "asn.mmdb", NESTED_ASN)),
    }


@pytest.mark.parametrize("country", ["country", "country4"])
def test_runs_of_addresses_answer_exactly_as_single_lookups(
    nested: dict[str, str], country: str
) -> None:
    with MmdbResolver(nested[country], nested["asn"]) as resolver:
        one_by_one = [resolver.lookup(ip) for ip in RUNS]
        assert resolver.lookup_many(RUNS) == one_by_one
        assert resolver.lookup_many(reversed(RUNS)) == one_by_one[::-1]


def test_runs_answer_what_the_reader_says_for_each_address(nested: dict[str, str]) -> None:
    with MmdbResolver(nested["country"], None) as resolver, \
            maxminddb.open_database(nested["country"]) as reader:
        found = {info.ip: info.country_code for info in resolver.lookup_many(RUNS)}
        for ip in RUNS:
            if ip in ("bogus", "fe80::1%eth0"):
                continue
            record = reader.get(ip.removeprefix("::ffff:"))
            country = record.get("country") if isinstance(record, dict) else None
            expected = country.get("iso_code") if isinstance(country, dict) else None
            assert found[ip] == expected, ip


def test_an_ipv4_compatible_ipv6_address_is_not_answered_from_an_ipv4_network(
    nested: dict[str, str],
) -> None:
    with MmdbResolver(nested["country4"], None) as resolver:
        v4, v6 = resolver.lookup_many(["45.10.1.1", "::45.10.1.1"])
    assert (v4.country_code, v6.country_code) == ("FR", None)


def test_runs_hold_each_address_once_in_order_with_its_answer(nested: dict[str, str]) -> None:
    with MmdbResolver(nested["country"], nested["asn"]) as resolver:
        runs = resolver.lookup_runs(RUNS)
        single = {ip: resolver.lookup(ip) for ip in RUNS}
    assert [ip for _, run in runs for ip in run] == RUNS
    assert all(run for _, run in runs)
    for answer, run in runs:
        assert all(single[ip] == (ip, *answer) for ip in run)
    # neighbours with equal answers share one run
    assert all(a != b for (a, _), (b, _) in pairwise(runs))
