"""bangctl's tables for issue 12's daemon results: runs' trigger and error, a failing
source's error in status, an import that joined a running one."""

from __future__ import annotations

from typing import Any

import pytest

from bangd.cli import bangctl

RUN: dict[str, Any] = {"id": 7, "source": "drop", "started": 1_700_000_000.0,
                       "finished": 1_700_000_002.0, "state": "failed", "trigger": "manual",
                       "added": 0, "removed": 0, "invalid": 0, "skipped": 0,
                       "error": "fetch failed: HTTP 503"}


def test_runs_show_the_trigger_column() -> None:
    header, row = bangctl.format_runs({"runs": [RUN]}).splitlines()[:2]
    assert "BY" in header.split() and "manual" in row.split()


def test_runs_show_each_error_under_the_table_by_run_id() -> None:
    assert bangctl.format_runs({"runs": [RUN]}).splitlines()[-1] == (
        "#7 drop: fetch failed: HTTP 503"
    )


def test_status_shows_why_a_source_failed() -> None:
    text = bangctl.format_status({"sources": [
        {"name": "drop", "jail": "bl", "entries": 0, "last_state": "failed",
         "last_run": None, "last_error": "fetch failed: HTTP 503"}]})
    assert "drop: 0 entries in bl, last failed never: fetch failed: HTTP 503" in text \
        or text.rstrip().endswith(": fetch failed: HTTP 503")


def test_an_import_that_joined_a_running_one_says_so() -> None:
    text = bangctl.format_import({"imports": [
        {"source": "drop", "state": "completed", "added": 3, "removed": 0, "invalid": 0,
         "skipped": 0, "took": 1.0, "joined": True}]})
    assert "drop: a run was already under way; this is its result" in text


BANS: dict[str, Any] = {
    "entries": [{"jail": "bl", "entry": "203.0.113.0/24", "sources": ["a", "b"],
                 "since": None}],
    "total": 5, "truncated": True, "limit": 1, "by_jail": {"bl": 5}, "by_source": {"a": 5},
}


def test_bans_table_names_jail_entry_and_sources() -> None:
    assert bangctl.format_bans(BANS).splitlines()[1].split()[:3] == ["bl", "203.0.113.0/24",
                                                                       "a,b"]


def test_bans_table_says_when_the_limit_cut_it_short() -> None:
    assert "(first 1 of 5; --limit shows more)" in bangctl.format_bans(BANS)


def test_bans_request_carries_only_the_filters_given() -> None:
    args = bangctl.build_parser().parse_args(["bans", "--jail", "bl"])
    assert bangctl.request_for(args) == ("bans", {"limit": 100, "jail": "bl"})


def request(*argv: str) -> tuple[str, dict[str, Any]]:
    return bangctl.request_for(bangctl.build_parser().parse_args(list(argv)))


def test_allow_sends_the_duration_in_seconds_and_the_comment() -> None:
    assert request("allow", "203.0.113.7", "--for", "2h", "--comment", "vpn") == (
        "allow_add", {"network": "203.0.113.7", "seconds": 7200, "comment": "vpn"})


def test_allow_list_and_remove_are_their_own_commands() -> None:
    assert request("allow", "--list") == ("allow_list", {})
    assert request("allow", "--remove", "192.0.2.0/24") == (
        "allow_remove", {"network": "192.0.2.0/24"})


@pytest.mark.parametrize("argv", [["allow"], ["allow", "192.0.2.1", "--list"],
                                  ["allow", "--list", "--for", "1h"]],
                         ids=["nothing", "two", "for-without-address"])
def test_allow_refuses_an_ambiguous_request(argv: list[str]) -> None:
    with pytest.raises(bangctl.UsageError):
        request(*argv)


def test_allow_refuses_a_duration_it_cannot_read(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        request("allow", "192.0.2.1", "--for", "soon")
    assert info.value.code == bangctl.EXIT_USAGE
    assert "not a duration" in capsys.readouterr().err


def test_lookup_shows_the_exemption_covering_an_address() -> None:
    text = bangctl.format_lookup({"results": [
        {"ip": "192.0.2.1", "cached": False, "sources": [], "banned_in": [],
         "exemptions": [{"network": "192.0.2.0/24", "comment": "lab", "expires": None}]}]})
    assert "exempted   192.0.2.0/24  until removed  (lab)" in text


LOOKUP: dict[str, Any] = {"results": [
    {"ip": "10.1.2.3", "cached": False, "geo_note": "no resolver configured", "sources": [],
     "banned_in": ["bl"], "jail_errors": {"gone": "fail2ban has no jail 'gone'"},
     "skipped": [{"reason": "reserved", "rule": "10.0.0.0/8"}], "exemptions": []}]}


def test_lookup_says_why_an_address_is_skipped() -> None:
    assert "  skipped    reserved 10.0.0.0/8" in bangctl.format_lookup(LOOKUP)


def test_lookup_says_when_no_resolver_is_configured() -> None:
    assert "  geo        no resolver configured" in bangctl.format_lookup(LOOKUP)


def test_lookup_keeps_a_broken_jail_to_its_own_row() -> None:
    text = bangctl.format_lookup(LOOKUP)
    assert "  banned in  bl" in text and "  jail gone: cannot tell: fail2ban has no" in text


def test_stats_bars_are_proportional_to_the_largest_group() -> None:
    text = bangctl.format_stats({"by": "country", "total": 300, "groups": [
        {"key": "US", "label": "United States", "addresses": 200, "share": 2 / 3},
        {"key": "DE", "label": "Germany", "addresses": 100, "share": 1 / 3}]})
    us, de = text.splitlines()[1:3]
    assert us.endswith("#" * bangctl.BAR_WIDTH) and de.endswith(" " + "#" * 15)
