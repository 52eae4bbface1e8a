"""bangctl's import commands against the real bangd process and a real fail2ban-server."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_process import DaemonProcess, bangctl, bangctl_json, ready_daemon, wait_first_runs
from tests.fail2ban_server import PrivateFail2ban


@pytest.fixture
def daemon(fail2ban_jail: str, fail2ban_server: PrivateFail2ban) -> Iterator[DaemonProcess]:
    with ready_daemon("bangd-ctl-", fail2ban_server.socket, fail2ban_jail,
                      files={"a.txt": "203.0.113.1\n203.0.113.2\nbogus\n",
                             "b.txt": "203.0.113.2\n203.0.113.3\n"},
                      sources=[{"name": "a", "path": "a.txt"}, {"name": "b", "path": "b.txt"}],
                      skip_reserved=False) as proc:
        wait_first_runs(proc, {"a": "completed", "b": "completed"})
        yield proc


def banned(server: PrivateFail2ban) -> set[str]:
    code, result = server.command(["get", "bl", "banned"])
    assert code == 0 and isinstance(result, list)
    return {str(x) for x in result}


def imports(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["source"]: r for r in result["imports"]}


def test_the_timer_imports_every_source_at_start(
    daemon: DaemonProcess, fail2ban_server: PrivateFail2ban
) -> None:
    assert banned(fail2ban_server) == {"203.0.113.1", "203.0.113.2", "203.0.113.3"}
    rows = {s["name"]: s for s in bangctl_json(daemon.socket, "sources")["sources"]}
    assert (rows["a"]["entries"], rows["b"]["entries"]) == (2, 2)


def test_import_waits_and_prints_one_summary_per_source(daemon: DaemonProcess) -> None:
    done = bangctl(daemon.socket, "import", "a", "b")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["SOURCE", "STATE", "ADDED", "REMOVED", "INVALID", "SKIPPED",
                                "TOOK"]
    assert [line.split()[:2] for line in lines[1:3]] == [["a", "unchanged"], ["b", "unchanged"]]


def test_import_force_reapplies_and_reports_invalid_lines(daemon: DaemonProcess) -> None:
    result = imports(bangctl_json(daemon.socket, "import", "a", "--force"))
    assert result["a"]["state"] == "completed"
    assert result["a"]["invalid"] == 1
    assert result["a"]["invalid_lines"] == [[3, "bogus"]]


def test_dry_run_reports_and_changes_nothing(
    daemon: DaemonProcess, fail2ban_server: PrivateFail2ban
) -> None:
    Path(daemon.dir, "a.txt").write_text("203.0.113.9\n")
    runs_before = bangctl_json(daemon.socket, "runs")["runs"]
    done = bangctl(daemon.socket, "import", "a", "--dry-run")
    assert done.returncode == 0
    assert "would ban: 203.0.113.9" in done.stdout
    assert "would unban: 203.0.113.1 203.0.113.2" in done.stdout
    assert banned(fail2ban_server) == {"203.0.113.1", "203.0.113.2", "203.0.113.3"}
    assert bangctl_json(daemon.socket, "runs")["runs"] == runs_before


def test_import_all_imports_every_enabled_source(daemon: DaemonProcess) -> None:
    assert set(imports(bangctl_json(daemon.socket, "import", "--all"))) == {"a", "b"}


def test_import_of_an_unknown_source_is_an_error_naming_the_known_ones(
    daemon: DaemonProcess,
) -> None:
    done = bangctl(daemon.socket, "import", "nope")
    assert done.returncode == 1
    assert "no source 'nope'; configured: a, b" in done.stderr


def test_import_without_names_or_all_is_a_usage_error(daemon: DaemonProcess) -> None:
    assert bangctl(daemon.socket, "import").returncode == 2


def test_runs_lists_history_newest_first(daemon: DaemonProcess) -> None:
    bangctl_json(daemon.socket, "import", "a")
    runs = bangctl_json(daemon.socket, "runs", "a", "--limit", "5")["runs"]
    assert [r["state"] for r in runs] == ["unchanged", "completed"]


def test_reconcile_rebans_what_fail2ban_lost(
    daemon: DaemonProcess, fail2ban_server: PrivateFail2ban
) -> None:
    assert fail2ban_server.command(["unban", "--all"])[0] == 0
    result = bangctl_json(daemon.socket, "reconcile")
    kernel = [jail.pop("enforcement") for jail in result["jails"]]
    assert result["jails"] == [{"jail": "bl", "expected": 3, "present": 0, "missing": 3,
                                "rebanned": 3, "error": None}]
    assert kernel[0]["bangd_action"] is False  # a jail with no action: nothing to drop
    assert banned(fail2ban_server) == {"203.0.113.1", "203.0.113.2", "203.0.113.3"}


def test_removing_a_source_and_reloading_unbans_what_only_it_listed(
    daemon: DaemonProcess, fail2ban_server: PrivateFail2ban
) -> None:
    daemon.config["sources"] = [s for s in daemon.config["sources"] if s["name"] != "a"]
    daemon.write_config(daemon.config)
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while banned(fail2ban_server) != {"203.0.113.2", "203.0.113.3"}:
        assert time.monotonic() < deadline, daemon.log_text()[-2000:]
        time.sleep(0.05)
    assert [s["name"] for s in bangctl_json(daemon.socket, "sources")["sources"]] == ["b"]


def test_a_changed_list_is_applied_by_import(
    daemon: DaemonProcess, fail2ban_server: PrivateFail2ban
) -> None:
    Path(daemon.dir, "b.txt").write_text("203.0.113.3\n203.0.113.4\n")
    result = imports(bangctl_json(daemon.socket, "import", "b"))
    assert (result["b"]["added"], result["b"]["removed"]) == (1, 1)
    assert banned(fail2ban_server) == {"203.0.113.1", "203.0.113.2", "203.0.113.3",
                                       "203.0.113.4"}


def test_metrics_are_prometheus_text_with_per_source_figures(daemon: DaemonProcess) -> None:
    done = bangctl(daemon.socket, "metrics")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "# TYPE bangd_source_entries gauge" in lines
    assert 'bangd_source_entries{jail="bl",source="a"} 2' in lines
    assert 'bangd_import_runs_total{source="a",state="completed"} 1' in lines
    assert "bangd_fail2ban_up 1" in lines
    assert any(line.startswith('bangd_source_last_success_timestamp_seconds{jail="bl",'
                               'source="b"} ') for line in lines)


def test_systemd_status_line_names_the_last_import(daemon: DaemonProcess) -> None:
    line = daemon.wait_for("STATUS=fail2ban up; 2 sources; last import ")
    assert " completed +2 -0 at " in line


def test_tables_fit_an_80_column_terminal(daemon: DaemonProcess) -> None:
    for command in (["status"], ["sources"], ["runs"], ["import", "a", "b"], ["reconcile"]):
        out = bangctl(daemon.socket, *command).stdout
        assert max(len(line) for line in out.splitlines()) <= 80, (command, out)


def test_status_shows_fail2ban_s_own_counts_for_the_jail(daemon: DaemonProcess) -> None:
    status = bangctl_json(daemon.socket, "status")
    (jail,) = status["jails"]
    assert (jail["jail"], jail["currently_banned"], jail["error"]) == ("bl", 3, None)
    assert "jail      bl: 3 banned now" in bangctl(daemon.socket, "status").stdout
    assert 'bangd_fail2ban_jail_banned{jail="bl"} 3' in bangctl(daemon.socket, "metrics").stdout


def test_read_only_commands_log_at_debug_and_changes_at_info(daemon: DaemonProcess) -> None:
    bangctl(daemon.socket, "status")
    bangctl(daemon.socket, "reconcile")
    log = daemon.log_text()
    assert " DEBUG   bangd.control.server: control command=status " in log
    assert " INFO    bangd.control.server: control command=reconcile " in log


def test_bangctl_reconcile_also_withdraws_a_removed_source(
    daemon: DaemonProcess, fail2ban_server: PrivateFail2ban
) -> None:
    sources = daemon.config["sources"]
    daemon.config["sources"] = [s for s in sources if s["name"] != "a"]
    daemon.write_config(daemon.config)
    assert bangctl(daemon.socket, "reload").returncode == 0
    bangctl_json(daemon.socket, "reconcile")
    assert banned(fail2ban_server) == {"203.0.113.2", "203.0.113.3"}
