"""Shared fixtures. fail2ban: one real private server per test session, a clean jail per
test, and a factory for tests that need a server of their own (to stop it, or at DEBUG).
SQLite: a fresh, migrated bangd database per test. `client`: a Fail2banClient on the session
server (modules that mean another client define their own); `short_dir`: a directory whose
path is short enough for a Unix socket."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from bangd.fail2ban.client import Fail2banClient
from bangd.store.db import Database
from tests.fail2ban_server import PrivateFail2ban, PrivateFail2banFactory
from tests.netns import NetnsPair

SESSION_JAILS = ("bl", "bl2")


def _started(jails: Sequence[str], loglevel: str) -> PrivateFail2ban:
    server = PrivateFail2ban(jails=jails, loglevel=loglevel)
    server.start()
    return server


def _discard(server: PrivateFail2ban) -> None:
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def fail2ban_server() -> Iterator[PrivateFail2ban]:
    """A real fail2ban-server with jails "bl" and "bl2" (no filter, no firewall action)."""
    server = _started(SESSION_JAILS, "NOTICE")
    try:
        yield server
    finally:
        _discard(server)


@pytest.fixture
async def client(fail2ban_server: PrivateFail2ban) -> AsyncIterator[Fail2banClient]:
    f2b = Fail2banClient(fail2ban_server.socket, timeout=5.0)
    try:
        yield f2b
    finally:
        await f2b.close()


@pytest.fixture
def short_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="f2bfake-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fail2ban_jail(fail2ban_server: PrivateFail2ban) -> str:
    """The session server's jail "bl", emptied first; every other session jail is emptied too.

    `unban --all` clears every jail and fail2ban's database in one command without
    resolving anything (`set JAIL unbanip --all` would look '--all' up in DNS). Counters
    such as 'Total banned' keep counting across tests: compare before and after.
    """
    code, result = fail2ban_server.command(["unban", "--all"])
    assert code == 0, f"`unban --all` failed on the test fail2ban-server: {result!r}"
    for jail in SESSION_JAILS:
        code, banned = fail2ban_server.command(["get", jail, "banned"])
        assert (code, banned) == (0, []), f"jail {jail} still holds {banned!r} after unban --all"
    return SESSION_JAILS[0]


@pytest.fixture
def private_fail2ban() -> Iterator[PrivateFail2banFactory]:
    """Factory: `private_fail2ban(jails=("bl",), loglevel="NOTICE")` starts a server that
    this test alone uses (it may stop or restart it); all are stopped afterwards."""
    servers: list[PrivateFail2ban] = []

    def start(jails: Sequence[str] = ("bl",), loglevel: str = "NOTICE") -> PrivateFail2ban:
        server = _started(jails, loglevel)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in reversed(servers):
            _discard(server)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A fresh bangd database in the test's directory, migrated to the latest schema."""
    database = await Database.open(str(tmp_path / "bangd.db"))
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def netns() -> Iterator[NetnsPair]:
    """A fresh pair of network namespaces joined by a veth pair (tests/netns.py)."""
    pair = NetnsPair()
    try:
        yield pair
    finally:
        pair.close()
