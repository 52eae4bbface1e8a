"""Feed formats: each named format reads its feed's real shape into exactly the right set.

The samples in tests/data/feeds are written by tests/data/feeds/generate.py, which also
writes the set each must yield, computed with `ipaddress` rather than bangd's parser.
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bangd.config import FORMATS, WHITESPACE, FeedFormat
from bangd.sources.cidr import range_cover
from bangd.sources.parse import ParsedList, parse_blocklist
from tests.data.feeds import generate

FEEDS = Path(__file__).parent / "data" / "feeds"

# (file, format, min_score or None, the format's own non-data lines in that file)
SAMPLES = [
    ("drop_v4.json", "spamhaus-json", None, 1),
    ("drop_v6.json", "spamhaus-json", None, 1),
    ("block.txt", "dshield", None, 1),
    ("ipsum.txt", "ipsum", None, 0),
    ("ipsum.min3.txt", "ipsum", 3, 0),
    ("abuseipdb.csv", "abuseipdb-csv", None, 1),
    ("abuseipdb.min75.csv", "abuseipdb-csv", 75, 1),
    ("level1.p2p", "ranges", None, 0),
    ("crowdsec-decisions.csv", "crowdsec-raw", None, 1 + 4),  # header, Country: rows
    ("exit-addresses", "tor-exits", None, 300),
]


def feed(name: str, min_score: float | None = None) -> FeedFormat:
    preset = FORMATS[name]
    return preset if min_score is None else replace(preset, min_score=min_score)


def parse(text: str, fmt: FeedFormat | str, **kw: object) -> ParsedList:
    feed_format = FORMATS[fmt] if isinstance(fmt, str) else fmt
    return parse_blocklist(text.encode(), feed=feed_format, **kw)  # type: ignore[arg-type]


def expected(file: str) -> set[str]:
    return set((FEEDS / f"{file}.expected").read_text().split())


# --- the samples ---------------------------------------------------------------------------


def test_the_samples_are_what_the_generator_writes() -> None:
    for name, text in generate.render().items():
        assert (FEEDS / name).read_text() == text, f"{name}: run -m tests.data.feeds.generate"


@pytest.mark.parametrize(("file", "fmt", "min_score", "_"), SAMPLES)
def test_each_sample_parses_to_exactly_its_expected_set(
    file: str, fmt: str, min_score: float | None, _: int
) -> None:
    parsed = parse_blocklist((FEEDS / file).read_bytes(), feed=feed(fmt, min_score))
    assert set(parsed.entries) == expected(file)
    assert (parsed.invalid, parsed.invalid_lines) == (0, ())


@pytest.mark.parametrize(("file", "fmt", "min_score", "ignored"), SAMPLES)
def test_a_formats_own_non_data_lines_are_skipped_not_invalid(
    file: str, fmt: str, min_score: float | None, ignored: int
) -> None:
    parsed = parse_blocklist((FEEDS / file).read_bytes(), feed=feed(fmt, min_score))
    assert (parsed.ignored, parsed.invalid) == (ignored, 0)


@pytest.mark.parametrize(("file", "fmt", "min_score", "_"), SAMPLES)
def test_each_sample_read_as_text_is_unreadable_and_names_its_format(
    file: str, fmt: str, min_score: float | None, _: int
) -> None:
    parsed = parse_blocklist((FEEDS / file).read_bytes())
    assert parsed.unreadable
    assert parsed.guessed_format == fmt
    assert f"(it looks like format: {fmt})" in parsed.format_hint()


def test_format_hint_says_no_line_looked_like_an_address() -> None:
    parsed = parse("<html><body>Service unavailable</body></html>\n", "text")
    assert parsed.format_hint() == (
        "no line looked like an address (1 invalid lines in format text): is this list in "
        "another format? see format:"
    )


def test_a_list_whose_entries_were_all_skipped_is_not_unreadable() -> None:
    assert not parse("10.0.0.1\nbogus\n", "text").unreadable


def test_rows_below_min_score_are_counted_apart() -> None:
    parsed = parse("# IP\tcount\n1.2.3.4\t1\n5.6.7.8\t4\n", feed("ipsum", 2))
    assert (set(parsed.entries), parsed.below_min_score, parsed.invalid) == ({"5.6.7.8"}, 1, 0)


# --- spamhaus-json -------------------------------------------------------------------------


def test_spamhaus_metadata_object_is_skipped() -> None:
    parsed = parse('{"cidr":"1.10.16.0/20","sblid":"SBL1"}\n{"type":"metadata","records":1}\n',
                   "spamhaus-json")
    assert (set(parsed.entries), parsed.ignored, parsed.invalid) == ({"1.10.16.0/20"}, 1, 0)


def test_a_broken_json_line_is_invalid_with_its_line_number() -> None:
    parsed = parse('{"cidr":"1.10.16.0/20"}\n{"cidr":"2.2.2.0/24"\n', "spamhaus-json")
    assert parsed.invalid_lines == ((2, '{"cidr":"2.2.2.0/24"'),)


def test_a_json_value_that_is_not_an_address_is_invalid() -> None:
    parsed = parse('{"cidr":"example.com"}\n{"cidr":42}\n', "spamhaus-json")
    assert parsed.invalid == 2


def test_json_field_reaches_nested_keys_and_lists() -> None:
    fmt = replace(FORMATS["json"], field="source.ips")
    parsed = parse('{"source":{"ips":["1.2.3.4","5.6.7.8"]}}\n', fmt)
    assert set(parsed.entries) == {"1.2.3.4", "5.6.7.8"}


# --- dshield and columns -------------------------------------------------------------------


def test_dshield_rows_become_their_networks() -> None:
    text = "Start\tEnd\tNetblock\tAttacks\n45.143.203.0\t45.143.203.255\t24\t812\tX\tNL\t\n"
    assert set(parse(text, "dshield").entries) == {"45.143.203.0/24"}


def test_rows_before_the_header_are_invalid() -> None:
    text = "45.143.203.0\t45.143.203.255\t24\nStart\tEnd\tNetblock\n"
    parsed = parse(text, "dshield")
    assert (parsed.invalid, parsed.ignored) == (1, 1)


def test_a_repeated_header_is_skipped() -> None:
    header = "ipAddress,countryCode,abuseConfidenceScore,lastReportedAt\n"
    text = header + "1.2.3.4,CN,100,2025\n" + header + "5.6.7.8,US,90,2025\n"
    parsed = parse(text, "abuseipdb-csv")
    assert (set(parsed.entries), parsed.ignored, parsed.invalid) == ({"1.2.3.4", "5.6.7.8"}, 2, 0)


def test_a_row_with_too_few_columns_is_invalid() -> None:
    parsed = parse("ipAddress,countryCode,abuseConfidenceScore\n1.2.3.4,CN\n", "abuseipdb-csv")
    assert parsed.invalid_lines == ((2, "1.2.3.4,CN"),)


def test_a_score_that_is_not_a_number_is_invalid() -> None:
    parsed = parse("1.2.3.4\tmany\n", "ipsum")
    assert parsed.invalid == 1


def test_columns_by_number_with_a_custom_delimiter() -> None:
    fmt = replace(FORMATS["columns"], delimiter=";", column=2)
    assert set(parse("x;1.2.3.4;y\nz;5.6.7.0/24\n", fmt).entries) == {"1.2.3.4", "5.6.7.0/24"}


def test_columns_on_whitespace_with_a_record_word() -> None:
    fmt = replace(FORMATS["columns"], delimiter=WHITESPACE, column=2, record="deny")
    parsed = parse("deny  1.2.3.4  # x\nallow 5.6.7.8\n", fmt)
    assert (set(parsed.entries), parsed.ignored) == ({"1.2.3.4"}, 1)


# --- crowdsec-raw ----------------------------------------------------------------------------


CS_HEADER = "id,source,ip,reason,action,country,as,events_count,expiration,simulated,alert_id\n"


def test_crowdsec_ip_and_range_scopes_are_read() -> None:
    text = (CS_HEADER + "1,CAPI,Ip:1.2.3.4,x,ban,,,1,1h,false,0\n"
            "2,lists,Range:5.6.7.0/24,x,ban,,,1,1h,false,0\n")
    assert set(parse(text, "crowdsec-raw").entries) == {"1.2.3.4", "5.6.7.0/24"}


def test_crowdsec_other_scopes_are_skipped() -> None:
    text = (CS_HEADER + "1,cscli,Country:CN,x,ban,,,0,1h,false,0\n"
            "2,cscli,AS:4134,x,ban,,,0,1h,false,0\n")
    parsed = parse(text, "crowdsec-raw")
    assert (set(parsed.entries), parsed.ignored, parsed.invalid) == (set(), 3, 0)


def test_crowdsec_quoted_as_names_with_commas_keep_columns_in_place() -> None:
    text = CS_HEADER + '1,crowdsec,Ip:1.2.3.4,x,ban,CN,"4134 CHINANET, Jin-rong St",3,1h,false,0\n'
    assert set(parse(text, "crowdsec-raw").entries) == {"1.2.3.4"}


# --- tor-exits -------------------------------------------------------------------------------


def test_tor_exit_addresses_only_are_read() -> None:
    text = ("ExitNode 0011BD2485AD45D984EC4159C88FC066E5E3300E\nPublished 2025-01-01 10:00:00\n"
            "LastStatus 2025-01-01 11:00:00\nExitAddress 185.220.101.7 2025-01-01 11:02:10\n")
    parsed = parse(text, "tor-exits")
    assert (set(parsed.entries), parsed.ignored, parsed.invalid) == ({"185.220.101.7"}, 3, 0)


# --- ranges ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "entries"),
    [
        ("Some Org:1.2.3.0-1.2.3.255", {"1.2.3.0/24"}),
        ("Example-Net: Datacenter 2:1.2.4.0-1.2.4.9", {"1.2.4.0/29", "1.2.4.8/31"}),
        ("1.2.5.0 - 1.2.5.3", {"1.2.5.0/30"}),
        ("001.002.006.000-001.002.006.255", {"1.2.6.0/24"}),
        ("2a01:4f8::-2a01:4f8::ff", {"2a01:4f8::/120"}),
        ("Hetzner:2a01:4f8::1-2a01:4f8::1", {"2a01:4f8::1"}),
        ("Single:5.6.7.8", {"5.6.7.8"}),
        ("9.9.9.0/24", {"9.9.9.0/24"}),
        ("1.2.7.0-1.2.7.255 # trailing comment", {"1.2.7.0/24"}),
    ],
)
def test_range_lines_become_their_exact_cover(line: str, entries: set[str]) -> None:
    parsed = parse(line + "\n", "ranges")
    assert (set(parsed.entries), parsed.invalid) == (entries, 0)


@pytest.mark.parametrize(
    "line", ["1.2.3.255-1.2.3.0", "1.2.3.0-2a01::1", "Org:not-an-address", "1.2.3.0-1.2.3.256"]
)
def test_a_range_that_is_backwards_mixed_or_malformed_is_invalid(line: str) -> None:
    assert parse(line + "\n", "ranges").invalid == 1


def test_a_huge_range_is_a_few_networks_not_millions_of_addresses() -> None:
    parsed = parse("1.0.0.1-126.255.255.254\n", "ranges", skip_reserved=False)
    reference = ipaddress.summarize_address_range(
        ipaddress.IPv4Address("1.0.0.1"), ipaddress.IPv4Address("126.255.255.254")
    )
    assert set(parsed.entries) == {str(n).removesuffix("/32") for n in reference}
    assert len(parsed.entries) == 58


def test_a_range_part_in_the_allowlist_skips_only_that_network() -> None:
    parsed = parse("Org:11.0.0.0-11.0.2.255\n", "ranges",
                   allowlist=(ipaddress.ip_network("11.0.2.7/32"),))
    assert (set(parsed.entries), parsed.skipped_allowlist) == ({"11.0.0.0/23"}, 1)


def test_a_range_reaching_into_reserved_space_skips_those_networks() -> None:
    parsed = parse("9.255.255.0-10.0.0.255\n", "ranges")
    assert (set(parsed.entries), parsed.skipped_reserved) == ({"9.255.255.0/24"}, 1)


# --- safe output -----------------------------------------------------------------------------


def test_escape_sequences_in_an_invalid_line_are_shown_escaped() -> None:
    parsed = parse("\x1b[2Jhello\x1b[8m\x07\r\n", "text")
    assert parsed.invalid_lines == ((1, "\\x1b[2Jhello\\x1b[8m\\x07"),)


def test_binary_garbage_is_summarised_not_printed() -> None:
    parsed = parse_blocklist(bytes(range(0, 10)) * 9 + b"\n")
    ((lineno, text),) = parsed.invalid_lines
    assert (lineno, text.startswith("<binary data: ")) == (1, True)


# --- properties --------------------------------------------------------------------------------


def _union(blocks: list[tuple[int, int]], bits: int) -> list[tuple[int, int]]:
    return [(net, net + (1 << (bits - prefix)) - 1) for net, prefix in blocks]


@settings(max_examples=400)
@given(st.data(), st.sampled_from([32, 128]))
def test_range_cover_is_exactly_the_range_and_minimal(data: st.DataObject, bits: int) -> None:
    top = (1 << bits) - 1
    first = data.draw(st.integers(0, top))
    last = data.draw(st.integers(first, top))
    blocks = range_cover(first, last, bits)
    spans = _union(blocks, bits)
    assert spans[0][0] == first and spans[-1][1] == last
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(spans))  # no gap, no overlap
    assert all(net % (1 << (bits - prefix)) == 0 for net, prefix in blocks)  # real CIDRs
    version = ipaddress.IPv4Address if bits == 32 else ipaddress.IPv6Address
    reference = list(ipaddress.summarize_address_range(version(first), version(last)))
    assert len(blocks) == len(reference)  # summarize_address_range is minimal


def test_a_quoted_csv_line_with_a_lone_carriage_return_is_invalid_not_an_error() -> None:
    parsed = parse_blocklist(b'\x00\r"\n', feed=FORMATS["abuseipdb-csv"])
    assert parsed.entries == set()


@settings(max_examples=300)
@example(b'\x00\r"', "abuseipdb-csv")
@given(st.binary(max_size=400), st.sampled_from(sorted(FORMATS)))
def test_no_reader_raises_on_arbitrary_bytes(data: bytes, name: str) -> None:
    fmt = FORMATS[name]
    if name == "columns":
        fmt = replace(fmt, column="ip", score_column=2, end_column=3)
    elif name == "json":
        fmt = replace(fmt, field="a.b")
    parsed = parse_blocklist(data, feed=fmt)
    assert parsed.invalid >= len(parsed.invalid_lines)


@settings(max_examples=200)
@given(st.lists(st.sampled_from(["1.2.3.4", "-", ":", ",", "\t", " ", "a", "0", "/", "\"",
                                 "{", "}", "Ip:", "::", "9", ".", "#", "\x1b", "\n"]),
                max_size=60))
def test_no_reader_raises_on_address_like_noise(pieces: list[str]) -> None:
    data = "".join(pieces).encode()
    for name in ("ranges", "dshield", "ipsum", "abuseipdb-csv", "crowdsec-raw", "tor-exits",
                 "spamhaus-json", "text"):
        parse_blocklist(data, feed=FORMATS[name])
