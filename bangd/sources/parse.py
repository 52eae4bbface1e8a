"""Blocklist text into a set of normalised entries, fast enough for million-line lists.

The text format is the README's "Blocklist format". Whatever this module lets through is
sent to fail2ban verbatim, and fail2ban accepts and stores any string (`banip not-an-ip`
answers success),
so the parser is the only place a non-address can be stopped: it rejects anything it is
not sure about.

Speed: `ipaddress` costs 6-11 s per million lines (measured with CPython 3.11), more than fail2ban
itself. The hot path here therefore never builds `ipaddress` objects. A plain IPv4 line is
accepted by glibc's `inet_pton(AF_INET)`, which takes only canonical dotted quads (exactly
four decimal parts, each 0-255, no leading zeros, nothing else), so the line text already
is its normalised form (checked once at import: with a laxer C library every line takes
the careful path, slower but with the same result). Allowlist and reserved checks are
integer comparisons against sorted, merged ranges, and are skipped entirely for addresses
whose first octet touches none of them. Every other shape (CIDR, IPv6, trailing comments,
garbage) takes the careful path, still without `ipaddress`.

Comment rules: `#` and `;` start a comment anywhere, since neither can occur in an
address. `//` starts a comment at the start of a line or after whitespace only: directly
after an entry (`1.2.3.0//24`) it is more likely a mangled prefix than a comment, so such a
line is invalid rather than silently read as a single host.

Accepted entries: IPv4, IPv6, `addr/len` of either, with `len` in plain decimal (no sign,
no leading zeros, no netmask form). Zone ids (`fe80::1%eth0`), ranges, host names and
several addresses on one line are invalid.

Other feed formats (`sources[].format`, SPEC.md "Feed formats") are read by the generic
readers in `formats.py`, which only find the address text in a line and hand it to the
same scan: every format gets the same normalisation, screening and counting. Their lines
are few (a feed in another format is rarely over 100k rows), so they skip the bare-IPv4
loop but still never build `ipaddress` objects; ranges become CIDRs in `cidr.py`.
Invalid lines are reported escaped (`textsafe`): list text reaches terminals and logs.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Final, Literal, NamedTuple

from ..config import TEXT_FORMAT, FeedFormat
from ..entries import EntrySet, SortedText
from ..textsafe import safe_text
from .cidr import range_cover
from .formats import guess_format, reader_for

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Ranges that never belong on a blocklist: banning them does nothing useful at best and
# cuts off the host's own network, loopback or multicast at worst. With skip_reserved, an
# entry overlapping any of them (inside one, or containing one) is skipped and counted.
RESERVED_IPV4: Final[tuple[str, ...]] = (
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8",  # private (RFC 1918)
    "100.64.0.0/10",  # carrier-grade NAT shared space (RFC 6598)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local
    "172.16.0.0/12",  # private (RFC 1918)
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # documentation TEST-NET-1
    "192.168.0.0/16",  # private (RFC 1918)
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # documentation TEST-NET-2
    "203.0.113.0/24",  # documentation TEST-NET-3
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, includes broadcast 255.255.255.255
)
RESERVED_IPV6: Final[tuple[str, ...]] = (
    "::/128",  # unspecified
    "::1/128",  # loopback
    "::ffff:0:0/96",  # IPv4-mapped: entries inside it are rewritten as IPv4 first
    "64:ff9b::/96",  # NAT64 well-known prefix: wraps IPv4 addresses, ban those instead
    "64:ff9b:1::/48",  # NAT64 local use
    "100::/64",  # discard-only
    "2001:db8::/32",  # documentation
    "3fff::/20",  # documentation (RFC 9637)
    "fc00::/7",  # unique local
    "fe80::/10",  # link-local
    "fec0::/10",  # deprecated site-local
    "ff00::/8",  # multicast
)
RESERVED_NETWORKS: Final[tuple[str, ...]] = RESERVED_IPV4 + RESERVED_IPV6

INVALID_TEXT_LIMIT: Final = 80
GUESS_SAMPLES: Final = 32  # refused lines kept (unescaped, unreported) to guess a format from

_V4_BITS: Final = 32
_V6_BITS: Final = 128
_V4_ALL: Final = (1 << _V4_BITS) - 1
_MAPPED_HIGH: Final = 0xFFFF  # value >> 32 of ::ffff:a.b.c.d
_MAPPED_PREFIX: Final = 96
_PREFIX_RE: Final = re.compile(r"0|[1-9][0-9]{0,2}")
_INVALID: Final = "invalid"
_COMMENT: Final = "comment"

Verdict = Literal["invalid", "comment"]

# Shapes glibc's inet_pton(AF_INET) refuses and some other C libraries have accepted; the
# hot path relies on the refusal (see the module docstring), so it is checked once here.
_NON_CANONICAL_IPV4: Final = ("01.2.3.4", "1.2.3", "1", "0x1.2.3.4", "1.2.3.256", "1.2.3.4 ")


def _inet_pton_is_strict() -> bool:
    for text in _NON_CANONICAL_IPV4:
        try:
            socket.inet_pton(socket.AF_INET, text)
        except OSError:
            continue
        return False
    return True


_INET_PTON_IS_STRICT: Final = _inet_pton_is_strict()


def _spans(networks: Iterable[str]) -> tuple[tuple[int, int], ...]:
    return tuple(
        (int(n.network_address), int(n.broadcast_address))
        for n in map(ipaddress.ip_network, networks)
    )


_RESERVED_IPV4_SPANS: Final = _spans(RESERVED_IPV4)
_RESERVED_IPV6_SPANS: Final = _spans(RESERVED_IPV6)


@dataclass(frozen=True, slots=True)
class ParseFindings:
    """What a blocklist contained, and what was left out and why: all of a parse but the
    entries themselves, which may stay in the process that parsed them.

    `digest` identifies the entry set alone, so re-ordering, comments or duplicates in a
    download do not look like a change; it is the sha256 of the sorted entries, each
    followed by a newline (the same as `LC_ALL=C sort -u | sha256sum` over the entries).
    """

    count: int  # distinct entries
    digest: str
    lines: int
    invalid: int
    invalid_lines: tuple[tuple[int, str], ...]
    duplicates: int
    skipped_allowlist: int
    skipped_reserved: int
    format: str = "text"
    ignored: int = 0  # the format's own non-data lines: header rows, metadata, other records
    below_min_score: int = 0
    guessed_format: str | None = None  # what the refused lines look like, if not `format`

    @property
    def unreadable(self) -> bool:
        """Not one line read as an address: the list is probably in another format."""
        return (
            self.invalid > 0 and not self.count and not self.skipped_allowlist
            and not self.skipped_reserved and not self.below_min_score
        )

    def format_hint(self) -> str:
        """Why nothing was read and what to do, for the error of a refused import."""
        guess = (
            f" (it looks like format: {self.guessed_format})" if self.guessed_format else ""
        )
        return (
            f"no line looked like an address ({self.invalid} invalid lines in format "
            f"{self.format}): is this list in another format? see format:{guess}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedList(ParseFindings):
    """A parse's findings and its entries, in key order."""

    entries: EntrySet

    def __post_init__(self) -> None:
        if self.count != len(self.entries):  # the count is what a child's findings carry
            raise ValueError(f"a parse of {len(self.entries)} entries says count={self.count}")

    @property
    def findings(self) -> ParseFindings:
        return ParseFindings(**{f.name: getattr(self, f.name) for f in fields(ParseFindings)})


class _Entry(NamedTuple):
    """One accepted address or network: its text and the inclusive integer span it covers."""

    text: str
    is_v6: bool
    first: int
    last: int


class _Ranges:
    """Disjoint, sorted integer ranges answering "does [first, last] touch any?" by bisection."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, spans: Iterable[tuple[int, int]]) -> None:
        merged: list[tuple[int, int]] = []
        for first, last in sorted(spans):
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], last))
            else:
                merged.append((first, last))
        self._starts = tuple(first for first, _ in merged)
        self._ends = tuple(last for _, last in merged)

    def overlaps(self, first: int, last: int) -> bool:
        # Ranges are disjoint, so ends rise with starts: only the last range starting at
        # or before `last` can reach up to `first`.
        i = bisect_right(self._starts, last) - 1
        return i >= 0 and self._ends[i] >= first

    def touches_octet(self, octet: int) -> bool:
        return self.overlaps(octet << 24, (octet << 24) | 0xFFFFFF)


class _Screen:
    """The allowlist and reserved ranges of one parse, per address family.

    An IPv6 allowlist network also protects the IPv4 addresses it covers through
    ::ffff:0:0/96, because entries there are rewritten as IPv4; so `::/64` (or `::/0`)
    in an allowlist covers every IPv4 address too. That errs towards banning less.
    """

    __slots__ = ("allow4", "allow6", "needs_check4", "reserved4", "reserved6")

    def __init__(self, allowlist: Sequence[IPNetwork], skip_reserved: bool) -> None:
        allow4: list[tuple[int, int]] = []
        allow6: list[tuple[int, int]] = []
        for network in allowlist:
            first, last = int(network.network_address), int(network.broadcast_address)
            if network.version == 4:
                allow4.append((first, last))
                continue
            allow6.append((first, last))
            allow4.extend(_mapped_part(first, last))
        self.allow4 = _Ranges(allow4)
        self.allow6 = _Ranges(allow6)
        self.reserved4 = _Ranges(_RESERVED_IPV4_SPANS if skip_reserved else ())
        self.reserved6 = _Ranges(_RESERVED_IPV6_SPANS if skip_reserved else ())
        # One flag per first octet: most public addresses need no range check at all.
        self.needs_check4 = bytes(
            self.allow4.touches_octet(o) or self.reserved4.touches_octet(o) for o in range(256)
        )

    def verdict(self, is_v6: bool, first: int, last: int) -> Literal["allow", "reserved", ""]:
        """Which skip rule, if any, an entry falls under; the allowlist is reported first."""
        allow, reserved = (self.allow6, self.reserved6) if is_v6 else (self.allow4, self.reserved4)
        if allow.overlaps(first, last):
            return "allow"
        if reserved.overlaps(first, last):
            return "reserved"
        return ""


def _mapped_part(first: int, last: int) -> list[tuple[int, int]]:
    """The IPv4 span an IPv6 range covers through ::ffff:0:0/96, since such entries become IPv4."""
    base = _MAPPED_HIGH << _V4_BITS
    lo, hi = max(first, base), min(last, base | _V4_ALL)
    return [(lo - base, hi - base)] if lo <= hi else []


def raw_digest(data: bytes) -> str:
    """sha256 of a download as fetched: an unchanged list is recognised without parsing it."""
    return hashlib.sha256(data).hexdigest()


def parse_blocklist(
    data: bytes,
    *,
    allowlist: Sequence[IPNetwork] = (),
    skip_reserved: bool = True,
    invalid_samples: int = 5,
    feed: FeedFormat = TEXT_FORMAT,
) -> ParsedList:
    """Parse a downloaded blocklist; CPU-bound, so async callers run it via asyncio.to_thread."""
    screen = _Screen(allowlist, skip_reserved)
    scan = _Scan(screen, invalid_samples)
    # The entries kept go on as text a chunk at a time, sorted once at the end, which also
    # drops the duplicates; the digest and everything downstream read that one text.
    kept = SortedText()
    if feed.reader == "text":
        lines = 0
        for chunk in _text_chunks(data):
            scan.run(chunk, lines)
            lines += len(chunk)
            kept.add(scan.take())
    else:
        all_lines = _split_lines(data)
        lines = len(all_lines)
        reader_for(feed)(feed, all_lines, scan)
        del all_lines
        kept.add(scan.take())
    ordered, digest = kept.finish()
    return ParsedList(
        entries=EntrySet(ordered),
        count=len(ordered),
        digest=digest,
        lines=lines,
        invalid=scan.invalid,
        invalid_lines=tuple(scan.invalid_lines),
        duplicates=kept.kept - len(ordered),
        skipped_allowlist=scan.skipped_allowlist,
        skipped_reserved=scan.skipped_reserved,
        format=feed.name,
        ignored=scan.ignored,
        below_min_score=scan.below_min_score,
        guessed_format=guess_format(scan.guess_samples, feed.name) if scan.invalid else None,
    )


SPLIT_CHUNK: Final = 1 << 18  # bytes of text decoded and split at a time (~1.3 ms of GIL)


def _text_chunks(data: bytes) -> Iterator[list[str]]:
    """The lines of the text, about SPLIT_CHUNK bytes of them at a time, BOM removed.

    Only one chunk's line strings exist at once besides the entries kept: for 1M lines
    that spares ~70 MiB (the decoded text and a string per line, refused ones included).
    A chunk ends after a newline, which never falls inside a UTF-8 sequence.
    """
    start = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
    size = len(data)
    while start < size:
        if start + SPLIT_CHUNK >= size:
            end = size
        else:
            newline = data.find(b"\n", start + SPLIT_CHUNK)
            end = size if newline < 0 else newline + 1
        lines = data[start:end].decode("utf-8", "surrogateescape").split("\n")
        if lines[-1] == "":
            lines.pop()  # the final newline ends the last line; it does not start a new one
        yield lines
        start = end


_UTF8_BOM: Final = b"\xef\xbb\xbf"


def _split_lines(data: bytes) -> list[str]:
    """Lines of the text, BOM removed; bytes that are not UTF-8 survive as lone surrogates.

    surrogateescape keeps one bad byte from costing the whole list: the line holding it
    fails as invalid (inet_pton cannot encode a surrogate) and the rest still parse.
    """
    return [line for chunk in _text_chunks(data) for line in chunk]


class _Scan:
    """Counters and the kept entries filled by one pass over the lines.

    `run` is the text format's loop; the other formats' readers call the `formats.Sink`
    methods (`entry`, `range`, `refuse`, `ignore`, `below_score`) line by line.
    """

    def __init__(self, screen: _Screen, invalid_samples: int) -> None:
        self.screen = screen
        self.invalid_samples = invalid_samples
        # The entries kept since the last `take`, duplicates included, in input order.
        self.accepted: list[str] = []
        self.invalid = 0
        self.invalid_lines: list[tuple[int, str]] = []
        self.skipped_allowlist = 0
        self.skipped_reserved = 0
        self.ignored = 0
        self.below_min_score = 0
        self.guess_samples: list[str] = []
        self._pton = socket.inet_pton if _INET_PTON_IS_STRICT else _refuse

    def run(self, lines: list[str], before: int = 0) -> None:
        """The hot loop: plain IPv4 lines never leave it; everything else goes to `_rare`.
        `before` is how many lines came before these (for line numbers)."""
        pton = socket.inet_pton if _INET_PTON_IS_STRICT else _refuse
        af_inet = socket.AF_INET
        needs_check = self.screen.needs_check4
        keep = self.accepted.append
        for lineno, raw in enumerate(lines, before + 1):
            line = raw.strip()
            if not line:
                continue
            try:
                packed = pton(af_inet, line)
            except (OSError, ValueError):  # ValueError: NUL or a byte that was not UTF-8
                self._rare(lineno, line)
                continue
            if needs_check[packed[0]]:
                value = int.from_bytes(packed, "big")
                if not self._admit(_Entry(line, False, value, value)):
                    continue
            keep(line)

    def take(self) -> list[str]:
        """The entries kept since the last call; the next ones go to a new list."""
        taken, self.accepted = self.accepted, []
        return taken

    def _rare(self, lineno: int, line: str) -> None:
        """Handle any line that is not a bare IPv4 address."""
        entry = _parse_line(line)
        if entry == _INVALID:
            self._record_invalid(lineno, line)
        elif isinstance(entry, _Entry) and self._admit(entry):
            self.accepted.append(entry.text)

    def _admit(self, entry: _Entry) -> bool:
        """Count a skipped entry and say False, or say True for one to keep."""
        verdict = self.screen.verdict(entry.is_v6, entry.first, entry.last)
        if verdict == "allow":
            self.skipped_allowlist += 1
        elif verdict == "reserved":
            self.skipped_reserved += 1
        return not verdict

    def _record_invalid(self, lineno: int, line: str) -> None:
        self.invalid += 1
        if len(self.invalid_lines) < self.invalid_samples:
            self.invalid_lines.append((lineno, safe_text(line, INVALID_TEXT_LIMIT)))
        if len(self.guess_samples) < GUESS_SAMPLES:
            self.guess_samples.append(line[:200])

    # --- formats.Sink: what the other formats' readers report -------------------------

    def entry(self, lineno: int, text: str, line: str) -> None:
        try:  # the text format's hot path: a canonical dotted quad is its own normal form
            packed = self._pton(socket.AF_INET, text)
        except (OSError, ValueError):
            entry = _parse_entry(text) if text else None
            if entry is None:
                self._record_invalid(lineno, line)
            elif self._admit(entry):
                self.accepted.append(entry.text)
            return
        if self.screen.needs_check4[packed[0]]:
            value = int.from_bytes(packed, "big")
            if not self._admit(_Entry(text, False, value, value)):
                return
        self.accepted.append(text)

    def range(self, lineno: int, first: str, last: str, line: str) -> None:
        low, high = self._address(first), self._address(last)
        if low is None or high is None or low[0] != high[0] or low[1] > high[1]:
            self._record_invalid(lineno, line)
            return
        is_v6 = low[0]
        if is_v6:
            for network, prefix in range_cover(low[1], high[1], _V6_BITS):
                entry = _entry_of(True, network, prefix)
                if self._admit(entry):
                    self.accepted.append(entry.text)
            return
        needs_check = self.screen.needs_check4
        ntop, af_inet = socket.inet_ntop, socket.AF_INET
        for network, prefix in range_cover(low[1], high[1], _V4_BITS):
            text = ntop(af_inet, network.to_bytes(4, "big"))
            if prefix != _V4_BITS:
                text = f"{text}/{prefix}"
            # A block within one first octet that touches no screened range needs no check.
            if prefix < 8 or needs_check[network >> 24]:
                last_address = network | ((1 << (_V4_BITS - prefix)) - 1)
                if not self._admit(_Entry(text, False, network, last_address)):
                    continue
            self.accepted.append(text)

    def _address(self, text: str) -> tuple[bool, int] | None:
        """(is IPv6, value) of one address (no prefix), IPv4-mapped IPv6 as IPv4; else None."""
        try:
            return False, int.from_bytes(self._pton(socket.AF_INET, text), "big")
        except (OSError, ValueError):
            pass
        entry = _parse_entry(text) if text and "/" not in text else None
        return None if entry is None else (entry.is_v6, entry.first)

    def refuse(self, lineno: int, line: str) -> None:
        self._record_invalid(lineno, line)

    def ignore(self) -> None:
        self.ignored += 1

    def below_score(self) -> None:
        self.below_min_score += 1


def _refuse(family: int, text: str) -> bytes:
    """Stands in for a lax inet_pton: sends every line down the careful path."""
    raise OSError("inet_pton is not strict here")


def _parse_line(line: str) -> _Entry | Verdict:
    """A stripped, non-empty line: its entry, or whether it is a comment or invalid."""
    entry_text = _strip_comment(line)
    if not entry_text:
        return _COMMENT
    entry = _parse_entry(entry_text)
    return _INVALID if entry is None else entry


def _strip_comment(line: str) -> str:
    """The part of a line before its comment, without trailing whitespace."""
    cut = len(line)
    for marker in ("#", ";"):
        at = line.find(marker, 0, cut)
        if at != -1:
            cut = at
    at = line.find("//", 0, cut)
    while at != -1:
        if at == 0 or line[at - 1].isspace():
            cut = at
            break
        at = line.find("//", at + 1, cut)
    return line[:cut].rstrip()


def _parse_entry(text: str) -> _Entry | None:
    """An address or CIDR without comment or surrounding space, or None if it is not one."""
    address, slash, prefix_text = text.partition("/")
    is_v6 = ":" in address
    family, bits = (socket.AF_INET6, _V6_BITS) if is_v6 else (socket.AF_INET, _V4_BITS)
    try:
        packed = socket.inet_pton(family, address)
    except (OSError, ValueError):
        return None
    if not is_v6 and socket.inet_ntop(socket.AF_INET, packed) != address:
        return None  # only a lax inet_pton gets here: "01.2.3.4" would round-trip changed
    prefix = bits
    if slash:
        if not _PREFIX_RE.fullmatch(prefix_text) or int(prefix_text) > bits:
            return None
        prefix = int(prefix_text)
    value = int.from_bytes(packed, "big")
    if is_v6 and value >> _V4_BITS == _MAPPED_HIGH and prefix >= _MAPPED_PREFIX:
        is_v6, bits, value, prefix = False, _V4_BITS, value & _V4_ALL, prefix - _MAPPED_PREFIX
    host_bits = bits - prefix
    return _entry_of(is_v6, value >> host_bits << host_bits, prefix)


def _entry_of(is_v6: bool, first: int, prefix: int) -> _Entry:
    """The entry for a network whose host bits are already clear; /32 and /128 bare."""
    bits = _V6_BITS if is_v6 else _V4_BITS
    last = first | ((1 << (bits - prefix)) - 1)
    entry_text = _format_v6(first) if is_v6 else socket.inet_ntop(socket.AF_INET, _v4_bytes(first))
    if prefix != bits:
        entry_text = f"{entry_text}/{prefix}"
    return _Entry(entry_text, is_v6, first, last)


def _v4_bytes(value: int) -> bytes:
    return value.to_bytes(4, "big")


def _format_v6(value: int) -> str:
    """inet_ntop's lower-case compressed form, with its dotted tail for ::a.b.c.d in hex.

    glibc writes IPv4-compatible addresses as `::1.2.3.4`; `ipaddress` and most tools
    write `::102:304`, and one address must have one spelling for duplicates to collapse.
    """
    text = socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))
    if "." in text:
        text = f"{text[: text.rfind(':') + 1]}{(value >> 16) & 0xFFFF:x}:{value & 0xFFFF:x}"
    return text
