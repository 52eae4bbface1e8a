"""bangctl lookup and cache commands against the real bangd process, with generated MMDBs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_process import DaemonProcess, bangctl, bangctl_json
from tests.fail2ban_server import PrivateFail2ban
from tests.mmdb_factory import AsnNet, CountryNet, write_asn_db, write_country_db
from tests.shortdir import short_tmpdir

LIST = "45.10.1.1\n45.10.1.2\n45.20.0.0/16\n"


@pytest.fixture(scope="module")
def mmdbs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("mmdb")
    country = write_country_db(d / "country.mmdb", [
        CountryNet("45.10.0.0/16", "NL", "Netherlands"),
        CountryNet("45.20.0.0/16", "DE", "Germany"),
    ])
    asn = write_asn_db(d / "asn.mmdb", [AsnNet("45.10.0.0/16", 64500, "Example Hosting")])
    return country, asn


def start_daemon(
    directory: str, server: PrivateFail2ban, geo: dict[str, Any]
) -> DaemonProcess:
    Path(directory, "a.txt").write_text(LIST)
    proc = DaemonProcess(directory, {
        "fail2ban": {"socket": server.socket, "jail": "bl"},
        "skip_reserved": False,
        "sources": [{"name": "a", "path": f"{directory}/a.txt", "interval": "1d"}],
        "geo": geo,
    })
    proc.start()
    proc.wait_for("READY=1")
    deadline = time.monotonic() + 20
    while bangctl_json(proc.socket, "sources")["sources"][0]["last_state"] != "completed":
        assert time.monotonic() < deadline, proc.log_text()[-2000:]
        time.sleep(0.05)
    return proc


@pytest.fixture
def daemon(
    fail2ban_jail: str, fail2ban_server: PrivateFail2ban, mmdbs: tuple[Path, Path]
) -> Iterator[DaemonProcess]:
    with short_tmpdir("bangd-geo-") as d:
        proc = start_daemon(
            d, fail2ban_server, {"mmdb": str(mmdbs[0]), "asn_mmdb": str(mmdbs[1])}
        )
        deadline = time.monotonic() + 20
        while bangctl_json(proc.socket, "cache", "stats")["rows"] < 2:
            assert time.monotonic() < deadline, proc.log_text()[-2000:]
            time.sleep(0.05)
        yield proc
        proc.close()


def test_imported_addresses_are_resolved_in_the_background(daemon: DaemonProcess) -> None:
    stats = bangctl_json(daemon.socket, "cache", "stats")
    assert (stats["rows"], stats["negative"], stats["by_origin"]) == (2, 0, {"mmdb": 2})
    assert stats["resolvers"] == ["mmdb"]


def test_lookup_shows_geo_listing_source_and_jail(daemon: DaemonProcess) -> None:
    done = bangctl(daemon.socket, "lookup", "45.10.1.1")
    assert done.returncode == 0, done.stderr
    lines = [line.strip() for line in done.stdout.splitlines()]
    assert lines[0] == "45.10.1.1"
    assert lines[1].startswith("geo        NL Netherlands, AS64500 Example Hosting (mmdb, ")
    assert lines[2] == "listed by  a (45.10.1.1 in bl)"
    assert lines[3] == "banned in  bl (kernel: unknown: the jail's action is none)"


def test_lookup_finds_the_listed_network_containing_an_address(daemon: DaemonProcess) -> None:
    (result,) = bangctl_json(daemon.socket, "lookup", "45.20.3.4")["results"]
    assert result["country_code"] == "DE"
    assert result["sources"] == [{"source": "a", "jail": "bl", "entry": "45.20.0.0/16"}]
    assert result["banned_in"] == ["bl"]


def test_lookup_of_a_non_address_is_an_error_naming_it(daemon: DaemonProcess) -> None:
    done = bangctl(daemon.socket, "lookup", "45.10.1.1", "nonsense")
    assert done.returncode == 1
    assert "nonsense" in done.stderr


def test_cache_cleanup_dry_run_counts_and_deletes_nothing(daemon: DaemonProcess) -> None:
    done = bangctl(daemon.socket, "cache", "cleanup", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("would delete 0 rows not seen since ")
    assert bangctl_json(daemon.socket, "cache", "stats")["rows"] == 2


def test_cache_cleanup_runs_retention_now(daemon: DaemonProcess) -> None:
    result = bangctl_json(daemon.socket, "cache", "cleanup")
    assert (result["deleted"], result["dry_run"]) == (0, False)


def test_metrics_include_the_geo_cache(daemon: DaemonProcess) -> None:
    lines = bangctl(daemon.socket, "metrics").stdout.splitlines()
    assert 'bangd_geo_cache_rows{negative="false"} 2' in lines
    assert "bangd_geo_retention_deleted_total 0" in lines


def test_a_broken_mmdb_leaves_imports_working_and_shows_in_status(
    fail2ban_jail: str, fail2ban_server: PrivateFail2ban
) -> None:
    with short_tmpdir("bangd-geo-") as d:
        Path(d, "bad.mmdb").write_text("not a database")
        proc = start_daemon(d, fail2ban_server, {"mmdb": f"{d}/bad.mmdb"})
        try:
            status = bangctl_json(proc.socket, "status")
            assert "bad.mmdb" in status["geo"]["error"]
            assert status["sources"][0]["entries"] == 3
        finally:
            proc.close()


def test_a_fixed_mmdb_at_the_same_path_is_reopened_on_reload(
    fail2ban_jail: str, fail2ban_server: PrivateFail2ban, mmdbs: tuple[Path, Path]
) -> None:
    with short_tmpdir("bangd-geo-") as d:
        target = Path(d, "country.mmdb")
        target.write_text("not yet downloaded")
        proc = start_daemon(d, fail2ban_server, {"mmdb": str(target)})
        try:
            assert bangctl_json(proc.socket, "status")["geo"]["error"]
            target.write_bytes(mmdbs[0].read_bytes())  # e.g. geoipupdate ran
            assert bangctl(proc.socket, "reload").returncode == 0
            status = bangctl_json(proc.socket, "status")
            assert (status["geo"]["error"], status["geo"]["resolvers"]) == (None, ["mmdb"])
            (result,) = bangctl_json(proc.socket, "lookup", "45.10.1.1")["results"]
            assert result["country_code"] == "NL"
        finally:
            proc.close()


def test_a_lookup_of_too_many_addresses_is_refused(daemon: DaemonProcess) -> None:
    done = bangctl(daemon.socket, "lookup", *(f"45.10.{i // 250}.{i % 250 + 1}"
                                                for i in range(257)))
    assert done.returncode == 1
    assert "at most 256 addresses per lookup" in done.stderr
