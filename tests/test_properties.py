"""Property-based checks of the parts that read untrusted input: blocklists and config files.

(The control protocol's framing and argument checks have theirs in test_control_args.py.)
Each property is checked on a few hundred generated cases in the normal suite.
"""

from __future__ import annotations

import asyncio
import ipaddress
import unicodedata

import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bangd import slices, windows
from bangd.config import Config, parse_config
from bangd.errors import ConfigError
from bangd.sources.parse import parse_blocklist

MAPPED = ipaddress.ip_network("::ffff:0:0/96")
TERMINAL_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def expected_entry(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """The normal form SPEC.md promises: host bits cleared, a full-length prefix dropped."""
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


v4_networks = st.ip_addresses(v=4).flatmap(
    lambda a: st.integers(0, 32).map(lambda p: ipaddress.ip_network(f"{a}/{p}", strict=False))
)
v6_networks = st.ip_addresses(v=6).filter(lambda a: a not in MAPPED).flatmap(
    lambda a: st.integers(0, 128).map(lambda p: ipaddress.ip_network(f"{a}/{p}", strict=False))
)


@st.composite
def entry_lines(draw: st.DrawFn) -> tuple[str, str]:
    """(a line as a list might write it, the entry it must yield)."""
    net = draw(v4_networks | v6_networks)
    host = draw(st.booleans()) and net.prefixlen == net.max_prefixlen
    text = str(net.network_address) if host else str(net)
    if draw(st.booleans()):  # host bits set, as lists often write them
        text = f"{net.network_address + (net.num_addresses - 1)}/{net.prefixlen}"
    comment = draw(st.sampled_from(["", " # c", " ; SBL1", "\t// x", "  "]))
    return f"{draw(st.sampled_from(['', ' ', chr(9)]))}{text}{comment}", expected_entry(net)


noise_lines = st.sampled_from(["", "# comment", "; note", "// header", "   "])
garbage_lines = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Zl", "Zp", "Cc")), min_size=1,
    max_size=20,
).map(lambda t: "x" + t.replace("#", "").replace(";", "").replace("/", "").strip())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(entry_lines(), max_size=40),
    st.lists(noise_lines, max_size=10),
    st.lists(garbage_lines, max_size=10),
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_a_list_yields_exactly_its_normalised_entries_and_counts_each_bad_line(
    entries: list[tuple[str, str]], noise: list[str], garbage: list[str], newline: str,
    bom: bool, rng: object,
) -> None:
    lines = [text for text, _ in entries] + noise + garbage
    rng.shuffle(lines)  # type: ignore[attr-defined]
    data = (b"\xef\xbb\xbf" if bom else b"") + newline.join(lines).encode()
    parsed = parse_blocklist(data, skip_reserved=False)
    assert parsed.entries == {entry for _, entry in entries}
    assert parsed.invalid == len(garbage)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
@example(b"\xd8\x80")  # U+0600: a format character a hand-made list of them missed
def test_any_bytes_parse_without_raising_and_bad_lines_are_shown_on_one_line(
    data: bytes,
) -> None:
    parsed = parse_blocklist(data)
    assert parsed.invalid >= len(parsed.invalid_lines)
    for lineno, text in parsed.invalid_lines:
        assert lineno >= 1
        # Nothing a terminal acts on or hides (controls, bidi overrides, separators).
        assert not {unicodedata.category(c) for c in text} & TERMINAL_CATEGORIES, repr(text)


config_keys = st.sampled_from([
    "database", "log_level", "control", "fail2ban", "allowlist", "skip_reserved", "sources",
    "geo", "socket", "mode", "group", "jail", "timeout", "batch_size", "name", "url", "path",
    "interval", "max_entries", "enabled", "mmdb", "retention_days", "intreval", "",
])
config_scalars = (
    st.none() | st.booleans() | st.integers(-10, 10**7) | st.floats(allow_nan=True)
    | st.sampled_from(["/tmp/x.db", "5m", "1d", "info", "0660", "bl", "http://x/y",
                       "1.2.3.0/24", "not valid", "-1s", "9" * 40])
)
config_trees = st.recursive(
    config_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(config_keys, inner, max_size=4),
    max_leaves=15,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(config_keys, config_trees, max_size=6))
def test_any_config_tree_loads_or_names_each_problem_on_one_line(tree: dict[str, object]) -> None:
    text = yaml.safe_dump(tree)
    try:
        config = parse_config(text, "/etc/bangd/config.yaml")
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.startswith("/etc/bangd/config.yaml: ")
            assert "\n" not in problem
        return
    assert isinstance(config, Config)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_as_config_loads_or_is_refused_with_a_config_error(text: str) -> None:
    try:
        parse_config(text, "c.yaml")
    except ConfigError as exc:
        assert all("\n" not in p for p in exc.problems)


@given(
    st.lists(st.integers(0, 300), unique=True),
    st.lists(st.integers(0, 300), unique=True),
    st.integers(1, 20),
)
@settings(max_examples=300)
def test_an_import_delta_is_exactly_the_set_difference_both_ways(
    wanted: list[int], applied: list[int], slice_size: int
) -> None:
    desired = sorted({f"{n:03d}" for n in wanted})
    current = sorted(f"{n:03d}" for n in applied)
    original = windows.SLICE
    windows.SLICE = slice_size  # type: ignore[misc]  # windows of every size, edges included
    try:
        to_add, to_remove = asyncio.run(slices.sorted_difference(desired, current))
    finally:
        windows.SLICE = original  # type: ignore[misc]
    assert list(to_add) == sorted(set(desired) - set(current))
    assert to_remove == sorted(set(current) - set(desired))


@given(
    st.lists(st.integers(0, 300), unique=True),
    st.lists(st.integers(0, 300), unique=True),
    st.integers(1, 20),
    st.integers(1, 30),
)
@settings(max_examples=300)
def test_a_delta_compared_piece_by_piece_is_the_set_difference_both_ways(
    wanted: list[int], applied: list[int], slice_size: int, piece: int
) -> None:
    """As the parser process compares what is applied, read from SQLite in pieces."""
    desired = sorted({f"{n:03d}" for n in wanted})
    current = sorted(f"{n:03d}" for n in applied)
    pieces = [current[start : start + piece] for start in range(0, len(current), piece)]
    original = windows.SLICE
    windows.SLICE = slice_size  # type: ignore[misc]
    try:
        found = [(list(fresh), list(stale))
                 for fresh, stale in windows.pieces_difference(desired, pieces)]
    finally:
        windows.SLICE = original  # type: ignore[misc]
    assert [e for fresh, _ in found for e in fresh] == sorted(set(desired) - set(current))
    assert [e for _, stale in found for e in stale] == sorted(set(current) - set(desired))
