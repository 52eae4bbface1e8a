"""systemd/bangd.service: it loads cleanly, it is sandboxed, and it is the service bangd expects.

`systemd-analyze verify` and `systemd-analyze security --offline=true` both work without a
running systemd, which is how CI runs. verify checks that ExecStart's binary exists, so it
runs on a temp copy that points at this venv's `bangd`; man-page checks are left to
tests/test_debian_package.py, which verifies the installed unit with its installed man pages.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "bangd.service"
CONFIG_EXAMPLE = REPO / "config.example.yaml"
INSTALLED_BANGD = "/usr/bin/bangd"
VENV_BANGD = Path(sys.executable).parent / "bangd"
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"
MAX_EXPOSURE = 3.0
OVERALL_EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+\.\d+)")

UnitSettings = dict[tuple[str, str], list[str]]


def unit_settings(text: str) -> UnitSettings:
    """Every (section, key) with all its values in order: systemd keys may repeat."""
    settings: UnitSettings = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        settings.setdefault((section, key.strip()), []).append(value.strip())
    return settings


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert Path(SYSTEMD_ANALYZE).exists(), (
        f"{SYSTEMD_ANALYZE} missing: run scripts/setup (apt-get install systemd)"
    )
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False
    )


def verify_problems(unit_text: str, directory: Path) -> str:
    """What `systemd-analyze verify` says about the unit; it exits 0 even on unknown keys,
    so any output at all is a problem."""
    copy = directory / "bangd.service"
    copy.write_text(unit_text.replace(INSTALLED_BANGD, str(VENV_BANGD)))
    done = systemd_analyze("verify", "--man=no", str(copy))
    return f"exit {done.returncode}\n{done.stdout}{done.stderr}" if (
        done.returncode or done.stdout or done.stderr
    ) else ""


@pytest.fixture(scope="module")
def settings() -> UnitSettings:
    return unit_settings(UNIT.read_text())


@pytest.fixture(scope="module")
def config_example() -> dict[str, Any]:
    loaded = yaml.safe_load(CONFIG_EXAMPLE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    assert shutil.which("bangd", path=str(VENV_BANGD.parent)), f"{VENV_BANGD} missing"
    assert verify_problems(UNIT.read_text(), tmp_path) == ""


def test_verify_check_reports_an_unknown_directive(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("[Service]\n", "[Service]\nRestartt=always\n")
    assert "Unknown key 'Restartt'" in verify_problems(broken, tmp_path)


def test_security_exposure_is_at_most_3_0() -> None:
    done = systemd_analyze("security", "--offline=true", "--no-pager", str(UNIT))
    found = OVERALL_EXPOSURE.search(done.stdout)
    assert found, f"no overall exposure in systemd-analyze output:\n{done.stdout}{done.stderr}"
    exposed = "\n".join(line for line in done.stdout.splitlines() if line.startswith("✗"))
    assert float(found.group(1)) <= MAX_EXPOSURE, f"exposure {found.group(1)}:\n{exposed}"


@pytest.mark.parametrize(
    ("section", "key", "expected"),
    [
        ("Service", "Type", ["notify"]),
        ("Service", "Restart", ["on-failure"]),
        ("Service", "ExecReload", ["/bin/kill -HUP $MAINPID"]),
        ("Service", "ExecStart", [f"{INSTALLED_BANGD} -c /etc/bangd/config.yaml"]),
        ("Service", "RuntimeDirectory", ["bangd"]),
        ("Service", "StateDirectory", ["bangd"]),
        ("Service", "ConfigurationDirectory", ["bangd"]),
        ("Service", "ProtectSystem", ["strict"]),
        ("Service", "ProtectHome", ["yes"]),
        ("Service", "PrivateTmp", ["yes"]),
        ("Service", "NoNewPrivileges", ["yes"]),
        ("Service", "RestrictAddressFamilies", ["AF_UNIX AF_INET AF_INET6"]),
    ],
)
def test_unit_sets(settings: UnitSettings, section: str, key: str, expected: list[str]) -> None:
    assert settings.get((section, key)) == expected


def test_unit_has_a_watchdog(settings: UnitSettings) -> None:
    assert settings.get(("Service", "WatchdogSec")), "WatchdogSec= missing"


def test_unit_starts_after_and_wants_fail2ban(settings: UnitSettings) -> None:
    for key in ("After", "Wants"):
        values = " ".join(settings.get(("Unit", key), [])).split()
        assert "fail2ban.service" in values, f"{key}= lacks fail2ban.service"


def test_syscall_filter_starts_from_system_service(settings: UnitSettings) -> None:
    assert settings[("Service", "SystemCallFilter")][0] == "@system-service"


def test_unit_runs_as_root_to_reach_fail2ban_socket(settings: UnitSettings) -> None:
    """fail2ban's socket is root-owned with mode 0700; no User= may take that away."""
    assert ("Service", "User") not in settings
    assert ("Service", "DynamicUser") not in settings


def test_example_database_lives_in_the_state_directory(
    settings: UnitSettings, config_example: dict[str, Any]
) -> None:
    """ProtectSystem=strict leaves only the unit's own directories writable."""
    state = "/var/lib/" + settings[("Service", "StateDirectory")][0] + "/"
    assert str(config_example["database"]).startswith(state)


def test_example_control_socket_lives_in_the_runtime_directory(
    settings: UnitSettings, config_example: dict[str, Any]
) -> None:
    runtime = "/run/" + settings[("Service", "RuntimeDirectory")][0] + "/"
    assert str(config_example["control"]["socket"]).startswith(runtime)


def test_runtime_directory_lets_the_control_group_reach_the_socket(
    settings: UnitSettings,
) -> None:
    """control.group members need to traverse /run/bangd; the socket's own mode guards it."""
    mode = int(settings[("Service", "RuntimeDirectoryMode")][0], 8)
    assert mode & 0o005 == 0o005


METRICS_UNITS = (REPO / "systemd" / "bangd-metrics.service",
                 REPO / "systemd" / "bangd-metrics.timer")


def test_systemd_analyze_verify_accepts_the_metrics_timer_and_service() -> None:
    done = systemd_analyze("verify", "--man=no", *(str(u) for u in METRICS_UNITS))
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_metrics_service_exposure_is_at_most_3_0() -> None:
    done = systemd_analyze("security", "--offline=true", "--no-pager", str(METRICS_UNITS[0]))
    found = OVERALL_EXPOSURE.search(done.stdout)
    assert found and float(found.group(1)) <= MAX_EXPOSURE, done.stdout


def test_metrics_service_writes_atomically_into_the_textfile_directory() -> None:
    settings = unit_settings(METRICS_UNITS[0].read_text())
    (command,) = settings[("Service", "ExecStart")]
    assert "/usr/bin/bangctl metrics > /var/lib/prometheus/node-exporter/bangd.prom.tmp" in command
    assert command.rstrip("'").endswith("/var/lib/prometheus/node-exporter/bangd.prom")
