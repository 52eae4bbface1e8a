"""Watching fail2ban: down is a state, not a crash; coming back triggers reconciliation."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bangd.fail2ban.client import Fail2banClient
from bangd.services.health import Fail2banMonitor
from tests.fail2ban_server import PrivateFail2ban, PrivateFail2banFactory


class Recoveries:
    def __init__(self) -> None:
        self.count = 0

    async def __call__(self) -> None:
        self.count += 1


@pytest.fixture
async def watched(
    private_fail2ban: PrivateFail2banFactory,
) -> AsyncIterator[tuple[PrivateFail2ban, Fail2banMonitor, Recoveries]]:
    server = private_fail2ban(jails=("bl",))
    client = Fail2banClient(server.socket, timeout=5)
    recoveries = Recoveries()
    monitor = Fail2banMonitor(client, on_recover=recoveries)
    yield server, monitor, recoveries
    await client.close()


async def test_a_running_fail2ban_is_reachable_with_its_version(
    watched: tuple[PrivateFail2ban, Fail2banMonitor, Recoveries],
) -> None:
    _, monitor, recoveries = watched
    health = await monitor.check()
    assert (health.reachable, health.version, health.error) == (True, "1.0.2", None)
    assert recoveries.count == 0


async def test_a_stopped_fail2ban_is_unreachable_with_the_reason(
    watched: tuple[PrivateFail2ban, Fail2banMonitor, Recoveries],
) -> None:
    server, monitor, _ = watched
    await monitor.check()
    server.stop()
    health = await monitor.check()
    assert health.reachable is False
    assert health.error is not None and server.socket in health.error


async def test_coming_back_after_an_outage_triggers_recovery(
    watched: tuple[PrivateFail2ban, Fail2banMonitor, Recoveries],
) -> None:
    server, monitor, recoveries = watched
    await monitor.check()
    server.stop()
    await monitor.check()
    server.start()
    assert (await monitor.check()).reachable is True
    assert recoveries.count == 1


async def test_a_restart_between_two_checks_triggers_recovery(
    watched: tuple[PrivateFail2ban, Fail2banMonitor, Recoveries],
) -> None:
    server, monitor, recoveries = watched
    await monitor.check()
    server.stop()
    server.start()
    assert (await monitor.check()).reachable is True
    assert recoveries.count == 1


async def test_no_recovery_while_fail2ban_stays_up(
    watched: tuple[PrivateFail2ban, Fail2banMonitor, Recoveries],
) -> None:
    _, monitor, recoveries = watched
    for _ in range(3):
        await monitor.check()
    assert recoveries.count == 0
