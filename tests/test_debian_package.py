"""The Debian package, end to end, the way an operator meets it on Debian 12.

Builds it with scripts/build-deb (debhelper + pybuild), installs it with apt, runs the
INSTALLED /usr/bin/bangd under Debian's /usr/bin/python3 with Debian's own python3-* packages
against a private fail2ban-server, imports lists with the installed /usr/bin/bangctl, and
finally purges it and checks nothing is left.

This changes the machine: it needs root, and it purges any bangd package already installed
(CI's machine is a scratch machine; on a developer's machine the package is this project's
own). Missing build tools make it fail, not skip: scripts/setup installs them.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fail2ban_server import PrivateFail2ban

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "bangd"
BANGD = "/usr/bin/bangd"
BANGCTL = "/usr/bin/bangctl"
UNIT = "/lib/systemd/system/bangd.service"
METRICS_UNITS = ("/lib/systemd/system/bangd-metrics.service",
                 "/lib/systemd/system/bangd-metrics.timer")
TIMER_LINK = "/etc/systemd/system/timers.target.wants/bangd-metrics.timer"
CONFFILE = "/etc/bangd/config.yaml"
F2B_ACTION = "/etc/fail2ban/action.d/bangd-nftables.py"
F2B_JAIL = "/etc/fail2ban/jail.d/bangd.conf"
F2B_FILES = {F2B_ACTION: REPO / "packaging/fail2ban/action.d/bangd-nftables.py",
             F2B_JAIL: REPO / "packaging/fail2ban/jail.d/bangd.conf"}
MODULE_DIR = "/usr/lib/python3/dist-packages/bangd"
STATE_DIR = "/var/lib/bangd"
WANTS_LINK = "/etc/systemd/system/multi-user.target.wants/bangd.service"
MAN_PAGES = ("/usr/share/man/man8/bangd.8.gz", "/usr/share/man/man8/bangctl.8.gz")
COMPLETION = "/usr/share/bash-completion/completions/bangctl"  # where bash-completion looks
DEBIAN_DEPENDENCIES = (
    "python3-aiohttp", "python3-aiosqlite", "python3-geoip2", "python3-maxminddb",
    "python3-yaml", "python3-sdnotify", "fail2ban", "python3-nftables",
)  # fmt: skip
JAIL = "blocklist"
LOCAL_LIST = "192.0.2.10\n198.51.100.0/24  # documentation range\n203.0.113.7\n"
HTTP_LIST = "# served over HTTP\n100.64.0.1\n100.64.1.0/24\n"
STEP_TIMEOUT = 300.0
APT_LOCK_WAIT = "DPkg::Lock::Timeout=120"  # another apt run (or this suite twice) may hold it
READY_TIMEOUT = 30.0


def debian_env() -> dict[str, str]:
    """Debian's interpreter and nothing of the venv: what a packaged command really sees."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "NOTIFY_SOCKET")}
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    env["DEBIAN_FRONTEND"] = "noninteractive"
    return env


def run(*argv: str, timeout: float = STEP_TIMEOUT, cwd: Path | str = "/") -> str:
    """Run a command as an operator would; fail with its output when it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=debian_env(), cwd=cwd, check=False)
    assert done.returncode == 0, (
        f"{' '.join(argv)} exited {done.returncode}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    )
    return done.stdout


def package_status() -> str:
    """dpkg's status line for the package ("install ok installed", ...), "" if unknown."""
    done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", PACKAGE], capture_output=True,
                          text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def package_installed() -> bool:
    return package_status().endswith(" installed")


def purge() -> None:
    run("apt-get", "-o", APT_LOCK_WAIT, "purge", "-y", PACKAGE)


@pytest.fixture(scope="module")
def deb() -> Path:
    assert os.geteuid() == 0, "this test installs a package: run it as root (CI does)"
    built = run(str(REPO / "scripts" / "build-deb"), cwd=REPO).strip().splitlines()[-1]
    path = REPO / built
    assert path.is_file(), f"scripts/build-deb printed {built!r}, which is not a file"
    return path


@pytest.fixture(scope="module")
def installed(deb: Path) -> Iterator[Path]:
    """The package installed by apt; purged afterwards unless a test purged it already."""
    if package_installed():
        purge()
    run("apt-get", "-o", APT_LOCK_WAIT, "install", "-y", "--no-install-recommends", str(deb))
    try:
        yield deb
    finally:
        if package_installed():
            purge()


@pytest.fixture
def list_server(tmp_path: Path) -> Iterator[str]:
    """A plain local HTTP server, so the installed bangd fetches with Debian's aiohttp 3.8."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "list.txt").write_text(HTTP_LIST)
    handler = partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/list.txt"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep pytest's output for failures."""


class InstalledDaemon:
    """/usr/bin/bangd as systemd would run it: foreground, with a NOTIFY_SOCKET to watch."""

    def __init__(self, directory: Path, config: dict[str, Any]) -> None:
        self.config_path = directory / "bangd.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = directory / "bangd.log"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(directory / "notify.sock"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = debian_env()
        env["NOTIFY_SOCKET"] = self.notify.getsockname()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([BANGD, "-c", str(self.config_path)], cwd="/",
                                         stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.notify.settimeout(min(0.5, left))
            try:
                if "READY=1" in self.notify.recv(4096).decode().splitlines():
                    return
            except TimeoutError:
                assert self.proc is not None and self.proc.poll() is None, self.failure("exited")
        raise AssertionError(self.failure(f"not READY within {timeout:.0f} s"))

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(15)

    def failure(self, what: str) -> str:
        return f"installed bangd {what}; log:\n{self.log_path.read_text(errors='replace')[-3000:]}"

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.notify.close()


@pytest.fixture
def installed_daemon(
    installed: Path, tmp_path: Path, list_server: str
) -> Iterator[tuple[InstalledDaemon, PrivateFail2ban]]:
    """The installed bangd, its database in /var/lib/bangd as packaged, a private fail2ban."""
    fail2ban = PrivateFail2ban(jails=(JAIL,))
    fail2ban.start()
    (tmp_path / "local.txt").write_text(LOCAL_LIST)
    config = {
        "database": f"{STATE_DIR}/bangd.db",
        "control": {"socket": str(tmp_path / "bangd.sock")},
        "fail2ban": {"socket": fail2ban.socket, "jail": JAIL},
        "skip_reserved": False,  # the lists use documentation and shared address ranges
        "sources": [
            {"name": "local", "path": str(tmp_path / "local.txt"), "interval": "1h"},
            {"name": "web", "url": list_server, "interval": "1h"},
        ],
    }
    daemon = InstalledDaemon(tmp_path, config)
    try:
        daemon.start()
        daemon.wait_ready()
        yield daemon, fail2ban
    finally:
        daemon.close()
        fail2ban.stop()


def test_package_depends_on_debian_12_packages(deb: Path) -> None:
    depends = run("dpkg-deb", "-f", str(deb), "Depends")
    names = {part.split()[0] for part in depends.replace("|", ",").split(",") if part.strip()}
    assert set(DEBIAN_DEPENDENCIES) <= names, depends


def test_package_installs_commands_unit_config_and_man_pages(installed: Path) -> None:
    files = set(run("dpkg", "-L", PACKAGE).split())
    assert {BANGD, BANGCTL, UNIT, CONFFILE, f"{MODULE_DIR}/__init__.py", *MAN_PAGES,
            *METRICS_UNITS, COMPLETION, *F2B_FILES} <= files


def test_installed_bash_completion_completes_bangctl_commands(installed: Path) -> None:
    offered = run("bash", "--norc", "-c", f'source {COMPLETION}; COMP_WORDS=(bangctl re); '
                  'COMP_CWORD=1; _bangctl; printf "%s\\n" "${COMPREPLY[@]}"')
    assert offered.split() == ["reconcile", "reload"]


def test_the_metrics_timer_is_installed_but_not_enabled(installed: Path) -> None:
    assert os.path.lexists(WANTS_LINK)
    assert not os.path.lexists(TIMER_LINK)


def test_config_is_a_conffile_made_from_the_example(installed: Path) -> None:
    conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", PACKAGE)
    assert CONFFILE in conffiles.split()
    assert Path(CONFFILE).read_text() == (REPO / "config.example.yaml").read_text()


def test_fail2ban_action_and_jail_are_conffiles_as_shipped(installed: Path) -> None:
    conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", PACKAGE).split()
    for path, source in F2B_FILES.items():
        assert path in conffiles
        assert Path(path).read_bytes() == source.read_bytes()


def test_installed_fail2ban_config_has_the_blocklist_jail_with_bangds_action(
    installed: Path,
) -> None:
    """Debian's own fail2ban-client reads /etc/fail2ban with the package's files in it."""
    dump = run("fail2ban-client", "-d")
    assert "['add', 'blocklist', 'auto']" in dump
    assert "['set', 'blocklist', 'bantime', '-1']" in dump
    assert f"['set', 'blocklist', 'addaction', 'bangd-nftables', '{F2B_ACTION}', '{{}}']" in dump


def test_installed_action_loads_under_debians_python(installed: Path) -> None:
    run("/usr/bin/python3", "-c",
        "from fail2ban.server.utils import Utils;"
        f"m = Utils.load_python_module({F2B_ACTION!r});"
        "from fail2ban.server.action import ActionBase;"
        "assert issubclass(m.Action, ActionBase)")


def test_installed_commands_use_debians_python_and_packages(installed: Path) -> None:
    assert Path(BANGD).read_text().startswith("#!/usr/bin/python3\n")
    where = run("/usr/bin/python3", "-c",
                "import bangd, aiohttp, aiosqlite, geoip2, maxminddb, yaml, sdnotify as s;"
                "print('\\n'.join(m.__file__ for m in (bangd, aiohttp, aiosqlite, geoip2,"
                " maxminddb, yaml, s)))")
    assert all(path.startswith("/usr/lib/python3/dist-packages/") for path in where.split())


def test_installed_bangd_accepts_the_installed_config(installed: Path) -> None:
    assert run(BANGD, "--check-config", "-c", CONFFILE).strip() == "ok"


def test_installed_unit_passes_verify_with_its_man_pages(installed: Path) -> None:
    done = subprocess.run(["systemd-analyze", "verify", UNIT], capture_output=True, text=True,
                          timeout=60, env=debian_env(), check=False)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_installed_bangctl_imports_and_fail2ban_holds_the_bans(
    installed_daemon: tuple[InstalledDaemon, PrivateFail2ban], tmp_path: Path
) -> None:
    daemon, fail2ban = installed_daemon
    sock = str(tmp_path / "bangd.sock")
    summary = run(BANGCTL, "-s", sock, "import", "local", "web")
    assert "failed" not in summary, summary
    sources = json.loads(run(BANGCTL, "-s", sock, "--json", "sources"))
    assert {s["name"]: s["entries"] for s in sources["sources"]} == {"local": 3, "web": 2}
    code, banned = fail2ban.command(["get", JAIL, "banned"])
    assert code == 0 and isinstance(banned, list)
    assert sorted(banned) == sorted(["192.0.2.10", "198.51.100.0/24", "203.0.113.7",
                                     "100.64.0.1", "100.64.1.0/24"])
    assert daemon.stop() == 0, daemon.failure("did not stop cleanly")


def test_purge_leaves_nothing_behind(installed: Path) -> None:
    """Last in this file: later tests would find no package."""
    Path(STATE_DIR).mkdir(exist_ok=True)  # as systemd's StateDirectory= would
    purge()
    assert package_status() in ("", "unknown ok not-installed"), "not purged: config left"
    left = [path for path in (BANGD, BANGCTL, UNIT, CONFFILE, "/etc/bangd", MODULE_DIR,
                              STATE_DIR, WANTS_LINK, *MAN_PAGES, *METRICS_UNITS, TIMER_LINK,
                              COMPLETION, *F2B_FILES)
            if os.path.lexists(path)]
    assert left == []
