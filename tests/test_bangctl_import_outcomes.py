"""bangctl import never reports a failed import as success, and never echoes list escapes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, bangctl, bangctl_json, ready_daemon
from tests.fail2ban_server import PrivateFail2ban

FEEDS = Path(__file__).parent / "data" / "feeds"


@pytest.fixture
def daemon(fail2ban_jail: str, fail2ban_server: PrivateFail2ban) -> Iterator[DaemonProcess]:
    with ready_daemon("bangd-out-", fail2ban_server.socket, fail2ban_jail,
                      files={"good.txt": "11.0.0.1\n\x1b[2Jbogus\x1b]0;title\x07\n",
                             "dshield.txt": (FEEDS / "block.txt").read_bytes()},
                      sources=[{"name": "good", "path": "good.txt"},
                               {"name": "wrong", "path": "dshield.txt"}]) as proc:
        yield proc


def test_import_exits_1_when_any_import_failed(daemon: DaemonProcess) -> None:
    result = bangctl(daemon.socket, "import", "good", "wrong")
    assert result.returncode == 1, result.stdout
    assert "wrong: source wrong: no line looked like an address" in result.stdout
    assert "(it looks like format: dshield)" in result.stdout


def test_import_exits_0_when_every_import_succeeded(daemon: DaemonProcess) -> None:
    assert bangctl(daemon.socket, "import", "good").returncode == 0


def test_escape_sequences_from_a_list_never_reach_the_terminal_or_the_log(
    daemon: DaemonProcess,
) -> None:
    result = bangctl(daemon.socket, "import", "--force", "good")
    assert "good: invalid line 2: \\x1b[2Jbogus\\x1b]0;title\\x07" in result.stdout
    assert "\x1b" not in result.stdout + result.stderr
    assert "\x1b" not in daemon.log_text()


def test_the_latest_parses_invalid_count_stays_in_sources_status_and_metrics(
    tmp_path: Path, fail2ban_server: PrivateFail2ban, fail2ban_jail: str,
) -> None:
    with ready_daemon("bangd-invalid-", fail2ban_server.socket, fail2ban_jail,
                      files={"list.txt": "198.51.100.7\nnot-an-address\n999.1.1.1\n"},
                      sources=[{"name": "l", "path": "list.txt"}],
                      skip_reserved=False) as proc:
        bangctl(proc.socket, "import", "l")
        bangctl(proc.socket, "import", "l")  # unchanged: the count carries over
        (row,) = bangctl_json(proc.socket, "sources")["sources"]
        assert (row["last_state"], row["invalid"]) == ("unchanged", 2)
        assert "l: 2 invalid lines" in bangctl(proc.socket, "sources").stdout
        assert "l: 2 invalid lines" in bangctl(proc.socket, "status").stdout
        metrics = bangctl(proc.socket, "metrics").stdout
        assert f'bangd_source_invalid_lines{{jail="{fail2ban_jail}",source="l"}} 2' in metrics
