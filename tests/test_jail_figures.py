"""fail2ban's jail figures for status: asked now, except while bangd itself is banning."""

from __future__ import annotations

import asyncio

from bangd.fail2ban.client import Fail2banClient
from bangd.services.jailfigures import REFRESH_AFTER, JailFigures
from tests.fail2ban_server import PrivateFail2ban


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_figures_are_asked_now_when_bangd_is_not_banning(
    fail2ban_server: PrivateFail2ban, fail2ban_jail: str
) -> None:
    client = Fail2banClient(fail2ban_server.socket, timeout=10)
    figures = JailFigures(client, busy=lambda: False)
    try:
        empty = await figures.of(fail2ban_jail)
        assert empty.status is not None and empty.status.currently_banned == 0
        await client.ban(fail2ban_jail, ["203.0.113.7"])
        latest = await figures.of(fail2ban_jail)
        assert latest.status is not None and latest.status.currently_banned == 1
        assert latest.actions == [] and latest.error is None
    finally:
        await client.close()


async def test_while_bangd_bans_the_last_answer_is_shown_and_refreshed_behind(
    fail2ban_server: PrivateFail2ban, fail2ban_jail: str
) -> None:
    client = Fail2banClient(fail2ban_server.socket, timeout=10)
    busy, clock = asyncio.Lock(), Clock()
    figures = JailFigures(client, busy=busy.locked, clock=clock)
    try:
        first = await figures.of(fail2ban_jail)
        await client.ban(fail2ban_jail, ["203.0.113.7"])
        async with busy:
            assert await figures.of(fail2ban_jail) is first  # fresh enough: no question
            clock.now += REFRESH_AFTER
            assert await figures.of(fail2ban_jail) is first  # stale: asked behind, not waited
            await figures.close()  # (a refresh is under way; close waits it out or stops it)
        latest = await figures.of(fail2ban_jail)
        assert latest.status is not None and latest.status.currently_banned == 1
        assert latest.as_of == clock.now
    finally:
        await client.close()


async def test_an_unknown_jail_is_an_error_in_the_figures_not_an_exception(
    fail2ban_server: PrivateFail2ban,
) -> None:
    client = Fail2banClient(fail2ban_server.socket, timeout=10)
    try:
        gone = await JailFigures(client, busy=lambda: False).of("nosuchjail")
        assert gone.status is None and gone.error is not None and "nosuchjail" in gone.error
    finally:
        await client.close()
