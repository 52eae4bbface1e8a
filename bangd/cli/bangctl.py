"""`bangctl`: the operator's client for the control socket.

Exit codes: 0 ok; 1 the daemon answered with an error, or an import failed; 2
usage error; 3 the daemon cannot be reached or did not answer in time. `--json` prints the
daemon's result object unchanged.

The global options (`-s`, `--json`, `--timeout`) are accepted before or after the command,
as people type them; given twice, the later one wins.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

from .. import __version__
from ..config import DEFAULT_CONTROL_SOCKET as DEFAULT_SOCKET
from ..config import parse_duration
from ..control.client import ControlClient, DaemonUnreachable
from ..errors import ControlError
from .importwait import call_import, stderr_progress
from .tables import ago, duration, safe, safe_tree, table, when

DEFAULT_TIMEOUT = 30.0
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"  # Debian's prometheus-node-exporter

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

Request = tuple[str, dict[str, Any]]
Formatter = Callable[[dict[str, Any]], str]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


EXIT_CODES = (
    "exit codes:\n"
    "  0  ok\n"
    "  1  bangd answered with an error (unknown source, refused reload, ...);\n"
    "     import: also when any source's import failed\n"
    "  2  usage error\n"
    "  3  bangd cannot be reached, or did not answer within --timeout seconds;\n"
    "     import: bangd showed no progress for --timeout seconds\n"
)


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds above 0: {text!r}")
    return value


def _global_options() -> _Parser:
    """The options every command takes too. SUPPRESS as default: a subcommand that was not
    given one leaves the value parsed before the command in place."""
    parent = _Parser(add_help=False)
    parent.add_argument("-s", "--socket", metavar="PATH", default=argparse.SUPPRESS,
                        help=f"bangd's control socket (default: $BANGCTL_SOCKET, else "
                        f"{DEFAULT_SOCKET})")
    parent.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the raw result as JSON")
    parent.add_argument("--timeout", metavar="SECONDS", type=_timeout,
                        default=argparse.SUPPRESS,
                        help=f"give up when bangd has not answered after this long (default "
                        f"{DEFAULT_TIMEOUT:g}); import waits longer while bangd shows it "
                        "running")
    return parent


def build_parser() -> argparse.ArgumentParser:
    common = [_global_options()]
    parser = _Parser(
        prog="bangctl",
        description="Control a running bangd.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=common,
        epilog=(
            "examples:\n"
            "  bangctl status\n"
            "  bangctl status --json | jq .fail2ban\n"
            "  bangctl -s /tmp/bangd.sock reload\n\n"
            "global options (-s, --json, --timeout) go before or after the command.\n\n"
            + EXIT_CODES
            + f"\nsocket: -s, else $BANGCTL_SOCKET, else {DEFAULT_SOCKET}"
        ),
    )
    parser.add_argument("--version", action="version", version=f"bangctl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    raw = argparse.RawDescriptionHelpFormatter
    sub.add_parser("status", parents=common, help="daemon, fail2ban and timer overview",
                   description="Show version, uptime, database, fail2ban, a line per "
                   "source and the timers.", formatter_class=raw,
                   epilog="examples:\n  bangctl status\n  bangctl --json status | jq .fail2ban")
    sub.add_parser("version", parents=common, help="the daemon's version", formatter_class=raw,
                   epilog="example:\n  bangctl version")
    sub.add_parser(
        "sources", parents=common, help="one row per source",
        description="Name, jail, interval, entries applied, last run and next run per source.",
        formatter_class=raw,
        epilog="examples:\n  bangctl sources\n"
        "  bangctl --json sources | jq '.sources[] | {name, entries}'",
    )
    imp = sub.add_parser(
        "import", parents=common,
        help="import sources now and wait for the result",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fetch and apply sources now; prints one summary per source.",
        epilog="examples:\n  bangctl import spamhaus-drop\n  bangctl import --all --dry-run\n"
        "  bangctl import --force firehol-level1\n\n"
        "exit codes: 0 every import completed or was unchanged, 1 any import failed\n"
        "(or bangd answered with an error), 2 usage error, 3 bangd cannot be reached.\n"
        "Waits as long as bangd shows the import running; on a terminal, a progress line\n"
        "is shown on stderr meanwhile.",
    )
    imp.add_argument("names", nargs="*", metavar="NAME", help="source names")
    imp.add_argument("--all", action="store_true", help="every enabled source")
    imp.add_argument("--force", action="store_true",
                     help="re-apply even when the list is unchanged; apply a list that is "
                     "empty or shrank by more than max_drop")
    imp.add_argument("--dry-run", action="store_true",
                     help="report what would be banned/unbanned; change nothing")
    runs = sub.add_parser("runs", parents=common, help="import history, newest first",
                          epilog="example:\n  bangctl runs spamhaus-drop --limit 5",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    runs.add_argument("name", nargs="?", metavar="NAME", help="only this source")
    runs.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
    rec = sub.add_parser(
        "reconcile", parents=common, help="re-ban what fail2ban lost",
        description="Compare each jail with what bangd has applied and re-ban what is missing.",
        formatter_class=raw,
        epilog="examples:\n  bangctl reconcile\n  bangctl reconcile --jail blocklist",
    )
    rec.add_argument("--jail", metavar="J", help="only this jail")
    ver = sub.add_parser(
        "verify", parents=common, help="does the kernel drop every entry bangd applied?",
        description="Per jail: entries bangd has applied, entries the kernel enforces "
        "(asked of the jail's bangd-nftables action), and the missing ones (up to 20). "
        "A jail whose action is not bangd-nftables cannot be checked.",
        formatter_class=raw,
        epilog="examples:\n  bangctl verify\n  bangctl verify --jail blocklist\n\n"
        "exit codes: 0 every entry is enforced, 1 something is missing or cannot be "
        "checked,\n2 usage error, 3 bangd cannot be reached",
    )
    ver.add_argument("--jail", metavar="J", help="only this jail")
    look = sub.add_parser(
        "lookup", parents=common, help="geo data, listing sources and jails for addresses",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Show what bangd knows about addresses: country and ASN (and where "
        "that came from, and how old it is), which sources list them, and in which jails "
        "fail2ban has them banned.",
        epilog="example:\n  bangctl lookup 203.0.113.7 2001:db8::1",
    )
    look.add_argument("ips", nargs="+", metavar="IP")
    cache = sub.add_parser("cache", parents=common, help="geo cache: stats, cleanup",
                           description="The geolocation cache.")
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="ACTION",
                                     parser_class=_Parser)
    cache_sub.required = True
    cache_sub.add_parser("stats", parents=common, help="rows, negative rows, oldest last_seen",
                         formatter_class=raw, epilog="example:\n  bangctl cache stats")
    clean = cache_sub.add_parser(
        "cleanup", parents=common, help="run retention now",
        description="Delete cache rows not seen for geo.retention_days, now.",
        formatter_class=raw,
        epilog="examples:\n  bangctl cache cleanup --dry-run\n  bangctl cache cleanup",
    )
    clean.add_argument("--dry-run", action="store_true", help="only count what would go")
    sub.add_parser(
        "metrics", parents=common, help="Prometheus text exposition",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print bangd's counters and gauges in Prometheus text format.",
        epilog="example, for node_exporter's textfile collector (Debian's\n"
        f"prometheus-node-exporter reads {TEXTFILE_DIR}):\n"
        f"  bangctl metrics > {TEXTFILE_DIR}/bangd.prom.tmp &&\n"
        f"    mv {TEXTFILE_DIR}/bangd.prom.tmp {TEXTFILE_DIR}/bangd.prom\n"
        "The package's bangd-metrics.timer does this every minute:\n"
        "  systemctl enable --now bangd-metrics.timer",
    )
    sub.add_parser(
        "reload", parents=common,
        help="reload the config (like SIGHUP)",
        description="Reload the config file. An invalid new config is refused and the "
        "running one kept; the problems are printed. A source removed from the config "
        "has its bans withdrawn (unless another source lists them).",
        formatter_class=raw,
        epilog="examples:\n  bangd --check-config -c /etc/bangd/config.yaml && bangctl reload",
    )
    _operator_commands(sub, common)
    return parser


def _whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}: {text!r}")
        return value

    return parse


_limit = _whole_number(1, 100_000)
_top = _whole_number(1, 1000)


def _operator_commands(sub: Any, common: list[_Parser]) -> None:
    """The operator's views and exemptions (issue 12), kept together."""
    raw = argparse.RawDescriptionHelpFormatter
    bans = sub.add_parser(
        "bans", parents=common, help="entries bangd applied, per jail and source",
        description="List the entries bangd has applied: jail, the sources listing each, "
        "since when; with counts per jail and per source.", formatter_class=raw,
        epilog="examples:\n  bangctl bans\n  bangctl bans --jail blocklist --limit 20\n"
        "  bangctl --json bans --source spamhaus-drop | jq .by_jail",
    )
    bans.add_argument("--jail", metavar="J", help="only this jail")
    bans.add_argument("--source", metavar="S", help="only entries this source lists")
    bans.add_argument("--limit", type=_limit, default=100,
                      help="at most this many entries (default 100, at most 100000)")
    allow = sub.add_parser(
        "allow", parents=common, help="exempt an address or network from bangd's bans",
        description="Exempt an address or network at once: what bangd banned that it "
        "covers is unbanned now, and no import or reconcile bans it while the exemption "
        "stands. Kept across restarts; the config's allowlist is unaffected.",
        formatter_class=raw,
        epilog="examples:\n  bangctl allow 203.0.113.7 --for 2h --comment 'ticket 4711'\n"
        "  bangctl allow 2001:db8:1::/48\n  bangctl allow --list\n"
        "  bangctl allow --remove 203.0.113.7",
    )
    allow.add_argument("network", nargs="?", metavar="ADDR|NET", help="address or network")
    allow.add_argument("--for", dest="duration", metavar="DURATION", type=_duration,
                       help="lift the exemption after this long (90s, 5m, 6h, 1d); "
                       "default: until removed")
    allow.add_argument("--comment", metavar="TEXT", help="why (shown by --list)")
    allow.add_argument("--list", action="store_true", help="list the exemptions standing")
    allow.add_argument("--remove", metavar="ADDR|NET",
                       help="remove this exemption; the lists' entries come back")
    stats = sub.add_parser(
        "stats", parents=common, help="banned addresses by country or AS",
        description="Group what bangd bans by country or AS from the geo cache; a network "
        "counts as many addresses as it holds.", formatter_class=raw,
        epilog="examples:\n  bangctl stats\n  bangctl stats --by asn --top 20",
    )
    stats.add_argument("--by", choices=("country", "asn"), default="country",
                       help="group by country (default) or AS")
    stats.add_argument("--top", type=_top, default=10,
                       help="this many groups, the rest as other (default 10)")


def _duration(text: str) -> int:
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration such as 90s, 5m, 6h, 1d: {text!r}"
                                         ) from None
    if not 1 <= seconds <= 10 * 366 * 86400:
        raise argparse.ArgumentTypeError(f"must be from 1s to 10 years: {text!r}")
    return int(seconds)


def _operator_request(args: argparse.Namespace) -> Request | None:
    command = str(args.command)
    if command == "stats":
        return command, {"by": args.by, "top": args.top}
    if command == "allow":
        chosen = [bool(args.network), args.list, args.remove is not None]
        if sum(chosen) != 1:
            raise UsageError("allow: give one of ADDR|NET, --list, --remove ADDR|NET")
        if not args.network and (args.duration or args.comment):
            raise UsageError("allow: --for and --comment go with ADDR|NET")
        if args.list:
            return "allow_list", {}
        if args.remove is not None:
            return "allow_remove", {"network": args.remove}
        params: dict[str, Any] = {"network": args.network, "seconds": args.duration or 0}
        if args.comment:
            params["comment"] = args.comment
        return "allow_add", params
    if command == "bans":
        filters = {k: v for k in ("jail", "source") if (v := getattr(args, k))}
        return command, {"limit": args.limit, **filters}
    return None


def request_for(args: argparse.Namespace) -> Request:
    command = str(args.command)
    operator = _operator_request(args)
    if operator is not None:
        return operator
    if command == "import":
        if bool(args.names) == bool(args.all):
            raise UsageError("import: name one or more sources, or --all")
        return command, {"sources": args.names, "all": args.all, "force": args.force,
                         "dry_run": args.dry_run}
    if command == "runs":
        params: dict[str, Any] = {"limit": args.limit}
        if args.name:
            params["source"] = args.name
        return command, params
    if command in ("reconcile", "verify"):
        return command, {"jail": args.jail} if args.jail else {}
    if command == "lookup":
        return command, {"ips": args.ips}
    if command == "cache":
        if args.cache_command == "stats":
            return "cache_stats", {}
        return "cache_cleanup", {"dry_run": args.dry_run}
    return command, {}


class UsageError(Exception):
    pass


def format_status(result: dict[str, Any]) -> str:
    now = time.time()
    f2b = result.get("fail2ban", {})
    reach = f2b.get("reachable")
    if reach:
        f2b_text = f"up, version {f2b.get('version')} ({f2b.get('socket')})"
    elif reach is None:
        f2b_text = f"not checked yet ({f2b.get('socket')})"
    else:
        f2b_text = f"DOWN since {ago(f2b.get('since'), now)}: {f2b.get('error')}"
    db = result.get("database", {})
    lines = [
        f"bangd {result.get('version')}  pid {result.get('pid')}  "
        f"up {duration(result.get('uptime'))}",
        f"config    {result.get('config')}",
        f"database  {db.get('path')} (schema {db.get('schema_version')})",
        f"fail2ban  {f2b_text}",
    ]
    for jail in result.get("jails", []):
        if jail.get("error"):
            lines.append(f"jail      {jail['jail']}: {jail['error']}")
        else:
            lines.append(f"jail      {jail['jail']}: {jail['currently_banned']} banned now, "
                         f"{jail['total_banned']} since fail2ban started")
            kernel = _jail_enforcement(jail.get("enforcement"))
            if kernel:
                lines.append(textwrap.fill(kernel, 80, initial_indent=" " * 10,
                                           subsequent_indent=" " * 12))
    sources = result.get("sources", [])
    lines.append(f"sources   {len(sources)}")
    for src in sources:
        lines.append(
            f"  {src['name']}: {src.get('entries', 0)} entries in {src['jail']}, "
            f"last {src.get('last_state') or 'never run'} {ago(src.get('last_run'), now)}"
            + ("" if src.get("enabled", True) else " (disabled)")
            + (f": {src['last_error']}" if src.get("last_state") == "failed"
               and src.get("last_error") else "")
        )
    lines.extend(f"  {note}" for note in _invalid_notes(sources))
    exemptions = result.get("exemptions") or []
    if exemptions:
        lines.append(f"exempt    {len(exemptions)}: "
                     + ", ".join(_exemption_line(e, now) for e in exemptions[:5])
                     + (" ..." if len(exemptions) > 5 else ""))
    timers = result.get("timers", [])
    if timers:
        lines.append("")
        lines.append(table(
            ["TIMER", "LAST RUN", "STATE", "NEXT RUN"],
            [
                [t["name"], ago(t.get("last_finished"), now),
                 "running" if t.get("running") else t.get("last_state") or "-",
                 when(t.get("next_run"), now)]
                for t in timers
            ],
        ))
    return "\n".join(lines)


def format_reload(result: dict[str, Any]) -> str:
    text = f"reloaded {result.get('config')}"
    if result.get("restart_needed"):
        text += "\nrestart needed for: " + ", ".join(result["restart_needed"])
    return text


def format_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, sort_keys=True)


def format_sources(result: dict[str, Any]) -> str:
    now = time.time()
    rows = [
        [s["name"], s["jail"], duration(s["interval"]), s.get("entries", 0),
         ago(s.get("last_run"), now),
         (s.get("last_state") or "-") if s.get("enabled", True) else "disabled",
         when(s.get("next_run"), now) if s.get("enabled", True) else "-"]
        for s in result.get("sources", [])
    ]
    text = table(["NAME", "JAIL", "EVERY", "ENTRIES", "LAST RUN", "STATE", "NEXT"], rows)
    errors = [f"{s['name']}: {s['last_error']}" for s in result.get("sources", [])
              if s.get("last_state") == "failed" and s.get("last_error")]
    return "\n".join([text, *errors, *_invalid_notes(result.get("sources", []))])


def _invalid_notes(sources: list[dict[str, Any]]) -> list[str]:
    """A line per source whose latest parse met lines it could not read: they are never
    banned, and a list in another format reads as nothing but invalid lines."""
    return [f"{s['name']}: {s['invalid']} invalid lines at the latest parse "
            f"(bangctl import --dry-run {s['name']} shows them)"
            for s in sources if s.get("invalid")]


def format_import(result: dict[str, Any]) -> str:
    rows = []
    notes = []
    for r in result.get("imports", []):
        state = r["state"] + (" (dry run)" if r.get("dry_run") else "")
        rows.append([r["source"], state, r["added"], r["removed"], r["invalid"], r["skipped"],
                     f"{r['took']:.2f}s"])
        if r.get("error"):
            notes.append(f"{r['source']}: {r['error']}")
        if r.get("joined"):
            notes.append(f"{r['source']}: a run was already under way; this is its result")
        for number, text in r.get("invalid_lines", []):
            notes.append(f"{r['source']}: invalid line {number}: {text}")
        if r.get("dry_run"):
            for verb, key in (("would ban", "would_add"), ("would unban", "would_remove")):
                if r.get(key):
                    more = r["added" if key == "would_add" else "removed"] - len(r[key])
                    notes.append(f"{r['source']}: {verb}: {' '.join(r[key])}"
                                 + (f" (+{more} more)" if more > 0 else ""))
    text = table(["SOURCE", "STATE", "ADDED", "REMOVED", "INVALID", "SKIPPED", "TOOK"], rows)
    return "\n".join([text, *notes])


def format_runs(result: dict[str, Any]) -> str:
    """Errors go under the table, by run id: the table stays within 80 columns."""
    runs = result.get("runs", [])
    rows = [
        [r["id"], r["source"], time.strftime("%m-%d %H:%M", time.localtime(r["started"])),
         r["state"], r.get("trigger") or "-", r["added"], r["removed"], r["invalid"],
         r["skipped"], duration((r["finished"] or r["started"]) - r["started"])]
        for r in runs
    ]
    text = table(["ID", "SOURCE", "STARTED", "STATE", "BY", "ADDED", "REMOVED", "INVALID",
                  "SKIP", "TOOK"], rows)
    return "\n".join([text, *(f"#{r['id']} {r['source']}: {r['error']}"
                              for r in runs if r.get("error"))])


def format_reconcile(result: dict[str, Any]) -> str:
    rows = [[j["jail"], j["expected"], j["present"], j["missing"], j["rebanned"],
             j.get("error") or ""] for j in result.get("jails", [])]
    if not rows:
        return "nothing to reconcile: bangd has applied no entries yet"
    return table(["JAIL", "EXPECTED", "PRESENT", "MISSING", "REBANNED", "ERROR"], rows)


def format_verify(result: dict[str, Any]) -> str:
    jails = result.get("jails", [])
    if not jails:
        return "nothing to verify: bangd has applied no entries yet"
    rows = []
    notes = []
    for j in jails:
        enforced = "-" if j.get("enforced") is None else j["enforced"]
        missing = "-" if j.get("missing_count") is None else j["missing_count"]
        state = "ok" if j.get("ok") else ("CANNOT CHECK" if j.get("enforced") is None
                                          else "MISSING")
        rows.append([j["jail"], j.get("applied", 0), enforced, missing, state])
        if j.get("error"):
            notes.append(f"{j['jail']}: {j['error']}")
        if j.get("missing"):
            more = (j.get("missing_count") or 0) - len(j["missing"])
            notes.append(f"{j['jail']}: missing " + ", ".join(j["missing"])
                         + (f" and {more} more" if more > 0 else ""))
    text = table(["JAIL", "APPLIED", "ENFORCED", "MISSING", "STATE"], rows)
    wrapped = [textwrap.fill(note, 80, subsequent_indent="  ") for note in notes]
    return text + ("\n\n" + "\n".join(wrapped) if wrapped else "")


def _jail_enforcement(kernel: dict[str, Any] | None) -> str:
    """One status phrase: does the kernel drop this jail's bans?"""
    if not kernel:
        return ""
    if kernel.get("bangd_action") is False:
        return f"NOT ENFORCED BY BANGD: {kernel.get('error')}"
    if kernel.get("enforced") is None:
        return "kernel not checked yet (bangctl verify)"
    if kernel.get("missing_count"):
        return (f"kernel drops {kernel['enforced']} of {kernel['applied']}, "
                f"{kernel['missing_count']} MISSING (bangctl verify; bangctl reconcile)")
    return f"kernel drops all {kernel['enforced']}"


def format_lookup(result: dict[str, Any]) -> str:
    blocks = []
    for r in result.get("results", []):
        if not r.get("cached"):
            geo = r.get("geo_note") or "not resolved yet"
        elif r.get("negative"):
            geo = f"nothing known ({r['origin']}, {duration(r['age'])} old)"
        else:
            asn = f"AS{r['asn']} {r.get('as_org') or ''}".strip() if r.get("asn") else "-"
            geo = (f"{r.get('country_code') or '-'} {r.get('country_name') or ''}".rstrip()
                   + f", {asn} ({r['origin']}, {duration(r['age'])} old)")
        listed = ", ".join(
            f"{m['source']} ({m['entry']} in {m['jail']})" for m in r.get("sources", [])
        ) or "no source"
        if r.get("banned_in") is None:
            banned = f"unknown: {r.get('banned_in_error')}"
        else:
            kernel = r.get("kernel") or {}
            banned = ", ".join(
                f"{jail} (kernel: {kernel[jail]})" if jail in kernel else jail
                for jail in r["banned_in"]
            ) or "no jail"
        block = (f"{r['ip']}\n  geo        {geo}\n  listed by  {listed}\n"
                 f"  banned in  {banned}")
        for jail, error in sorted((r.get("jail_errors") or {}).items()):
            block += f"\n  jail {jail}: cannot tell: {error}"
        for e in r.get("exemptions") or []:
            block += f"\n  exempted   {_exemption_line(e, time.time())}"
        for rule in r.get("skipped") or []:
            block += f"\n  skipped    {rule['reason']} {rule['rule']}"
        blocks.append(block)
    return "\n".join(blocks)


def format_cache_stats(result: dict[str, Any]) -> str:
    now = time.time()
    origins = ", ".join(f"{k} {v}" for k, v in sorted(result.get("by_origin", {}).items()))
    lines = [
        f"rows             {result.get('rows')}" + (f" ({origins})" if origins else ""),
        f"negative rows    {result.get('negative')}",
        f"oldest last_seen {ago(result.get('oldest_last_seen'), now)}",
        f"newest last_seen {ago(result.get('newest_last_seen'), now)}",
        f"retention        {result.get('retention_days')} days",
        f"resolvers        {', '.join(result.get('resolvers') or []) or 'none configured'}",
    ]
    if result.get("error"):
        lines.append(f"error            {result['error']}")
    return "\n".join(lines)


def format_cache_cleanup(result: dict[str, Any]) -> str:
    verb = "would delete" if result.get("dry_run") else "deleted"
    cutoff = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(result.get("cutoff", 0)))
    return f"{verb} {result.get('deleted')} rows not seen since {cutoff}"


def format_metrics(result: dict[str, Any]) -> str:
    """The exposition as sent, line by line: valid exposition has nothing `safe` changes."""
    return "\n".join(safe(line) for line in str(result.get("text", "")).rstrip("\n").split("\n"))


def format_bans(result: dict[str, Any]) -> str:
    now = time.time()
    rows = [[e["jail"], e["entry"], ",".join(e["sources"]), ago(e.get("since"), now)]
            for e in result.get("entries", [])]
    lines = [table(["JAIL", "ENTRY", "SOURCES", "SINCE"], rows) if rows
             else "no entries applied"]
    if result.get("truncated"):
        lines.append(f"(first {len(rows)} of {result.get('total')}; --limit shows more)")
    lines.append("per jail:   " + (", ".join(
        f"{k} {v}" for k, v in result.get("by_jail", {}).items()) or "-"))
    lines.append("per source: " + (", ".join(
        f"{k} {v}" for k, v in result.get("by_source", {}).items()) or "-"))
    return "\n".join(lines)


def _exemption_line(e: dict[str, Any], now: float) -> str:
    expires = f"expires {when(e['expires'], now)}" if e.get("expires") else "until removed"
    comment = f"  ({e['comment']})" if e.get("comment") else ""
    return f"{e['network']}  {expires}{comment}"


def format_allow_add(result: dict[str, Any]) -> str:
    line = _exemption_line(result.get("exemption", {}), time.time())
    return f"exempted {line}\nunbanned now: {result.get('lifted', 0)} entries"


def format_allow_list(result: dict[str, Any]) -> str:
    now = time.time()
    rows = [[e["network"], when(e["expires"], now) if e.get("expires") else "never",
             ago(e.get("created"), now), e.get("comment") or ""]
            for e in result.get("exemptions", [])]
    return table(["NETWORK", "EXPIRES", "ADDED", "COMMENT"], rows) if rows \
        else "no exemptions"


def format_allow_remove(result: dict[str, Any]) -> str:
    return (f"removed the exemption for {result.get('exemption', {}).get('network')}; "
            "the lists are re-applied now")


BAR_WIDTH = 30


def format_stats(result: dict[str, Any]) -> str:
    groups = result.get("groups", [])
    if not groups:
        return "nothing banned yet"
    most = max(g["addresses"] for g in groups) or 1
    rows = [[g["key"], (g.get("label") or "")[:24], f"{g['addresses']:,}",
             f"{100 * g['share']:.1f}%", "#" * max(1, round(BAR_WIDTH * g["addresses"] / most))]
            for g in groups]
    header = "COUNTRY" if result.get("by") == "country" else "AS"
    return "\n".join([table([header, "NAME", "ADDRESSES", "SHARE", ""], rows),
                      f"total {result.get('total', 0):,} addresses"])


OPERATOR_FORMATTERS: dict[str, Formatter] = {
    "stats": format_stats,
    "bans": format_bans,
    "allow_add": format_allow_add,
    "allow_list": format_allow_list,
    "allow_remove": format_allow_remove,
}

FORMATTERS: dict[str, Formatter] = {
    **OPERATOR_FORMATTERS,
    "metrics": format_metrics,
    "lookup": format_lookup,
    "cache_stats": format_cache_stats,
    "cache_cleanup": format_cache_cleanup,
    "sources": format_sources,
    "import": format_import,
    "runs": format_runs,
    "reconcile": format_reconcile,
    "verify": format_verify,
    "status": format_status,
    "version": lambda r: f"bangd {r.get('version')}",
    "reload": format_reload,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = getattr(args, "socket", None) or os.environ.get("BANGCTL_SOCKET") or DEFAULT_SOCKET
    as_json: bool = getattr(args, "json", False)
    timeout: float = getattr(args, "timeout", DEFAULT_TIMEOUT)
    try:
        command, params = request_for(args)
    except UsageError as exc:
        print(f"bangctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if command == "import":
            result = call_import(path, params, timeout=timeout,
                                 progress=stderr_progress(enabled=not as_json))
        else:
            with ControlClient(path, timeout=timeout) as client:
                result = client.call(command, params)
    except DaemonUnreachable as exc:
        print(f"bangctl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ControlError as exc:
        print(f"bangctl: {args.command}: {safe(exc.code)}: {safe(exc.message)}",
              file=sys.stderr)
        return EXIT_ERROR
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=True))
    elif command == "metrics":
        print(format_metrics(result))
    else:
        print(FORMATTERS.get(command, format_json)(safe_tree(result)))
    return exit_code(command, result)


def exit_code(command: str, result: dict[str, Any]) -> int:
    """EXIT_ERROR for an answer that reports a failure inside an ok reply: an import where
    some source failed, so scripts and timers notice without parsing the table."""
    if command == "import":
        failed = [r for r in result.get("imports", []) if r.get("state") == "failed"]
        if failed:
            names = ", ".join(safe(r.get("source")) for r in failed)
            print(f"bangctl: import failed for {names}", file=sys.stderr)
            return EXIT_ERROR
    if command == "verify" and not result.get("ok", False):
        return EXIT_ERROR  # a jail lacks entries in the kernel, or cannot be checked
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
