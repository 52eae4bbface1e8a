"""bangctl's tables for issue 12's daemon results: runs' trigger and error, a failing
source's error in status, an import that joined a running one."""

from __future__ import annotations

from typing import Any

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
