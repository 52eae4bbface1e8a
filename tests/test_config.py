"""The YAML config: defaults, durations, and one clear line per problem."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from bangd.cli.bangd_main import main as bangd_main
from bangd.config import load_config, parse_config, parse_duration, parse_size
from bangd.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "bangd.yaml")
    return info.value.problems


def test_empty_file_gives_spec_defaults() -> None:
    config = parse_config("", "bangd.yaml")
    assert config.database == "/var/lib/bangd/bangd.db"
    assert config.control.socket == "/run/bangd/bangd.sock"
    assert config.control.mode == 0o660
    assert config.fail2ban.jail == "blocklist"
    assert config.fail2ban.batch_size == 1000
    assert config.fail2ban.reconcile_interval == 900
    assert config.skip_reserved is True
    assert config.geo.retention_days == 90
    assert config.geo.cleanup_interval == 86400
    assert config.sources == ()


def test_example_config_is_valid() -> None:
    config = load_config(str(ROOT / "config.example.yaml"))
    assert [s.name for s in config.sources] == ["spamhaus-drop"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90), ("90s", 90), ("5m", 300), ("6h", 21600), ("1d", 86400), ("1.5h", 5400)],
)
def test_durations_accept_seconds_and_units(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "-5m", "0", True, None, "1y"])
def test_bad_durations_are_refused(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_sizes_accept_units() -> None:
    assert parse_size("64MiB") == 64 * 1024 * 1024
    assert parse_size("500k") == 500 * 1024
    assert parse_size(1000) == 1000


def test_unknown_key_names_its_place_and_suggests_the_right_one() -> None:
    text = "sources:\n - name: a\n   url: http://x/y\n   interval: 1h\n   intreval: 5m\n"
    assert problems_of(text) == [
        "bangd.yaml: sources[0].intreval: unknown key; did you mean interval?"
    ]


def test_unknown_top_level_key_lists_known_keys_when_nothing_is_close() -> None:
    (problem,) = problems_of("zzz: 1\n")
    assert problem.startswith("bangd.yaml: zzz: unknown key; known keys: database,")


def test_every_problem_is_reported_at_once() -> None:
    text = (
        "log_level: loud\n"
        "fail2ban:\n  batch_size: 0\n"
        "sources:\n - name: Bad Name\n   url: ftp://x\n   interval: soon\n"
    )
    problems = problems_of(text)
    assert len(problems) == 5
    assert any("log_level: expected one of debug" in p for p in problems)
    assert any("fail2ban.batch_size: expected an integer >= 1, got 0" in p for p in problems)
    assert any("sources[0].name:" in p for p in problems)
    assert any("sources[0].url: expected an http:// or https:// URL" in p for p in problems)
    assert any("sources[0].interval: expected a duration" in p for p in problems)


def test_source_needs_exactly_one_of_url_and_path() -> None:
    both = "sources:\n - name: a\n   url: http://x/\n   path: /x\n   interval: 1h\n"
    neither = "sources:\n - name: a\n   interval: 1h\n"
    assert problems_of(both) == ["bangd.yaml: sources[0]: expected exactly one of url or path"]
    assert problems_of(neither) == ["bangd.yaml: sources[0]: expected exactly one of url or path"]


def test_source_interval_is_required() -> None:
    (problem,) = problems_of("sources:\n - name: a\n   path: /x\n")
    assert problem == "bangd.yaml: sources[0].interval: missing; expected a duration such as 12h"


def test_duplicate_source_names_are_refused() -> None:
    text = "sources:\n - {name: a, path: /x, interval: 1h}\n - {name: a, path: /y, interval: 1h}\n"
    assert problems_of(text) == ["bangd.yaml: sources[1].name: duplicate source name 'a'"]


def test_source_jail_defaults_to_fail2ban_jail() -> None:
    config = parse_config(
        "fail2ban: {jail: bl}\nsources:\n - {name: a, path: /x, interval: 1h}\n", "f"
    )
    assert config.sources[0].jail == "bl"


def test_allowlist_entries_become_networks() -> None:
    config = parse_config("allowlist: [198.51.100.7, 2001:db8::/32, 10.1.2.3/8]\n", "f")
    assert config.allowlist == (
        ipaddress.ip_network("198.51.100.7/32"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("10.0.0.0/8"),
    )


def test_bad_allowlist_entry_names_its_index() -> None:
    (problem,) = problems_of("allowlist: [127.0.0.1, nonsense]\n")
    assert problem.startswith("bangd.yaml: allowlist[1]: expected an IP address or CIDR")


def test_control_mode_accepts_quoted_octal() -> None:
    assert parse_config('control: {mode: "0640"}\n', "f").control.mode == 0o640


def test_relative_paths_are_refused() -> None:
    (problem,) = problems_of("database: bangd.db\n")
    assert problem == "bangd.yaml: database: expected an absolute path, got 'bangd.db'"


def test_invalid_yaml_names_the_line() -> None:
    (problem,) = problems_of("a: [1\nb: 2\n")
    assert problem.startswith("bangd.yaml: line ")
    assert "invalid YAML" in problem


def test_missing_file_is_one_clear_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "nope.yaml"))
    assert info.value.problems == [
        f"{tmp_path}/nope.yaml: cannot read: No such file or directory"
    ]


def test_check_config_prints_ok_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert bangd_main(["--check-config", "-c", str(ROOT / "config.example.yaml")]) == 0
    assert capsys.readouterr().out == "ok\n"


def test_check_config_prints_one_line_per_problem_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("log_level: loud\nfoo: 1\n")
    assert bangd_main(["--check-config", "-c", str(path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{path}: foo: unknown key; known keys: database, log_level, control, fail2ban, "
        "allowlist, skip_reserved, sources, geo",
        f"{path}: log_level: expected one of debug, info, warning, error, got 'loud'",
    ]


def test_check_config_warns_about_a_missing_list_file_but_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"sources:\n - {{name: a, path: {tmp_path}/none.txt, interval: 1h}}\n")
    assert bangd_main(["--check-config", "-c", str(path)]) == 0
    out = capsys.readouterr()
    assert out.out == "ok\n"
    assert out.err == (
        f"{path}: warning: sources[0].path: {tmp_path}/none.txt: no such file; "
        "the source fails until it exists\n"
    )


def test_check_config_warns_about_a_broken_mmdb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.mmdb").write_text("nope")
    path = tmp_path / "c.yaml"
    path.write_text(f"geo: {{mmdb: {tmp_path}/bad.mmdb}}\n")
    assert bangd_main(["--check-config", "-c", str(path)]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"{path}: warning: geo.mmdb: ")
    assert err.rstrip().endswith("bangd runs without MMDB lookups until it is fixed")


@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf"])
def test_non_finite_durations_are_refused(text: str) -> None:
    (problem,) = problems_of(f"fail2ban: {{timeout: {text}}}\n")
    assert "fail2ban.timeout: expected a finite duration greater than zero" in problem


def test_a_socket_path_too_long_for_af_unix_is_refused() -> None:
    (problem,) = problems_of(f"control: {{socket: /{'x' * 120}.sock}}\n")
    assert "control.socket: expected a socket path of at most 107 bytes" in problem


@pytest.mark.parametrize("jail", ["-all", "bl\\n", "a b"])
def test_jail_names_that_fail2ban_would_misread_are_refused(jail: str) -> None:
    (problem,) = problems_of(f'fail2ban: {{jail: "{jail}"}}\n')
    assert "fail2ban.jail: expected a fail2ban jail name" in problem


def test_check_config_fails_for_a_control_group_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("control: {group: no-such-group-here}\n")
    assert bangd_main(["--check-config", "-c", str(path)]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == (f"{path}: control.group: no group 'no-such-group-here' on this system; "
                       "create it (groupadd) or set control.group: null\n")
