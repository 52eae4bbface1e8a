"""Issue 12 against the real daemon process and the real bangctl: an exemption is lifted
at once and survives a restart; unknown names are not_found with exit 1; bans lists what
bangd applied."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from tests.daemon_process import DaemonProcess, bangctl, bangctl_json, ready_daemon
from tests.fail2ban_server import PrivateFail2ban

LISTED = ("192.0.2.1", "192.0.2.2")


@pytest.fixture
def daemon(fail2ban_jail: str, fail2ban_server: PrivateFail2ban) -> Iterator[DaemonProcess]:
    with ready_daemon("bangd-ops-", fail2ban_server.socket, fail2ban_jail,
                      files={"a.txt": "\n".join(LISTED) + "\n"},
                      sources=[{"name": "a", "path": "a.txt"}], skip_reserved=False) as proc:
        bangctl_json(proc.socket, "import", "--force", "a")
        yield proc


def banned(server: PrivateFail2ban) -> set[str]:
    code, result = server.command(["get", "bl", "banned"])
    assert code == 0 and isinstance(result, list)
    return set(result)


def test_allow_unbans_at_once_and_the_exemption_survives_a_restart(
    daemon: DaemonProcess, fail2ban_server: PrivateFail2ban
) -> None:
    assert bangctl(daemon.socket, "allow", "192.0.2.1", "--comment", "vpn").returncode == 0
    assert banned(fail2ban_server) == {"192.0.2.2"}
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    daemon.messages.clear()
    daemon.start()
    daemon.wait_for("READY=1")
    listed = bangctl_json(daemon.socket, "allow", "--list")["exemptions"]
    assert [(e["network"], e["comment"]) for e in listed] == [("192.0.2.1/32", "vpn")]


@pytest.mark.parametrize("argv", [["runs", "nosuch"], ["reconcile", "--jail", "nosuch"],
                                  ["bans", "--source", "nosuch"]],
                         ids=["runs", "reconcile", "bans"])
def test_an_unknown_name_is_not_found_and_exits_1(
    daemon: DaemonProcess, argv: list[str]
) -> None:
    done = bangctl(daemon.socket, *argv)
    assert done.returncode == 1 and ": not_found: no " in done.stderr


def test_bans_lists_what_bangd_applied(daemon: DaemonProcess) -> None:
    result = bangctl_json(daemon.socket, "bans")
    assert [(e["entry"], e["sources"]) for e in result["entries"]] == [
        (entry, ["a"]) for entry in LISTED]
