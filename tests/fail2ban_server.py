"""A private, real fail2ban-server for tests, benchmarks and demos.

It runs Debian's /usr/bin/fail2ban-server with its own config, socket, database and log
in a short directory under /tmp, with jails that have no filter and, by default, no action:
bans are only bookkeeping, no firewall is touched. A real firewall action (`action=`, with
its files copied into the private action.d) is only for a server started inside a network
namespace of the test's own (`netns_pid=`, see tests/netns.py), so the machine's ruleset is
never touched. Usable from pytest fixtures and, through the command line below, from plain
scripts:

    python -m tests.fail2ban_server start DIR [--jail NAME]... [--loglevel LEVEL]
    python -m tests.fail2ban_server stop DIR
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final, Protocol

from bangd.fail2ban.wire import CLOSE_COMMAND, END, decode_reply, encode_command

SERVER_BINARY: Final = "/usr/bin/fail2ban-server"
MAX_SOCKET_PATH: Final = 107
START_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 60.0
PROBE_INTERVAL: Final = 0.05
_STRIPPED_ENV: Final = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")


class PrivateFail2banFactory(Protocol):
    """What the `private_fail2ban` fixture yields: starts a server only its test uses."""

    def __call__(
        self, jails: Sequence[str] = ("bl",), loglevel: str = "NOTICE"
    ) -> PrivateFail2ban: ...


class Fail2banServerError(RuntimeError):
    """The private fail2ban-server could not be started or talked to."""


def send_command(socket_path: str, cmd: Sequence[str], timeout: float = 10.0) -> tuple[int, object]:
    """One blocking request/response on a fresh connection; for fixtures and scripts."""
    return decode_reply(raw_reply(socket_path, cmd, timeout))


def raw_reply(socket_path: str, cmd: Sequence[str], timeout: float = 10.0) -> bytes:
    """fail2ban's reply to one command as it came (the pickle, without the end marker)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(encode_command(cmd))
        data = _read_reply(sock)
        with contextlib.suppress(OSError):
            sock.sendall(CLOSE_COMMAND)
    return data


def _read_reply(sock: socket.socket) -> bytes:
    chunks = bytearray()
    while not chunks.endswith(END):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("fail2ban closed the connection before replying")
        chunks += chunk
    return bytes(chunks[: -len(END)])


def _fail2ban_conf(directory: Path, loglevel: str) -> str:
    return (
        "[Definition]\n"
        f"loglevel = {loglevel}\n"
        f"logtarget = {directory}/fail2ban.log\n"
        f"socket = {directory}/f2b.sock\n"
        f"pidfile = {directory}/f2b.pid\n"
        f"dbfile = {directory}/f2b.sqlite3\n"
        "dbpurgeage = 1d\n"
    )


def _jail_conf(jails: Sequence[str], action: str, plain: Sequence[str] = ()) -> str:
    """jail.conf: `action` for each jail, except `plain` ones, which have none."""
    sections = [
        "[DEFAULT]\nbackend = polling\nbantime = 1d\nallowipv6 = auto\n",
        *(f"[{jail}]\nenabled = true\nfilter =\naction = {'' if jail in plain else action}\n"
          for jail in jails),
    ]
    return "\n".join(sections)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} unreadable)"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} empty)"


def _check_socket_path_length(socket_path: Path) -> None:
    """fail2ban only logs "Unable to bind socket" for a too-long path and keeps running."""
    if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH:
        raise Fail2banServerError(
            f"socket path {socket_path} is longer than {MAX_SOCKET_PATH} bytes: "
            "use a shorter base_dir (e.g. under /tmp)"
        )


def _process_gone(pid: int) -> bool:
    """True once pid has exited; a zombie counts as gone (a script may not be its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


class PrivateFail2ban:
    """One fail2ban-server process with its own directory; start() and stop() are blocking."""

    def __init__(
        self,
        base_dir: str | None = None,
        jails: Sequence[str] = ("bl",),
        loglevel: str = "NOTICE",
        *,
        action: str = "",
        action_files: Sequence[str | Path] = (),
        netns_pid: int | None = None,
        plain_jails: Sequence[str] = (),
    ) -> None:
        if not jails:
            raise ValueError("PrivateFail2ban needs at least one jail")
        if action and netns_pid is None:
            raise ValueError(
                "a firewall action would change this machine's ruleset: "
                "start the server inside a test network namespace (netns_pid=)"
            )
        self._base_dir = base_dir
        self._jails = tuple(jails)
        self._loglevel = loglevel
        self._action = action
        self._action_files = tuple(Path(path) for path in action_files)
        self._plain_jails = tuple(plain_jails)
        self._netns_pid = netns_pid
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def dir(self) -> str:
        return str(self._require_dir())

    @property
    def socket(self) -> str:
        return str(self._require_dir() / "f2b.sock")

    @property
    def log_path(self) -> str:
        return str(self._require_dir() / "fail2ban.log")

    @property
    def output_path(self) -> str:
        """Where the server's own stdout/stderr go (tracebacks before logging is set up)."""
        return str(self._require_dir() / "server.out")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def jails(self) -> tuple[str, ...]:
        return self._jails

    def log_text(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def command(self, cmd: Sequence[str], timeout: float = 10.0) -> tuple[int, object]:
        """Send one raw command to this server and return (code, result)."""
        return send_command(self.socket, cmd, timeout)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Write the config, start the server, return once every jail answers `status`."""
        if self._process is not None and self._process.poll() is None:
            return
        if not os.access(SERVER_BINARY, os.X_OK):
            raise Fail2banServerError(
                f"{SERVER_BINARY} is missing: install it with `apt-get install fail2ban`"
            )
        directory = self._prepare_dir()
        env = {key: value for key, value in os.environ.items() if key not in _STRIPPED_ENV}
        with open(directory / "server.out", "ab") as output:
            self._process = subprocess.Popen(
                self._server_argv(directory),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Ask the server to stop, then TERM and KILL it if it lingers; safe to call twice."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(OSError, ValueError):
            send_command(self.socket, ["stop"], timeout=5.0)
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)
            try:
                process.wait(timeout if sig is None else 10.0)
                return
            except subprocess.TimeoutExpired:
                continue

    def _prepare_dir(self) -> Path:
        if self._dir is None:
            if self._base_dir is None:
                self._dir = Path(tempfile.mkdtemp(prefix="f2b-", dir="/tmp"))
            else:
                directory = Path(self._base_dir).resolve()
                _check_socket_path_length(directory / "f2b.sock")
                directory.mkdir(parents=True, exist_ok=True)
                self._dir = directory
        _check_socket_path_length(self._dir / "f2b.sock")
        conf = self._dir / "conf"
        conf.mkdir(exist_ok=True)
        (conf / "fail2ban.conf").write_text(_fail2ban_conf(self._dir, self._loglevel))
        (conf / "jail.conf").write_text(_jail_conf(self._jails, self._action,
                                                          self._plain_jails))
        if self._action_files:
            (conf / "action.d").mkdir(exist_ok=True)
            for path in self._action_files:
                shutil.copyfile(path, conf / "action.d" / path.name)
        return self._dir

    def _server_argv(self, directory: Path) -> list[str]:
        # nsenter -n execs the server itself (no fork), so the pid is still the server's.
        inside = [] if self._netns_pid is None else [
            "nsenter", "-t", str(self._netns_pid), "-n", "--"]
        return [
            *inside, SERVER_BINARY, "-f", "-x",
            "-c", str(directory / "conf"),
            "-s", str(directory / "f2b.sock"),
            "-p", str(directory / "f2b.pid"),
            "--logtarget", str(directory / "fail2ban.log"),
            "--loglevel", self._loglevel,
        ]  # fmt: skip

    def _wait_ready(self, timeout: float) -> None:
        """Poll `status` until its jail list names every jail. (`ping` answers before the
        jails exist, and `status JAIL` for a jail not yet added makes fail2ban log an ERROR
        that tests reading its log would count.)"""
        assert self._process is not None
        deadline = time.monotonic() + timeout
        last_problem = "no answer yet"
        while True:
            try:
                code, result = self.command(["status"], timeout=2.0)
            except OSError as exc:
                code, result = -1, exc
            if code == 0 and set(self._jails) <= _jail_list(result):
                return
            last_problem = repr(result)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._startup_failure(f"not ready after {timeout:.0f} s ({last_problem})")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(min(PROBE_INTERVAL, remaining))
                raise self._startup_failure(f"exited with {self._process.returncode}")

    def _startup_failure(self, what: str) -> Fail2banServerError:
        directory = self._require_dir()
        return Fail2banServerError(
            f"private fail2ban-server in {directory} {what}\n"
            f"--- {directory}/fail2ban.log ---\n{_tail(directory / 'fail2ban.log')}\n"
            f"--- {directory}/server.out ---\n{_tail(directory / 'server.out')}"
        )

    def _require_dir(self) -> Path:
        if self._dir is None:
            raise Fail2banServerError("the private fail2ban-server has not been started yet")
        return self._dir


@contextlib.contextmanager
def running(server: PrivateFail2ban) -> Iterator[PrivateFail2ban]:
    """Start `server`; afterwards stop it and remove its directory."""
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


def stop_in_dir(directory: str, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop a server started by the CLI in `directory`; False if none was running."""
    pid_file = Path(directory) / "f2b.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    if _process_gone(pid):
        return False
    with contextlib.suppress(OSError, ValueError):
        send_command(str(Path(directory) / "f2b.sock"), ["stop"], timeout=5.0)
    for sig, wait in ((None, timeout), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while not _process_gone(pid):
            if time.monotonic() > deadline:
                break
            time.sleep(PROBE_INTERVAL)
        else:
            return True
    raise Fail2banServerError(f"fail2ban-server pid {pid} in {directory} would not die")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fail2ban_server",
        description="Start or stop a private fail2ban-server (a firewall action only "
        "inside a network namespace).",
    )
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("dir", help="short directory for socket, log, db (socket path <= 107 B)")
    parser.add_argument("--jail", action="append", dest="jails", help="jail name (repeatable)")
    parser.add_argument("--loglevel", default="NOTICE")
    parser.add_argument("--netns-pid", type=int, default=None,
                        help="run inside the network namespace of this process")
    parser.add_argument("--enforce", action="store_true",
                        help="the jails use bangd-nftables (needs --netns-pid)")
    args = parser.parse_args(argv)
    if args.action == "stop":
        stopped = stop_in_dir(args.dir)
        print("stopped" if stopped else f"no fail2ban-server running in {args.dir}")
        return 0
    action_file = Path(__file__).resolve().parent.parent / "packaging" / "fail2ban" / (
        "action.d/bangd-nftables.py"
    )
    server = PrivateFail2ban(
        args.dir, jails=args.jails or ("bl",), loglevel=args.loglevel,
        action="bangd-nftables.py" if args.enforce else "",
        action_files=[action_file] if args.enforce else [], netns_pid=args.netns_pid,
    )
    try:
        server.start()
    except Fail2banServerError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(server.socket)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def _jail_list(status: object) -> set[str]:
    """The jail names in fail2ban's `status` reply: [..., ('Jail list', 'a, b')]."""
    for item in status if isinstance(status, list | tuple) else ():
        if isinstance(item, tuple | list) and len(item) == 2 and item[0] == "Jail list":
            return {name.strip() for name in str(item[1]).split(",") if name.strip()}
    return set()
