"""Blocklist parsing: what a list line becomes, and what is refused or skipped and counted."""

from __future__ import annotations

import hashlib
import ipaddress
import random
import re
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from bangd.sources.parse import (
    RESERVED_IPV4,
    RESERVED_IPV6,
    RESERVED_NETWORKS,
    IPNetwork,
    ParsedList,
    parse_blocklist,
    raw_digest,
)

DATA = Path(__file__).parent / "data"
DEFAULT_ALLOWLIST = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def parse(
    text: str,
    *,
    allowlist: tuple[IPNetwork, ...] = (),
    skip_reserved: bool = True,
    invalid_samples: int = 5,
) -> ParsedList:
    return parse_blocklist(
        text.encode("utf-8"),
        allowlist=allowlist,
        skip_reserved=skip_reserved,
        invalid_samples=invalid_samples,
    )


def entries_of(text: str, *, skip_reserved: bool = True) -> set[str]:
    return set(parse(text, skip_reserved=skip_reserved).entries)


# --- one line, one entry -------------------------------------------------------------------


def test_plain_ipv4_line_is_kept_as_written() -> None:
    assert entries_of("1.2.3.4\n") == {"1.2.3.4"}


@pytest.mark.parametrize("comment", ["# note", "; Spamhaus DROP List", "// note", "#", ";;", "//"])
def test_comment_line_is_ignored_and_not_invalid(comment: str) -> None:
    parsed = parse(f"{comment}\n1.2.3.4\n")
    assert (set(parsed.entries), parsed.invalid) == ({"1.2.3.4"}, 0)


@pytest.mark.parametrize(
    "line",
    [
        "1.2.3.4 # note",
        "1.2.3.4#note",
        "1.2.3.4 ; SBL256894",
        "1.2.3.4;x",
        "1.2.3.4 // note",
        "1.2.3.4\t// note",
        "1.2.3.4 # a ; b // c",
    ],
)
def test_comment_after_entry_is_ignored(line: str) -> None:
    assert entries_of(line + "\n") == {"1.2.3.4"}


def test_spamhaus_style_trailing_comment_keeps_the_network() -> None:
    assert entries_of("1.10.16.0/20 ; SBL256894\n") == {"1.10.16.0/20"}


def test_double_slash_directly_after_entry_makes_line_invalid() -> None:
    parsed = parse("1.2.3.0//24\n")
    assert (set(parsed.entries), parsed.invalid) == (set(), 1)


def test_crlf_line_endings_are_accepted() -> None:
    assert entries_of("1.2.3.4\r\n2001:db8:1::1\r\n5.6.7.0/24\r\n", skip_reserved=False) == {
        "1.2.3.4", "2001:db8:1::1", "5.6.7.0/24",
    }


def test_utf8_bom_is_ignored() -> None:
    parsed = parse_blocklist(b"\xef\xbb\xbf1.2.3.4\n")
    assert (set(parsed.entries), parsed.invalid) == ({"1.2.3.4"}, 0)


def test_surrounding_whitespace_is_ignored() -> None:
    assert entries_of(" \t1.2.3.4 \t\n   5.6.7.0/24\x0c\n") == {"1.2.3.4", "5.6.7.0/24"}


def test_blank_lines_are_ignored_but_counted_as_lines() -> None:
    parsed = parse("\n1.2.3.4\n\n   \n")
    assert (set(parsed.entries), parsed.lines, parsed.invalid) == ({"1.2.3.4"}, 4, 0)


def test_last_line_without_newline_is_parsed_and_counted() -> None:
    parsed = parse("1.2.3.4\n5.6.7.8")
    assert (set(parsed.entries), parsed.lines) == ({"1.2.3.4", "5.6.7.8"}, 2)


def test_empty_input_gives_an_empty_list() -> None:
    parsed = parse_blocklist(b"")
    assert (set(parsed.entries), parsed.lines, parsed.invalid) == (set(), 0, 0)


# --- normalisation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "entry"),
    [
        ("1.2.3.4/24", "1.2.3.0/24"),
        ("1.2.255.255/16", "1.2.0.0/16"),
        ("8.8.8.8/0", "0.0.0.0/0"),
        ("2a01:4f8:1:2:3:4:5:6/32", "2a01:4f8::/32"),
        ("2a01:4f8::ffff/127", "2a01:4f8::fffe/127"),
    ],
)
def test_cidr_host_bits_are_cleared(line: str, entry: str) -> None:
    assert entries_of(line, skip_reserved=False) == {entry}


@pytest.mark.parametrize(("line", "entry"), [("1.2.3.4/32", "1.2.3.4"), ("2a01::1/128", "2a01::1")])
def test_full_length_prefix_is_written_as_plain_address(line: str, entry: str) -> None:
    assert entries_of(line) == {entry}


def test_ipv4_mapped_address_is_written_as_ipv4() -> None:
    assert entries_of("::ffff:1.2.3.4\n::FFFF:0506:0708\n") == {"1.2.3.4", "5.6.7.8"}


def test_ipv4_mapped_network_is_written_as_ipv4_network() -> None:
    assert entries_of("::ffff:1.2.3.4/120\n::ffff:5.6.7.8/128\n") == {"1.2.3.0/24", "5.6.7.8"}


def test_ipv6_is_lower_cased_and_compressed() -> None:
    assert entries_of("2A01:04F8:0000:0000:0000:0000:0000:00AB\n") == {"2a01:4f8::ab"}


def test_ipv6_compression_takes_the_longest_run_of_zeros() -> None:
    assert entries_of("2a01:0:0:1:0:0:0:1\n") == {"2a01:0:0:1::1"}


def test_ipv4_compatible_ipv6_is_written_in_hex_not_dotted() -> None:
    assert entries_of("::1.2.3.4\n") == {"::102:304"}


def test_duplicates_after_normalisation_are_dropped_and_counted() -> None:
    parsed = parse("1.2.3.4\n1.2.3.4/32\n::ffff:1.2.3.4\n1.2.3.0/24\n1.2.3.9/24\n")
    assert (set(parsed.entries), parsed.duplicates) == ({"1.2.3.4", "1.2.3.0/24"}, 3)


# --- invalid lines ---------------------------------------------------------------------------


GARBAGE = [
    "01.2.3.4",
    "1.2.3.04",
    "1.2.3.4/33",
    "2a01::/129",
    "1.2.3",
    "1.2.3.4.5",
    "999.1.1.1",
    "256.1.1.1",
    "0x01.2.3.4",
    "example.com",
    "localhost",
    "1.2.3.4 5.6.7.8",
    "1.2.3.4,5.6.7.8",
    "1.2.3.4-1.2.3.10",
    "1.2.3.4 - 1.2.3.10",
    "1.2.3.4:80",
    "[2a01::1]",
    "fe80::1%eth0",
    "2a01::1%1",
    "1:2:3:4:5:6:7:8:9",
    "12345::1",
    "2a01::g",
    "2a01:::1",
    "::ffff:01.2.3.4",
    "1.2.3.0/024",
    "1.2.3.0/+24",
    "1.2.3.0/-1",
    "1.2.3.0/",
    "1.2.3.0/ 24",
    "1.2.3.0 /24",
    "1.2.3.0/24/24",
    "1.2.3.0/255.255.255.0",
    "1.2.3.0/0x18",
    "1.2.3.0/\u0662\u0664",
    "/24",
    "1.2.3.0//24",
    "1.2.3.4// note",
    "1.2.3.4 extra",
    "1.2.3.4\x005.6.7.8",
    "1.2.3.4\x0b5.6.7.8",
    "\uff11.\uff12.\uff13.\uff14",  # fullwidth digits
    "\u0663.\u0662.\u0661.\u0660",  # Arabic-Indic digits
    "1.2.3.4\u00a0x",
    "deny 1.2.3.4",
]


@pytest.mark.parametrize("line", GARBAGE)
def test_non_address_line_is_invalid(line: str) -> None:
    parsed = parse(f"{line}\n", skip_reserved=False)
    assert (set(parsed.entries), parsed.invalid) == (set(), 1)


def test_invalid_lines_are_reported_with_line_number_and_stripped_text() -> None:
    parsed = parse("# header\n1.2.3.4\n  bogus  \n\n999.1.1.1\r\n")
    assert (parsed.invalid, parsed.invalid_lines) == (2, ((3, "bogus"), (5, "999.1.1.1")))


def test_only_the_first_invalid_samples_are_reported_but_all_are_counted() -> None:
    parsed = parse("".join(f"bad{i}\n" for i in range(10)), invalid_samples=3)
    assert (parsed.invalid, parsed.invalid_lines) == (10, ((1, "bad0"), (2, "bad1"), (3, "bad2")))


def test_reported_invalid_text_is_cut_to_80_characters_and_marked() -> None:
    parsed = parse("x" * 200 + "\n")
    assert parsed.invalid_lines == ((1, "x" * 80 + "…"),)


def test_non_utf8_line_is_invalid_and_the_other_lines_still_parse() -> None:
    parsed = parse_blocklist(b"1.2.3.4\n\xff\xfe5.6.7.8\n9.9.9.9\n")
    assert (set(parsed.entries), parsed.invalid_lines) == (
        {"1.2.3.4", "9.9.9.9"}, ((2, "\\xff\\xfe5.6.7.8"),),
    )


# --- allowlist and reserved ranges -------------------------------------------------------------


def allow(*networks: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(n) for n in networks)


def test_entry_inside_an_allowlist_network_is_skipped_and_counted() -> None:
    parsed = parse("8.8.8.8\n8.8.4.0/24\n9.9.9.9\n", allowlist=allow("8.8.0.0/16"))
    assert (set(parsed.entries), parsed.skipped_allowlist) == ({"9.9.9.9"}, 2)


def test_entry_containing_an_allowlist_network_is_skipped() -> None:
    parsed = parse("8.0.0.0/8\n", allowlist=allow("8.8.8.8/32"))
    assert (set(parsed.entries), parsed.skipped_allowlist) == (set(), 1)


def test_ipv6_entry_overlapping_the_allowlist_is_skipped() -> None:
    parsed = parse("2a01:4f8::/32\n2a01:4f9::1\n", allowlist=allow("2a01:4f8:1::/48"))
    assert (set(parsed.entries), parsed.skipped_allowlist) == ({"2a01:4f9::1"}, 1)


def test_ipv4_mapped_allowlist_network_protects_ipv4_entries() -> None:
    parsed = parse("1.2.3.4\n", allowlist=allow("::ffff:1.2.3.0/120"))
    assert (set(parsed.entries), parsed.skipped_allowlist) == (set(), 1)


def test_ipv6_allowlist_network_around_the_mapped_range_covers_all_ipv4() -> None:
    parsed = parse("1.2.3.4\n2a01::1\n", allowlist=allow("::/64"))
    assert (set(parsed.entries), parsed.skipped_allowlist) == ({"2a01::1"}, 1)


def test_allowlist_is_counted_before_reserved() -> None:
    parsed = parse("127.0.0.1\n", allowlist=DEFAULT_ALLOWLIST)
    assert (parsed.skipped_allowlist, parsed.skipped_reserved) == (1, 0)


def test_allowlist_applies_even_without_skip_reserved() -> None:
    parsed = parse("127.0.0.1\n", allowlist=DEFAULT_ALLOWLIST, skip_reserved=False)
    assert (set(parsed.entries), parsed.skipped_allowlist) == (set(), 1)


@pytest.mark.parametrize(
    "line",
    [
        "0.1.2.3", "10.1.2.3", "100.64.0.1", "127.0.0.1", "169.254.1.1", "172.16.0.1",
        "172.31.255.255", "192.0.0.8", "192.0.2.1", "192.168.1.1", "198.18.0.1", "198.51.100.7",
        "203.0.113.9", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
        "::", "::1", "64:ff9b::808:808", "100::1", "2001:db8::1", "fd00::1", "fe80::1",
        "ff02::1", "::ffff:10.0.0.1",
    ],
)
def test_reserved_address_is_skipped_with_skip_reserved(line: str) -> None:
    parsed = parse(line + "\n")
    assert (set(parsed.entries), parsed.skipped_reserved, parsed.invalid) == (set(), 1, 0)


@pytest.mark.parametrize("line", ["0.0.0.0/0", "8.0.0.0/6", "192.0.0.0/16", "::/0", "fc00::/6"])
def test_network_containing_a_reserved_range_is_skipped(line: str) -> None:
    assert parse(line + "\n").skipped_reserved == 1


def test_reserved_addresses_are_kept_without_skip_reserved() -> None:
    parsed = parse("10.1.2.3\n2001:db8::1\n", skip_reserved=False)
    assert (set(parsed.entries), parsed.skipped_reserved) == ({"10.1.2.3", "2001:db8::1"}, 0)


def test_addresses_next_to_reserved_ranges_are_kept() -> None:
    lines = ["9.255.255.255", "11.0.0.0", "100.63.255.255", "100.128.0.0", "172.15.255.255",
             "172.32.0.0", "198.17.255.255", "198.20.0.0", "223.255.255.255", "2001:db7::1"]
    assert entries_of("\n".join(lines)) == set(lines)


def test_reserved_constants_are_valid_networks_split_by_family() -> None:
    networks = [ipaddress.ip_network(n) for n in RESERVED_NETWORKS]
    assert RESERVED_NETWORKS == RESERVED_IPV4 + RESERVED_IPV6
    assert [n.version for n in networks] == [4] * len(RESERVED_IPV4) + [6] * len(RESERVED_IPV6)


# --- digests ---------------------------------------------------------------------------------


def test_digest_ignores_order_comments_blanks_duplicates_and_crlf() -> None:
    first = parse("1.2.3.4\n5.6.7.0/24\n2a01::1\n")
    second = parse("# list\r\n2A01::1\r\n\r\n5.6.7.8/24 ; x\r\n1.2.3.4\r\n1.2.3.4\r\n")
    assert first.digest == second.digest


def test_digest_changes_when_an_entry_changes() -> None:
    assert parse("1.2.3.4\n5.6.7.8\n").digest != parse("1.2.3.4\n5.6.7.9\n").digest


def test_digest_is_sha256_of_sorted_entries_each_ending_in_newline() -> None:
    expected = hashlib.sha256(b"1.2.3.4\n2a01::1\n5.6.7.0/24\n").hexdigest()
    assert parse("5.6.7.0/24\n2a01::1\n1.2.3.4\n").digest == expected


def test_raw_digest_is_sha256_of_the_bytes_as_fetched() -> None:
    assert raw_digest(b"1.2.3.4\n") == hashlib.sha256(b"1.2.3.4\n").hexdigest()


def test_parsed_list_is_immutable() -> None:
    parsed = parse("1.2.3.4\n")
    with pytest.raises(FrozenInstanceError):
        parsed.invalid = 3  # type: ignore[misc]


# --- real list shapes --------------------------------------------------------------------------


def parse_file(name: str) -> ParsedList:
    return parse_blocklist((DATA / name).read_bytes(), allowlist=DEFAULT_ALLOWLIST)


def test_spamhaus_drop_sample_parses() -> None:
    parsed = parse_file("spamhaus_drop.txt")
    assert (len(parsed.entries), parsed.lines, parsed.invalid, parsed.skipped_reserved) == (
        10, 15, 0, 1,
    )
    assert "1.10.16.0/20" in parsed.entries


def test_spamhaus_dropv6_sample_parses() -> None:
    parsed = parse_file("spamhaus_dropv6.txt")
    assert (len(parsed.entries), parsed.lines, parsed.invalid, parsed.skipped_reserved) == (
        6, 11, 0, 1,
    )
    assert "2a0a:d6c0::/29" in parsed.entries


def test_firehol_netset_sample_parses_and_skips_its_bogons() -> None:
    parsed = parse_file("firehol_level1.netset")
    counts = (parsed.lines, parsed.invalid, parsed.skipped_allowlist, parsed.skipped_reserved)
    assert (len(parsed.entries), counts) == (10, (56, 0, 1, 12))
    assert {"31.184.196.7", "1.19.0.0/16"} <= parsed.entries


def test_plain_feed_sample_parses() -> None:
    parsed = parse_file("plain_ips.txt")
    counts = (parsed.lines, parsed.duplicates, parsed.skipped_reserved, parsed.invalid_lines)
    assert (len(parsed.entries), counts) == (8, (12, 1, 1, ((11, "01.2.3.4"),)))
    assert {"80.82.77.139", "2a01:4f8:c010:d56::2"} <= parsed.entries


# --- against a slow reference --------------------------------------------------------------------

_REF_COMMENT = re.compile(r"[#;]|(?:^|(?<=\s))//")
_REF_SHAPE = re.compile(r"(?P<addr>[0-9A-Fa-f.:]+)(?:/(?P<len>0|[1-9][0-9]{0,2}))?")


def reference_parse(
    data: bytes, allowlist: tuple[IPNetwork, ...], skip_reserved: bool
) -> tuple[set[str], int, int, int]:
    """The same rules spelled with `ipaddress`: entries, invalid, skipped allow/reserved."""
    reserved = [ipaddress.ip_network(n) for n in RESERVED_NETWORKS] if skip_reserved else []
    entries: set[str] = set()
    invalid = skipped_allow = skipped_reserved = 0
    for raw in data.decode("utf-8").removeprefix("\ufeff").split("\n"):
        comment = _REF_COMMENT.search(raw.strip())
        text = raw.strip()[: comment.start() if comment else None].strip()
        if not text:
            continue
        network = reference_network(text)
        if network is None:
            invalid += 1
        elif any(network.overlaps(a) for a in reference_allowlist(allowlist, network.version)):
            skipped_allow += 1
        elif any(r.version == network.version and network.overlaps(r) for r in reserved):
            skipped_reserved += 1
        else:
            full = network.prefixlen == network.max_prefixlen
            entries.add(str(network.network_address) if full else str(network))
    return entries, invalid, skipped_allow, skipped_reserved


def reference_network(text: str) -> IPNetwork | None:
    shape = _REF_SHAPE.fullmatch(text)
    if shape is None:
        return None
    try:
        address = ipaddress.ip_address(shape["addr"])
        network = ipaddress.ip_network((address, int(shape["len"] or address.max_prefixlen)),
                                       strict=False)
    except ValueError:
        return None
    mapped = network.network_address.ipv4_mapped if network.version == 6 else None
    if mapped is not None and network.prefixlen >= 96:
        return ipaddress.ip_network((mapped, network.prefixlen - 96))
    return network


def reference_allowlist(allowlist: tuple[IPNetwork, ...], version: int) -> list[IPNetwork]:
    """Allowlist networks of one family; the IPv4-mapped part of IPv6 ones counts as IPv4."""
    mapped_v4 = ipaddress.IPv6Network("::ffff:0:0/96")
    result: list[IPNetwork] = [a for a in allowlist if a.version == version]
    if version == 4:
        for network in allowlist:
            if isinstance(network, ipaddress.IPv6Network) and network.overlaps(mapped_v4):
                inner = network if network.subnet_of(mapped_v4) else mapped_v4
                address = inner.network_address.ipv4_mapped
                assert address is not None
                result.append(ipaddress.IPv4Network((address, inner.prefixlen - 96)))
    return result


def random_line(rng: random.Random) -> str:
    """A line that is valid, nearly valid, or decorated; biased towards edge cases."""
    octets = [rng.choice([0, 1, 9, 10, 99, 100, 127, 172, 192, 198, 203, 224, 255,
                          rng.randrange(256)]) for _ in range(4)]
    v4 = ".".join(map(str, octets))
    hextets = [rng.choice(["0", "0", "0000", "ffff", "FFFF", "db8", "2001", "fe80", "a",
                           f"{rng.randrange(0x10000):x}", f"{rng.randrange(0x10000):04X}"])
               for _ in range(8)]
    v6 = ":".join(hextets)
    shapes = [
        v4, v6, f"{v4}/{rng.randrange(0, 34)}", f"{v6}/{rng.randrange(0, 130)}",
        re.sub(r"(^|:)(0(:|$))+", "::", v6, count=1),
        f"::ffff:{v4}", f"::ffff:{v4}/{rng.randrange(90, 130)}", f"::{v4}",
        f"{rng.randrange(1000)}.{v4}", v4.replace(".", ".0", 1), f"{v4} ; SBL1",
        f"{v4}#x", f"{v6} // x", f"  {v4}\t", f"{v4}/0{rng.randrange(10)}", "",
        f"{v4}%x", f"{v6}::1", f"{v4}/{v4}", "# c", f"{v4}{rng.choice('/:. -x')}",
    ]
    return rng.choice(shapes)


@pytest.mark.parametrize("skip_reserved", [True, False])
def test_parser_agrees_with_an_ipaddress_reference_on_random_lines(skip_reserved: bool) -> None:
    rng = random.Random(20240514)
    data = "\r\n".join(random_line(rng) for _ in range(6000)).encode()
    allowlist = allow("1.0.0.0/8", "::ffff:9.0.0.0/104", "2001:db8:ffff::/48")
    parsed = parse_blocklist(data, allowlist=allowlist, skip_reserved=skip_reserved)
    got = (set(parsed.entries), parsed.invalid, parsed.skipped_allowlist, parsed.skipped_reserved)
    assert got == reference_parse(data, allowlist, skip_reserved)


def test_careful_path_alone_gives_the_same_result_as_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where inet_pton is found lax at import, every line takes the careful path instead."""
    rng = random.Random(7)
    data = "\n".join(random_line(rng) for _ in range(3000)).encode()
    fast = parse_blocklist(data, allowlist=DEFAULT_ALLOWLIST)
    monkeypatch.setattr("bangd.sources.parse._INET_PTON_IS_STRICT", False)
    assert parse_blocklist(data, allowlist=DEFAULT_ALLOWLIST) == fast
