"""The real bangd stopped (SIGKILL, SIGTERM) in the middle of a big import, then restarted.

The promise: afterwards the jail holds exactly the list, and no address was sent to
fail2ban twice. fail2ban logs "already banned" at NOTICE level for a repeat ban of an
address banned more than ~3 s earlier (quicker repeats only at DEBUG), so the test waits
longer than that before restarting bangd: any resend would then show in the log.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.addresses import public_ipv4
from tests.daemon_process import DaemonProcess, bangctl_json
from tests.fail2ban_server import PrivateFail2ban, PrivateFail2banFactory
from tests.shortdir import short_tmpdir

ENTRIES = 200_000


@pytest.fixture
def workdir() -> Iterator[str]:
    with short_tmpdir("bangd-crash-") as d:
        yield d


def currently_banned(server: PrivateFail2ban) -> int:
    code, result = server.command(["status", "bl", "short"])
    assert code == 0, result
    assert isinstance(result, list)
    actions = dict(dict(result)["Actions"])
    return int(actions["Currently banned"])


def wait_until(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stop_signal", "twice"),
    [(signal.SIGKILL, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["kill", "term", "int-int"],
)
def test_stopped_mid_import_then_restarted_applies_exactly_the_list_and_sends_nothing_twice(
    workdir: str, private_fail2ban: PrivateFail2banFactory, stop_signal: signal.Signals,
    twice: bool,
) -> None:
    """SIGKILL: bangd dies anywhere. SIGTERM: bangd must exit 0 within 10 s, leaving the run
    `interrupted` at a safe point. A second Ctrl-C cuts the grace period short and still
    exits 0 cleanly. Either way the restart finishes the job exactly."""
    server = private_fail2ban(jails=("bl",), loglevel="NOTICE")
    addresses = public_ipv4(ENTRIES)
    list_path = Path(workdir) / "big.txt"
    list_path.write_text("# 200k test list\n" + "\n".join(addresses) + "\n")
    config = {
        "log_level": "info",
        "fail2ban": {"socket": server.socket, "jail": "bl", "batch_size": 1000},
        "skip_reserved": False,
        "sources": [{"name": "big", "path": str(list_path), "interval": "1d"}],
    }
    first = DaemonProcess(workdir, config)
    try:
        first.start()
        first.wait_for("READY=1")
        # Early, so that under SIGTERM the rest outlasts the grace period most of the time.
        wait_until(lambda: currently_banned(server) >= ENTRIES // 20, 120, "5% banned")
        first.signal(stop_signal)
        if twice:
            wait_until(lambda: "received: stopping" in first.log_text(), 10, "the first stop")
            first.signal(stop_signal)
            # Well inside the 7 s grace the first signal alone would have granted.
            code = first.wait_exit(4)
        else:
            code = first.wait_exit(10)
        if stop_signal != signal.SIGKILL:
            assert code == 0, first.log_text()[-2000:]
            assert "Traceback" not in first.log_text()
    finally:
        first.close()
    at_kill = currently_banned(server)
    if stop_signal == signal.SIGKILL or twice:
        assert 0 < at_kill < ENTRIES, "the stop must land in the middle of the import"
    else:  # within its grace period, bangd may have finished the import before exiting
        assert 0 < at_kill <= ENTRIES
    time.sleep(3.5)  # a resend from here on would be logged as "already banned"

    second = DaemonProcess(workdir, config)
    try:
        second.start()
        second.wait_for("READY=1")
        runs: list[dict[str, object]] = []

        def finished() -> bool:
            nonlocal runs
            runs = bangctl_json(second.socket, "runs", "big")["runs"]
            return bool(runs) and runs[0]["state"] in ("completed", "unchanged")

        wait_until(finished, 240, "the import to finish after the restart")
        states = [r["state"] for r in reversed(runs)]
        if stop_signal == signal.SIGKILL or twice:
            assert states == ["interrupted", "completed"], json.dumps(runs, indent=1)
        else:  # finished within the grace period, or interrupted and finished after restart
            assert states in (["interrupted", "completed"], ["completed"]), (
                json.dumps(runs, indent=1)
            )
    finally:
        second.signal(signal.SIGTERM)
        second.wait_exit(15)
        second.close()

    code, banned = server.command(["get", "bl", "banned"])
    assert code == 0
    assert isinstance(banned, list)
    assert sorted(str(b) for b in banned) == addresses
    assert "already banned" not in server.log_text()
