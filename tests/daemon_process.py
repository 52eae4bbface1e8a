"""Run the real `bangd` executable as a child process, the way systemd would.

The test owns a NOTIFY_SOCKET (a datagram socket) and reads what bangd tells systemd, so
READY/STATUS/WATCHDOG/STOPPING are observed exactly as systemd would see them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.shortdir import short_tmpdir

BIN_DIR = Path(sys.executable).parent
CHECKOUT_PACKAGE = Path(__file__).resolve().parent.parent / "bangd"


@functools.cache
def executables_run_this_checkout() -> None:
    """Fail loudly when `bangd`/`bangctl` would run another copy of bangd than the one under
    test (a non-editable install left in .venv): every process test would test stale code."""
    found = subprocess.run(
        [str(BIN_DIR / "python3"), "-I", "-c", "import bangd; print(bangd.__file__)"],
        capture_output=True, text=True, check=False, cwd="/",
    ).stdout.strip()
    if not found or Path(found).resolve().parent != CHECKOUT_PACKAGE:
        raise AssertionError(
            f"{BIN_DIR}/bangd runs bangd from {found or 'nowhere'}, not {CHECKOUT_PACKAGE}: "
            "reinstall it editable (scripts/setup --test, or pip install -e .)"
        )


def bangctl(sock: str, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    executables_run_this_checkout()
    return subprocess.run(
        [str(BIN_DIR / "bangctl"), "-s", sock, *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def bangctl_json(sock: str, *args: str, timeout: float = 120.0) -> dict[str, Any]:
    done = bangctl(sock, "--json", *args, timeout=timeout)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert isinstance(result, dict)
    return result


class DaemonProcess:
    def __init__(self, directory: str, config: dict[str, Any]) -> None:
        self.dir = directory
        self.config_path = os.path.join(directory, "bangd.yaml")
        self.socket = os.path.join(directory, "bangd.sock")
        self.log_path = os.path.join(directory, "bangd.log")
        base: dict[str, Any] = {
            "database": os.path.join(directory, "bangd.db"),
            "log_level": "debug",
            "control": {"socket": self.socket},
        }
        base.update(config)
        self.config = base
        self.write_config(base)
        self.notify_path = os.path.join(directory, "notify.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.notify_path)  # left by an earlier process in the same directory
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.messages: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, config: dict[str, Any] | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config)
        Path(self.config_path).write_text(text)

    def start(self, *, extra_env: dict[str, str] | None = None) -> None:
        executables_run_this_checkout()
        env = dict(os.environ)
        env["NOTIFY_SOCKET"] = self.notify_path
        env.pop("WATCHDOG_USEC", None)
        env.update(extra_env or {})
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN_DIR / "bangd"), "-c", self.config_path],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )

    def wait_for(self, wanted: str, timeout: float = 20.0) -> str:
        """Wait for a notification line starting with `wanted`; return it."""
        deadline = time.monotonic() + timeout
        for message in self.messages:
            if message.startswith(wanted):
                return message
        while time.monotonic() < deadline:
            self.notify.settimeout(max(0.01, min(0.5, deadline - time.monotonic())))
            try:
                data = self.notify.recv(4096)
            except TimeoutError:
                if self.proc is not None and self.proc.poll() is not None:
                    break
                continue
            lines = data.decode().splitlines()
            self.messages.extend(lines)
            for line in lines:
                if line.startswith(wanted):
                    return line
        raise AssertionError(
            f"no {wanted!r} from bangd within {timeout}s; got {self.messages}; "
            f"log:\n{self.log_text()[-3000:]}"
        )

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def log_text(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.notify.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.notify_path)


@contextlib.contextmanager
def ready_daemon(
    prefix: str,
    fail2ban_socket: str,
    jail: str,
    *,
    files: Mapping[str, str | bytes],
    sources: Sequence[Mapping[str, Any]],
    **settings: Any,
) -> Iterator[DaemonProcess]:
    """A bangd process in a short directory of its own (`prefix`), once it said READY=1.

    `files` are written there first (name: contents); each source's `path` is a name in
    that directory, and its interval is 1d unless it says otherwise. `settings` go on top
    of the config (e.g. skip_reserved=False). The process is killed on the way out.
    """
    with short_tmpdir(prefix) as directory:
        for name, contents in files.items():
            path = Path(directory, name)
            if isinstance(contents, bytes):
                path.write_bytes(contents)
            else:
                path.write_text(contents)
        proc = DaemonProcess(directory, {
            "fail2ban": {"socket": fail2ban_socket, "jail": jail},
            "sources": [{"interval": "1d", **source,
                         "path": os.path.join(directory, source["path"])}
                        for source in sources],
            **settings,
        })
        try:
            proc.start()
            proc.wait_for("READY=1")
            yield proc
        finally:
            proc.close()


def wait_first_runs(proc: DaemonProcess, states: Mapping[str, str], timeout: float = 20) -> None:
    """Wait until each source's last run ended in the state given for it (the timer imports
    every source once at start)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = {s["name"]: s["last_state"]
                for s in bangctl_json(proc.socket, "sources")["sources"]}
        if seen == dict(states):
            return
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)
