"""A 1M-entry import by the real bangd, while bangctl keeps asking for status.

Starts a private fail2ban-server (loglevel WARNING: fail2ban's per-ban NOTICE line would
otherwise dominate) and the real `bangd` process with one 1,000,000-line list, then calls
`status` on the control socket every 0.1 s until the import completes. Prints the
import's duration and the control socket's answer times (median, 99th percentile, worst):
the promise is that the daemon keeps answering while it parses, compares and bans 1M
entries. Then it re-imports the unchanged list and reports bangd's peak memory.

    .venv/bin/python bench/bench_big_import.py [--entries 1000000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bangd.control.client import ControlClient
from tests.addresses import public_ipv4
from tests.daemon_process import DaemonProcess, bangctl_json
from tests.fail2ban_server import PrivateFail2ban


def peak_rss_mib(pid: int) -> float:
    """The process's high-water mark of resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bangd-big-", dir="/tmp")
    list_path = os.path.join(work, "big.txt")
    Path(list_path).write_text("\n".join(public_ipv4(args.entries, seed=5)) + "\n")
    server = PrivateFail2ban(jails=("bl",), loglevel="WARNING")
    server.start()
    daemon = DaemonProcess(work, {
        "log_level": "info",
        "fail2ban": {"socket": server.socket, "jail": "bl", "batch_size": 5000,
                     "timeout": "2m"},
        "skip_reserved": False,
        "sources": [{"name": "big", "path": list_path, "interval": "1d",
                     "max_entries": args.entries}],
    })
    answers: list[float] = []
    try:
        started = time.monotonic()
        daemon.start()
        daemon.wait_for("READY=1", timeout=60)
        with ControlClient(daemon.socket, timeout=60) as client:
            while True:
                t0 = time.perf_counter()
                status = client.call("status")
                answers.append(time.perf_counter() - t0)
                source = status["sources"][0]
                if source["last_state"] in ("completed", "failed"):
                    break
                time.sleep(0.1)
        took = time.monotonic() - started
        assert source["last_state"] == "completed", source
        t0 = time.perf_counter()
        again = bangctl_json(daemon.socket, "import", "big")["imports"][0]
        unchanged = time.perf_counter() - t0
        assert daemon.proc is not None
        peak = peak_rss_mib(daemon.proc.pid)
    finally:
        daemon.close()
        server.stop()
    answers.sort()
    p99 = answers[int(len(answers) * 0.99) - 1] if len(answers) >= 100 else answers[-1]
    print(f"{args.entries:,}-entry list imported by bangd into fail2ban (WARNING level) "
          f"in {took:.1f} s, start to completed")
    print(f"  control socket during the import: {len(answers)} status calls, median "
          f"{statistics.median(answers) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, worst "
          f"{answers[-1] * 1000:.0f} ms")
    print(f"  re-import of the unchanged list: {again['state']} in {unchanged:.2f} s "
          "(bangctl round trip)")
    print(f"  bangd's peak resident memory: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
