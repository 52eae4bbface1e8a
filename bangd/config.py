"""The YAML configuration, read into a tree of frozen dataclasses.

Every problem in a file is collected and reported at once, each naming the file, the key
path and what is accepted, so an operator fixes a config in one pass instead of one error
per restart. Nothing here touches the network, the database or fail2ban.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/bangd/config.yaml"
DEFAULT_CONTROL_SOCKET = "/run/bangd/bangd.sock"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, None: 1}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1, "b": 1,
    "k": 1024, "kb": 1000, "kib": 1024,
    "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1000**3, "gib": 1024**3,
}
_SOURCE_NAME_RE = re.compile(r"[a-z0-9_-]+")
JAIL_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*")  # never a leading '-': an option
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with its terminating NUL
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class ControlConfig:
    socket: str = DEFAULT_CONTROL_SOCKET
    mode: int = 0o660
    group: str | None = None
    idle_timeout: float = 300.0


@dataclass(frozen=True)
class Fail2banConfig:
    socket: str = "/var/run/fail2ban/fail2ban.sock"
    jail: str = "blocklist"
    timeout: float = 10.0
    # The Applier's batch (services/apply.py), and the cap of one wire call to fail2ban,
    # which may be smaller (fail2ban/client.py).
    batch_size: int = 1000
    reconcile_interval: float = 900.0


Column = int | str
"""A column by its 1-based position, or by its name in the list's header row."""

WHITESPACE = " "
"""The `delimiter` value meaning "any run of spaces and tabs"."""


@dataclass(frozen=True)
class FeedFormat:
    """How one source's list is read: a named format, or a generic reader's settings.

    `reader` is one of the generic readers (`text`, `ranges`, `columns`, `json`); every
    named format in FORMATS is one of them with fixed settings, so a feed the table does
    not name is configured with the same pieces (`format: columns` plus `column`, ...).
    """

    name: str = "text"
    reader: str = "text"
    delimiter: str = ","  # columns: one character, or WHITESPACE
    column: Column = 1  # columns: the address (or range start) column
    end_column: Column | None = None  # columns: a range end column (start-end rows)
    score_column: Column | None = None  # columns: a number compared with min_score
    min_score: float | None = None
    header: bool = False  # columns: the first row that is not a comment is a header
    record: str | None = None  # columns: only rows whose first field is this are data
    scopes: tuple[str, ...] = ()  # columns: the value starts with one of these (CrowdSec)
    field: str = ""  # json: the key holding the address; dots reach into nested objects

    @property
    def has_score(self) -> bool:
        return self.score_column is not None


TEXT_FORMAT: FeedFormat = FeedFormat()

FORMATS: dict[str, FeedFormat] = {
    "text": TEXT_FORMAT,
    "ranges": FeedFormat(name="ranges", reader="ranges"),
    "spamhaus-json": FeedFormat(name="spamhaus-json", reader="json", field="cidr"),
    "dshield": FeedFormat(
        name="dshield", reader="columns", delimiter="\t", column="Start", end_column="End",
        header=True,
    ),
    "ipsum": FeedFormat(
        name="ipsum", reader="columns", delimiter=WHITESPACE, column=1, score_column=2,
        min_score=1,
    ),
    "abuseipdb-csv": FeedFormat(
        name="abuseipdb-csv", reader="columns", column="ipAddress",
        score_column="abuseConfidenceScore", min_score=0, header=True,
    ),
    "crowdsec-raw": FeedFormat(
        name="crowdsec-raw", reader="columns", column="ip", header=True,
        scopes=("Ip:", "Range:"),
    ),
    "tor-exits": FeedFormat(
        name="tor-exits", reader="columns", delimiter=WHITESPACE, column=2,
        record="ExitAddress",
    ),
    "columns": FeedFormat(name="columns", reader="columns"),
    "json": FeedFormat(name="json", reader="json"),
}
"""Every `format:` a source may name; SPEC.md "Feed formats" and README's table."""

COLUMNS_KEYS = ("delimiter", "column", "end_column", "score_column", "header", "record")
JSON_KEYS = ("field",)


class HttpHeaders:
    """Request headers a source sends, such as an API key; the values never leave here.

    repr() and str() show the names only, so a config dumped into a log, a traceback or
    a test failure does not carry the key; `items()` is for the fetcher alone. Not a
    dataclass on purpose: `dataclasses.asdict()` would copy the values out.
    """

    __slots__ = ("_items",)

    def __init__(self, items: tuple[tuple[str, str], ...] = ()) -> None:
        self._items = items

    def items(self) -> tuple[tuple[str, str], ...]:
        return self._items

    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HttpHeaders) and self._items == other._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"HttpHeaders({', '.join(f'{n}=<hidden>' for n in self.names())})"

    __str__ = __repr__


@dataclass(frozen=True)
class SourceConfig:
    name: str
    jail: str
    interval: float
    url: str | None = None
    path: str | None = None
    max_entries: int = 1_000_000
    enabled: bool = True
    timeout: float = 60.0
    max_bytes: int = 64 * 1024**2
    format: FeedFormat = TEXT_FORMAT
    headers: HttpHeaders = field(default_factory=HttpHeaders)
    max_drop: float | None = None  # share of entries a list may lose at once; None: any

    @property
    def location(self) -> str:
        """The URL or path, whichever the source has, for logs and tables."""
        return self.url if self.url is not None else str(self.path)


@dataclass(frozen=True)
class IpApiConfig:
    enabled: bool = False
    url: str = "http://ip-api.com/batch"
    timeout: float = 10.0


@dataclass(frozen=True)
class GeoConfig:
    mmdb: str | None = None
    asn_mmdb: str | None = None
    ip_api: IpApiConfig = field(default_factory=IpApiConfig)
    negative_ttl: float = 86400.0
    retention_days: int = 90
    cleanup_interval: float = 86400.0


@dataclass(frozen=True)
class Config:
    path: str
    database: str = "/var/lib/bangd/bangd.db"
    log_level: str = "info"
    control: ControlConfig = field(default_factory=ControlConfig)
    fail2ban: Fail2banConfig = field(default_factory=Fail2banConfig)
    allowlist: tuple[IPNetwork, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    skip_reserved: bool = True
    sources: tuple[SourceConfig, ...] = ()
    geo: GeoConfig = field(default_factory=GeoConfig)

    def source(self, name: str) -> SourceConfig | None:
        for src in self.sources:
            if src.name == name:
                return src
        return None


def parse_duration(value: object) -> float:
    """Seconds from an integer or a string such as `90s`, `5m`, `6h`, `1d`."""
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError("a duration: seconds as an integer, or a string like 90s, 5m, 6h, 1d")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("a finite duration greater than zero")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from an integer or a string such as `64MiB`, `500k`."""
    if isinstance(value, bool):
        raise ValueError("a size, not a boolean")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE_RE.match(value)):
        unit = m.group(2).lower() if m.group(2) else None
        size = int(m.group(1)) * _SIZE_UNITS[unit]
    else:
        raise ValueError("a size: bytes as an integer, or a string like 500KiB, 64MiB, 1GiB")
    if size <= 0:
        raise ValueError("a size greater than zero")
    return size


T = TypeVar("T")


class _Reader:
    """Walks one YAML mapping, collecting problems instead of stopping at the first."""

    def __init__(self, filename: str, problems: list[str]) -> None:
        self.filename = filename
        self.problems = problems

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{self.filename}: {where}: {message}")

    def mapping(
        self, value: object, where: str, allowed: tuple[str, ...]
    ) -> Mapping[str, Any] | None:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(where or "top level", f"expected a mapping, got {_kind(value)}")
            return None
        for key in value:
            if not isinstance(key, str) or key not in allowed:
                hint = ""
                close = difflib.get_close_matches(str(key), allowed, n=1)
                if close:
                    hint = f"; did you mean {close[0]}?"
                else:
                    hint = f"; known keys: {', '.join(allowed)}"
                self.problem(_join(where, str(key)), f"unknown key{hint}")
        return value

    def get(
        self,
        data: Mapping[str, Any],
        where: str,
        key: str,
        convert: Callable[[object], T],
        default: T,
    ) -> T:
        if key not in data:
            return default
        try:
            return convert(data[key])
        except ValueError as exc:
            self.problem(_join(where, key), f"expected {exc}, got {data[key]!r}")
            return default


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError("true or false")


def _int_at_least(low: int) -> Callable[[object], int]:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"an integer >= {low}")
        return value

    return convert


def _nonempty_str(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a non-empty string")
    return value


def _optional_str(value: object) -> str | None:
    if value is None:
        return None
    return _nonempty_str(value)


def _abs_path(value: object) -> str:
    text = _nonempty_str(value)
    if not os.path.isabs(text):
        raise ValueError("an absolute path")
    return text


def _socket_path(value: object) -> str:
    text = _abs_path(value)
    if len(os.fsencode(text)) > MAX_SOCKET_PATH:
        raise ValueError(f"a socket path of at most {MAX_SOCKET_PATH} bytes")
    return text


def _optional_abs_path(value: object) -> str | None:
    return None if value is None else _abs_path(value)


def _mode(value: object) -> int:
    # YAML reads an unquoted 0660 as the integer 432 (octal in YAML 1.1); quoted it is a string.
    if isinstance(value, str) and re.fullmatch(r"0?[0-7]{3}", value.strip()):
        return int(value.strip(), 8)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777:
        return value
    raise ValueError('a file mode such as "0660" (quoted)')


def _log_level(value: object) -> str:
    if isinstance(value, str) and value.lower() in LOG_LEVELS:
        return value.lower()
    raise ValueError("one of " + ", ".join(LOG_LEVELS))


def _jail(value: object) -> str:
    text = _nonempty_str(value)
    if not JAIL_NAME.fullmatch(text):
        raise ValueError("a fail2ban jail name (letters, digits, _ . -; not starting with -)")
    return text


def _url(value: object) -> str:
    text = _nonempty_str(value)
    if not re.match(r"^https?://[^\s/]+", text):
        raise ValueError("an http:// or https:// URL")
    return text


def _network(value: object) -> IPNetwork:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ValueError("an IP address or CIDR")
    try:
        return ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError:
        raise ValueError("an IP address or CIDR such as 192.0.2.0/24 or 2001:db8::/32") from None


def load_config(path: str) -> Config:
    """Read and validate `path`; raise ConfigError listing every problem found."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    return parse_config(text, path)


def parse_config(text: str, filename: str) -> Config:
    """Validate YAML text; `filename` is only used to name the file in problems."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{filename}: {where}: invalid YAML: {reason}"]) from None
    problems: list[str] = []
    r = _Reader(filename, problems)
    top = r.mapping(
        data,
        "",
        (
            "database", "log_level", "control", "fail2ban", "allowlist",
            "skip_reserved", "sources", "geo",
        ),
    )
    if top is None:
        raise ConfigError(problems)
    defaults = Config(path=filename)
    control = _control(r, top.get("control"))
    fail2ban = _fail2ban(r, top.get("fail2ban"))
    allowlist = _allowlist(r, top, defaults.allowlist)
    sources = _sources(r, top.get("sources"), fail2ban.jail)
    geo = _geo(r, top.get("geo"))
    config = Config(
        path=filename,
        database=r.get(top, "", "database", _abs_path, defaults.database),
        log_level=r.get(top, "", "log_level", _log_level, defaults.log_level),
        control=control,
        fail2ban=fail2ban,
        allowlist=allowlist,
        skip_reserved=r.get(top, "", "skip_reserved", _bool, defaults.skip_reserved),
        sources=sources,
        geo=geo,
    )
    if problems:
        raise ConfigError(problems)
    return config


def _control(r: _Reader, value: object) -> ControlConfig:
    d = ControlConfig()
    data = r.mapping(value, "control", ("socket", "mode", "group", "idle_timeout"))
    if data is None:
        return d
    return ControlConfig(
        socket=r.get(data, "control", "socket", _socket_path, d.socket),
        mode=r.get(data, "control", "mode", _mode, d.mode),
        group=r.get(data, "control", "group", _optional_str, d.group),
        idle_timeout=r.get(data, "control", "idle_timeout", parse_duration, d.idle_timeout),
    )


def _fail2ban(r: _Reader, value: object) -> Fail2banConfig:
    d = Fail2banConfig()
    where = "fail2ban"
    data = r.mapping(
        value, where, ("socket", "jail", "timeout", "batch_size", "reconcile_interval")
    )
    if data is None:
        return d
    return Fail2banConfig(
        socket=r.get(data, where, "socket", _socket_path, d.socket),
        jail=r.get(data, where, "jail", _jail, d.jail),
        timeout=r.get(data, where, "timeout", parse_duration, d.timeout),
        batch_size=r.get(data, where, "batch_size", _int_at_least(1), d.batch_size),
        reconcile_interval=r.get(
            data, where, "reconcile_interval", parse_duration, d.reconcile_interval
        ),
    )


def _allowlist(
    r: _Reader, top: Mapping[str, Any], default: tuple[IPNetwork, ...]
) -> tuple[IPNetwork, ...]:
    if "allowlist" not in top:
        return default
    value = top["allowlist"]
    if value is None:
        return ()
    if not isinstance(value, list):
        r.problem("allowlist", f"expected a list of addresses or CIDRs, got {_kind(value)}")
        return default
    networks: list[IPNetwork] = []
    for i, item in enumerate(value):
        try:
            networks.append(_network(item))
        except ValueError as exc:
            r.problem(f"allowlist[{i}]", f"expected {exc}, got {item!r}")
    return tuple(networks)


_SOURCE_KEYS = (
    "name", "url", "path", "interval", "jail", "max_entries", "enabled", "timeout", "max_bytes",
    "format", "min_score", *COLUMNS_KEYS, *JSON_KEYS, "headers", "headers_file", "max_drop",
)


def _sources(r: _Reader, value: object, default_jail: str) -> tuple[SourceConfig, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        r.problem("sources", f"expected a list of sources, got {_kind(value)}")
        return ()
    sources: list[SourceConfig] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        where = f"sources[{i}]"
        data = r.mapping(item, where, _SOURCE_KEYS)
        if data is None:
            continue
        name = data.get("name")
        if not isinstance(name, str) or not _SOURCE_NAME_RE.fullmatch(name):
            r.problem(_join(where, "name"), f"expected a name of [a-z0-9_-]+, got {name!r}")
            name = f"#{i}"
        elif name in seen:
            r.problem(_join(where, "name"), f"duplicate source name {name!r}")
        seen.add(name)
        has_url, has_path = "url" in data, "path" in data
        if has_url == has_path:
            r.problem(where, "expected exactly one of url or path")
        if "interval" not in data:
            r.problem(_join(where, "interval"), "missing; expected a duration such as 12h")
        d = SourceConfig(name=name, jail=default_jail, interval=43200.0)
        sources.append(
            SourceConfig(
                name=name,
                url=r.get(data, where, "url", _url, None) if has_url else None,
                path=r.get(data, where, "path", _abs_path, None) if has_path else None,
                interval=r.get(data, where, "interval", parse_duration, d.interval),
                jail=r.get(data, where, "jail", _jail, d.jail),
                max_entries=r.get(data, where, "max_entries", _int_at_least(1), d.max_entries),
                enabled=r.get(data, where, "enabled", _bool, d.enabled),
                timeout=r.get(data, where, "timeout", parse_duration, d.timeout),
                max_bytes=r.get(data, where, "max_bytes", parse_size, d.max_bytes),
                format=_feed_format(r, data, where),
                headers=_headers(r, data, where),
                max_drop=r.get(data, where, "max_drop", _share, d.max_drop),
            )
        )
    return tuple(sources)


def _feed_format(r: _Reader, data: Mapping[str, Any], where: str) -> FeedFormat:
    """The source's `format:` and the options that go with it; a misplaced option is a problem."""
    name = data.get("format", "text")
    preset = FORMATS.get(name) if isinstance(name, str) else None
    if preset is None:
        close = difflib.get_close_matches(str(name), FORMATS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        r.problem(
            _join(where, "format"),
            f"unknown format {name!r}; {hint}known formats: {', '.join(FORMATS)}",
        )
        return TEXT_FORMAT
    options: dict[str, Any] = {}
    own = {"columns": COLUMNS_KEYS, "json": JSON_KEYS}.get(preset.name, ())
    for key in (*COLUMNS_KEYS, *JSON_KEYS):
        if key in data and key not in own:
            generic = "columns" if key in COLUMNS_KEYS else "json"
            r.problem(
                _join(where, key),
                f"only for format: {generic} (format {preset.name} sets its own)",
            )
    if preset.name == "columns":
        if "column" not in data:
            r.problem(_join(where, "column"), "missing; format: columns needs the address "
                      "column, by number (1 is the first) or by header name")
        options = {
            "delimiter": r.get(data, where, "delimiter", _delimiter, preset.delimiter),
            "column": r.get(data, where, "column", _column, preset.column),
            "end_column": r.get(data, where, "end_column", _optional_column, None),
            "score_column": r.get(data, where, "score_column", _optional_column, None),
            "header": r.get(data, where, "header", _bool, False),
            "record": r.get(data, where, "record", _optional_str, None),
        }
        named = [c for c in (options["column"], options["end_column"], options["score_column"])
                 if isinstance(c, str)]
        options["header"] = options["header"] or bool(named)
    elif preset.name == "json":
        if "field" not in data:
            r.problem(_join(where, "field"), "missing; format: json needs the key that holds "
                      "the address, such as cidr or data.ip")
        options = {"field": r.get(data, where, "field", _nonempty_str, "")}
    has_score = preset.has_score or options.get("score_column") is not None
    if "min_score" in data:
        if has_score:
            options["min_score"] = r.get(data, where, "min_score", _number, preset.min_score)
        else:
            r.problem(
                _join(where, "min_score"),
                f"format {preset.name} has no score to compare"
                + ("; set score_column" if preset.name == "columns" else ""),
            )
    elif has_score and preset.min_score is None:
        options["min_score"] = 0.0
    return replace(preset, **options) if options else preset


def _column(value: object) -> Column:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise ValueError("a column number (1 is the first) or a header name")


def _optional_column(value: object) -> Column | None:
    return None if value is None else _column(value)


def _delimiter(value: object) -> str:
    if value in ("tab", "\t"):
        return "\t"
    if value in ("whitespace", " "):
        return WHITESPACE
    if isinstance(value, str) and len(value) == 1 and value not in "\"\r\n":
        return value
    raise ValueError('one character such as "," or ";", or tab, or whitespace')


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("a number")
    return float(value)


def _share(value: object) -> float | None:
    """A share such as `50%` or 0.5, of (0, 1]; null means no limit."""
    if value is None:
        return None
    share: float | None = None
    if isinstance(value, str) and (m := re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value)):
        share = float(m.group(1)) / 100
    elif isinstance(value, float) and not isinstance(value, bool):
        share = value
    if share is None or not 0 < share <= 1:
        raise ValueError("a share such as 50% or 0.5 (more than 0, at most 100%)")
    return share


_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _headers(r: _Reader, data: Mapping[str, Any], where: str) -> HttpHeaders:
    """`headers_file:` lines, then `headers:`; `${VAR}` in a value comes from the environment.

    No problem message ever quotes a value: it may be a key.
    """
    items: dict[str, tuple[str, str]] = {}  # lower-case name -> (name, value)
    if "headers_file" in data:
        file_where = _join(where, "headers_file")
        try:
            path = _abs_path(data["headers_file"])
        except ValueError as exc:
            r.problem(file_where, f"expected {exc}")
        else:
            for name, value in _headers_file(r, file_where, path):
                items[name.lower()] = (name, value)
    given = data.get("headers")
    if given is not None and not isinstance(given, dict):
        r.problem(_join(where, "headers"), f"expected a mapping of Name: value, got {_kind(given)}")
        given = None
    for name, raw in (given or {}).items():
        key_where = _join(_join(where, "headers"), str(name))
        if not isinstance(name, str) or not _HEADER_NAME_RE.fullmatch(name):
            r.problem(key_where, "expected an HTTP header name (letters, digits, -)")
            continue
        if not isinstance(raw, str | int) or isinstance(raw, bool):
            r.problem(key_where, f"expected a string value, got {_kind(raw)}")
            continue
        expanded = _expand_env(r, key_where, str(raw))
        if expanded is None:
            continue
        if name.lower() in items:
            r.problem(key_where, "also set in headers_file; set it in one place")
            continue
        items[name.lower()] = (name, expanded)
    return HttpHeaders(tuple(items.values()))


def _expand_env(r: _Reader, where: str, value: str) -> str | None:
    missing = [m.group(1) for m in _ENV_RE.finditer(value) if m.group(1) not in os.environ]
    if missing:
        r.problem(where, f"environment variable {missing[0]} is not set")
        return None
    expanded = _ENV_RE.sub(lambda m: os.environ[m.group(1)], value)
    if not _header_value_ok(expanded):
        r.problem(where, "the value is empty or holds a line break or control character")
        return None
    return expanded


def _header_value_ok(value: str) -> bool:
    return bool(value.strip()) and not any(
        (ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value
    )


def _headers_file(r: _Reader, where: str, path: str) -> list[tuple[str, str]]:
    """`Name: value` lines; blank lines and `#` comments are skipped."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        r.problem(where, f"cannot read {path}: {exc.strerror or exc}")
        return []
    except UnicodeDecodeError:
        r.problem(where, f"{path} is not UTF-8 text")
        return []
    headers: list[tuple[str, str]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, colon, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not colon or not _HEADER_NAME_RE.fullmatch(name) or not _header_value_ok(value):
            r.problem(where, f"{path} line {number}: expected Name: value")
            continue
        headers.append((name, value))
    return headers


def _geo(r: _Reader, value: object) -> GeoConfig:
    d = GeoConfig()
    data = r.mapping(
        value,
        "geo",
        ("mmdb", "asn_mmdb", "ip_api", "negative_ttl", "retention_days", "cleanup_interval"),
    )
    if data is None:
        return d
    ip_api = IpApiConfig()
    api = r.mapping(data.get("ip_api"), "geo.ip_api", ("enabled", "url", "timeout"))
    if api is not None:
        ip_api = IpApiConfig(
            enabled=r.get(api, "geo.ip_api", "enabled", _bool, ip_api.enabled),
            url=r.get(api, "geo.ip_api", "url", _url, ip_api.url),
            timeout=r.get(api, "geo.ip_api", "timeout", parse_duration, ip_api.timeout),
        )
    return GeoConfig(
        mmdb=r.get(data, "geo", "mmdb", _optional_abs_path, d.mmdb),
        asn_mmdb=r.get(data, "geo", "asn_mmdb", _optional_abs_path, d.asn_mmdb),
        ip_api=ip_api,
        negative_ttl=r.get(data, "geo", "negative_ttl", parse_duration, d.negative_ttl),
        retention_days=r.get(data, "geo", "retention_days", _int_at_least(1), d.retention_days),
        cleanup_interval=r.get(
            data, "geo", "cleanup_interval", parse_duration, d.cleanup_interval
        ),
    )
