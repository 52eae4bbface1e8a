"""`bangd --check-config` warns about jails fail2ban does not have, when fail2ban answers
(the real private fail2ban, jails "bl" and "bl2")."""

from __future__ import annotations

from pathlib import Path

import pytest

from bangd.cli.bangd_main import main as bangd_main
from tests.fail2ban_server import PrivateFail2ban


def config_file(tmp_path: Path, socket: str) -> Path:
    (tmp_path / "a.txt").write_text("192.0.2.1\n")
    path = tmp_path / "c.yaml"
    path.write_text(
        f"fail2ban: {{socket: {socket}, jail: bl}}\n"
        "sources:\n"
        f" - {{name: a, path: {tmp_path}/a.txt, interval: 1h}}\n"
        f" - {{name: b, path: {tmp_path}/a.txt, interval: 1h, jail: nosuch}}\n"
    )
    return path


def test_check_config_warns_about_a_jail_fail2ban_does_not_have(
    tmp_path: Path, fail2ban_server: PrivateFail2ban, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path, fail2ban_server.socket)
    assert bangd_main(["--check-config", "-c", str(path)]) == 0
    out = capsys.readouterr()
    assert out.out == "ok\n"
    assert out.err.splitlines() == [
        f"{path}: warning: sources[1].jail: fail2ban has no jail 'nosuch' (it has: bl, bl2); "
        "the source fails until the jail exists"]


def test_check_config_checks_no_jails_when_fail2ban_does_not_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path, str(tmp_path / "no-fail2ban.sock"))
    assert bangd_main(["--check-config", "-c", str(path)]) == 0
    assert capsys.readouterr().err == ""
