"""The generic readers behind `sources[].format`: ranges, delimited columns, JSON lines.

A reader only finds the text of the address (or range) in each line of a feed; what that
text means is decided by `parse.py`, the same way for every format, so every format gets
the same normalisation, allowlist and reserved checks. Each line ends up as exactly one of:
an entry, a range, a line the format itself says is not data (a header row, a metadata
object, another record type: `ignore`), a row below `min_score`, or invalid (reported
with its line number, as in `text`). Blank lines and `#` comment lines are none of these.

The named formats (config.FORMATS) are these readers with fixed settings. `guess_format`
looks at lines a parse refused and says which `format:` they look like, so a list read
with the wrong format fails with a hint instead of importing nothing in silence.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from ..config import WHITESPACE, Column, FeedFormat


class Sink(Protocol):
    """What a reader reports each line as; parse.py's scan implements it."""

    def entry(self, lineno: int, text: str, line: str) -> None: ...
    def range(self, lineno: int, first: str, last: str, line: str) -> None: ...
    def refuse(self, lineno: int, line: str) -> None: ...
    def ignore(self) -> None: ...
    def below_score(self) -> None: ...


Reader = Callable[[FeedFormat, list[str], Sink], None]

_COMMENTS: Final = ("#", ";", "//")
_PADDED_V4: Final = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


def reader_for(feed: FeedFormat) -> Reader:
    """The reader for a non-text format; `text` has its own fast loop in parse.py."""
    readers: dict[str, Reader] = {
        "ranges": read_ranges, "columns": read_columns, "json": read_json,
    }
    return readers[feed.reader]


# --- ranges -------------------------------------------------------------------------------


def read_ranges(feed: FeedFormat, lines: list[str], sink: Sink) -> None:
    """`a-b` per line, optionally after a `label:` (PeerGuardian P2P); single entries too.

    A P2P label may hold colons, dashes, `#` and `;`, so comments count only as whole
    lines, and the address is found as the longest tail of the line that reads as one.
    Zero-padded IPv4 (`001.002.003.000`, as some P2P exports write) is read as decimal.
    """
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith(_COMMENTS):
            continue
        dash = line.rfind("-")
        if dash == -1:
            sink.entry(lineno, _address_tail(line), line)
            continue
        last = line[dash + 1 :].strip()
        cut = last.find(" #")
        if cut != -1:
            last = last[:cut].rstrip()
        sink.range(lineno, _address_tail(line[:dash].strip()), _unpad(last), line)


def _address_tail(text: str) -> str:
    """`label:ADDR` -> ADDR, for labels with colons and IPv6 addresses alike."""
    colon = text.rfind(":")
    if colon == -1:
        return _unpad(text)
    tail = text[colon + 1 :]
    if "." in tail:  # IPv4 after a label (P2P), or the dotted end of ::ffff:a.b.c.d
        return _unpad(tail.strip())
    if _ADDRESS.fullmatch(text):
        return text
    at = text.find(":")
    while at != -1:
        tail = text[at + 1 :].strip()
        if _ADDRESS.fullmatch(tail):
            return tail
        at = text.find(":", at + 1)
    return text


# Cheap shape test for an IPv6 tail; parse.py decides for real.
_ADDRESS: Final = re.compile(r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]*")
_PADDED: Final = re.compile(r"(?:^|\.)0\d")


def _unpad(text: str) -> str:
    """`001.002.003.000` -> `1.2.3.0`: zero-padded decimal, never octal."""
    if not _PADDED.search(text) or not _PADDED_V4.fullmatch(text):
        return text
    return ".".join(str(int(part)) for part in text.split("."))


# --- delimited columns --------------------------------------------------------------------


def _splitter(delimiter: str) -> Callable[[str], list[str]]:
    if delimiter == WHITESPACE:
        return str.split

    def split(line: str) -> list[str]:
        if '"' in line:  # quoted fields (CrowdSec quotes AS names with commas)
            try:
                return next(csv.reader([line], delimiter=delimiter), [])
            except csv.Error:  # e.g. a lone carriage return inside: read it unquoted
                pass
        return line.split(delimiter)

    return split


def _resolve(column: Column | None, header: Sequence[str] | None) -> int | None:
    """0-based index of a column given by 1-based number or by header name (any case)."""
    if column is None:
        return None
    if isinstance(column, int):
        return column - 1
    if header is None:
        return -1
    wanted = column.lower()
    for i, name in enumerate(header):
        if name.strip().lower() == wanted:
            return i
    return -1


class _Columns:
    """Where the wanted columns are: known at once for numbers, from the header for names."""

    def __init__(self, feed: FeedFormat, header: Sequence[str] | None) -> None:
        value = _resolve(feed.column, header)
        self.value = -1 if value is None else value
        self.end = _resolve(feed.end_column, header)
        self.score = _resolve(feed.score_column, header)

    def complete(self) -> bool:
        return -1 not in (self.value, self.end, self.score)


def read_columns(feed: FeedFormat, lines: list[str], sink: Sink) -> None:
    """Delimited rows; the address (or range start/end) and an optional score by column.

    With a header, rows before it are invalid (the columns are not known yet); a header
    found again later (two files concatenated) is skipped. With `record`, only rows whose
    first field is that word are data; others are another record type and skipped.
    """
    split = _splitter(feed.delimiter)
    header: list[str] | None = None
    columns = _Columns(feed, None)
    wants_header = feed.header
    min_score = feed.min_score if feed.min_score is not None else 0.0
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = split(line)
        if feed.record is not None and (not fields or fields[0] != feed.record):
            sink.ignore()
            continue
        if wants_header and header is None:
            found = _Columns(feed, fields)
            if found.complete():
                header, columns = fields, found
                sink.ignore()
            else:
                sink.refuse(lineno, line)
            continue
        if fields == header:
            sink.ignore()
            continue
        _row(feed, columns, fields, lineno, line, sink, min_score)


def _row(
    feed: FeedFormat, columns: _Columns, fields: list[str], lineno: int, line: str,
    sink: Sink, min_score: float,
) -> None:
    width = len(fields)
    if columns.value >= width or (columns.end or 0) >= width or (columns.score or 0) >= width:
        sink.refuse(lineno, line)
        return
    value = fields[columns.value].strip()
    if feed.scopes:
        scoped = _scoped(value, feed.scopes)
        if scoped is None:
            sink.ignore()  # another decision scope: Country:CN, AS:1234, Username:...
            return
        value = scoped
    if columns.score is not None:
        try:
            score = float(fields[columns.score])
        except ValueError:
            sink.refuse(lineno, line)
            return
        if not score >= min_score:  # also refuses NaN
            sink.below_score()
            return
    if columns.end is not None:
        sink.range(lineno, value, fields[columns.end].strip(), line)
    else:
        sink.entry(lineno, value, line)


_HEX: Final = frozenset("0123456789abcdefABCDEF")


def _scoped(value: str, scopes: tuple[str, ...]) -> str | None:
    """`Ip:1.2.3.4` -> `1.2.3.4`; None for another scope; the value itself if unscoped."""
    for scope in scopes:
        if value[: len(scope)].lower() == scope.lower():
            return value[len(scope) :].strip()
    head, colon, _ = value.partition(":")
    if colon and head.isalpha() and not set(head) <= _HEX:
        return None
    return value


# --- JSON lines ---------------------------------------------------------------------------


_MISSING: Final = object()


def _lookup(obj: object, path: Sequence[str]) -> object:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def read_json(feed: FeedFormat, lines: list[str], sink: Sink) -> None:
    """One JSON object per line (NDJSON); `field` names the key, dots reach nested keys.

    An object without the key is another kind of record (Spamhaus ends its feeds with a
    `{"type":"metadata",...}` line) and is skipped; a line that is not a JSON object, or
    whose value is not a string (or a list of strings), is invalid.
    """
    path = feed.field.split(".")
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            obj = json.loads(line) if line[0] == "{" else None
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict):
            sink.refuse(lineno, line)
            continue
        value = _lookup(obj, path)
        if value is _MISSING:
            sink.ignore()
        elif isinstance(value, str):
            sink.entry(lineno, value.strip(), line)
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            for item in value:
                sink.entry(lineno, item.strip(), line)
        else:
            sink.refuse(lineno, line)


# --- guessing -----------------------------------------------------------------------------

_ADDR: Final = r"[0-9A-Fa-f:.]*[0-9A-Fa-f](?:/\d{1,3})?"
_GUESSES: Final = (
    ("spamhaus-json", re.compile(r'\{.*"cidr"\s*:')),
    ("json", re.compile(r"[{\[]")),
    ("tor-exits", re.compile(r"(ExitNode|ExitAddress|Published|LastStatus) ")),
    ("abuseipdb-csv", re.compile(r"ipAddress,|" + _ADDR + r",[A-Z]{2}?,\d{1,3},\d{4}-")),
    ("crowdsec-raw", re.compile(r"id,source,ip,|.*,(Ip|Range):" + _ADDR + ",")),
    ("dshield", re.compile(r"(?i)start\tend\t|" + _ADDR + r"\t" + _ADDR + r"\t\d{1,3}(\t|$)")),
    ("ipsum", re.compile(_ADDR + r"\s+\d+$")),
    ("ranges", re.compile(r"(.*:)?\s*" + _ADDR + r"\s*-\s*" + _ADDR + "$")),
    ("columns", re.compile(r".*?(^|[,;\t|])\s*" + _ADDR + r"\s*([,;\t|]|$)")),
)


def guess_format(samples: Sequence[str], current: str) -> str | None:
    """The `format:` that most of the refused lines look like, if it is not `current`."""
    votes: Counter[str] = Counter()
    for line in samples:
        for name, pattern in _GUESSES:
            if pattern.match(line):
                votes[name] += 1
                break
    for name, _ in votes.most_common(1):
        if name != current and votes[name] * 2 >= len(samples):
            return name
    return None
