"""Which of some entries fail2ban holds: none asked for in an empty jail, read here for
small ban lists, by a child process for big ones, with the same answers and failures said
in one line."""

from __future__ import annotations

import os
import pickle

import pytest

from bangd import children
from bangd.errors import BanListUnread, Fail2banProtocolError, UnknownJail
from bangd.fail2ban import banned_process
from bangd.fail2ban.client import Fail2banClient
from tests.fake_fail2ban import Answer, FakeFail2ban

BANNED = ["192.0.2.1", "192.0.2.3", "2001:db8::1"]
ASKED = ["192.0.2.3", "192.0.2.2", "2001:db8::1", "198.51.100.7"]  # not in key order


@pytest.fixture
def in_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ban list, however small, is read by a child process."""
    monkeypatch.setattr(banned_process, "CHILD_MIN_BANS", 1)


def ban_list_reply(raw: bytes, bans: int = len(BANNED)) -> Answer:
    """fail2ban's count of bans, then `raw` as its ban list."""
    def answer(cmd: list[str]) -> bytes:
        if cmd[0] == "status":
            status = [["Filter", []], ["Actions", [["Currently banned", bans],
                                                   ["Total banned", bans]]]]
            return pickle.dumps((0, status), pickle.HIGHEST_PROTOCOL)
        return raw
    return answer


@pytest.mark.parametrize("child_min", [10**9, 1], ids=["read-here", "read-by-a-child"])
async def test_the_held_entries_come_in_the_order_asked(
    client: Fail2banClient, fail2ban_jail: str, child_min: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same answers whether the ban list is read in the daemon or by a child."""
    monkeypatch.setattr(banned_process, "CHILD_MIN_BANS", child_min)
    await client.ban(fail2ban_jail, BANNED)
    assert await client.banned_among(fail2ban_jail, ASKED) == ["192.0.2.3", "2001:db8::1"]
    assert await client.banned_among(fail2ban_jail, ASKED, held=False) == [
        "192.0.2.2", "198.51.100.7"
    ]
    assert await client.banned_among(fail2ban_jail, []) == []


async def test_an_empty_jail_holds_none_of_them(
    client: Fail2banClient, fail2ban_jail: str
) -> None:
    assert await client.banned_among(fail2ban_jail, ASKED) == []
    assert await client.banned_among(fail2ban_jail, ASKED, held=False) == ASKED


async def test_an_unknown_jail_is_told_as_such(client: Fail2banClient) -> None:
    with pytest.raises(UnknownJail):
        await client.banned_among("nosuchjail", ASKED)
    await client.ping()


async def test_an_empty_jail_is_answered_from_its_count_alone(short_dir: str) -> None:
    """A first import asks for no ban list at all."""
    socket_path = os.path.join(short_dir, "f.sock")
    async with FakeFail2ban(socket_path, ban_list_reply(b"not asked", bans=0)) as fake:
        f2b = Fail2banClient(socket_path, timeout=2.0)
        assert await f2b.banned_among("bl", ASKED) == []
        assert await f2b.banned_among("bl", ASKED, held=False) == ASKED
        await f2b.close()
    assert fake.requests == [["status", "bl", "short"]] * 2


@pytest.mark.usefixtures("in_child")
async def test_an_error_reply_is_told_alike_by_a_child_and_here(
    short_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fail2ban answering an error that is none of its exceptions: one message either way."""
    socket_path = os.path.join(short_dir, "f.sock")
    reply = pickle.dumps((1, "no such thing"), pickle.HIGHEST_PROTOCOL)
    said = []
    async with FakeFail2ban(socket_path, ban_list_reply(reply)):
        f2b = Fail2banClient(socket_path, timeout=2.0)
        for child_min in (1, 10**9):
            monkeypatch.setattr(banned_process, "CHILD_MIN_BANS", child_min)
            with pytest.raises(Exception) as failed:
                await f2b.banned_among("bl", ASKED)
            said.append((type(failed.value), str(failed.value)))
        await f2b.close()
    assert said[0] == said[1]
    assert "unexpected error reply 'no such thing'" in said[0][1]


@pytest.mark.usefixtures("in_child")
async def test_a_child_that_hangs_is_stopped_and_the_read_fails_in_one_line(
    client: Fail2banClient, fail2ban_jail: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await client.ban(fail2ban_jail, BANNED)
    monkeypatch.setattr(children, "STEP_LIMIT", 0.5)
    monkeypatch.setattr(children, "_BOOT", "import time; time.sleep(600)")
    with pytest.raises(BanListUnread) as failed:
        await client.banned_among(fail2ban_jail, ASKED)
    assert str(failed.value) == (
        f"fail2ban's `get {fail2ban_jail} banned` came but could not be read: the ban list "
        "reader process did not answer within 0.5 s and was stopped"
    )
    await client.ping()


@pytest.mark.usefixtures("in_child")
async def test_a_child_that_dies_fails_the_read_in_one_line(
    client: Fail2banClient, fail2ban_jail: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await client.ban(fail2ban_jail, BANNED)
    monkeypatch.setattr(children, "_BOOT", "import os; os.kill(os.getpid(), 9)")
    with pytest.raises(BanListUnread) as failed:
        await client.banned_among(fail2ban_jail, ASKED)
    assert str(failed.value) == (
        f"fail2ban's `get {fail2ban_jail} banned` came but could not be read: the ban list "
        "reader process was killed by SIGKILL (out of memory?)"
    )


@pytest.mark.usefixtures("in_child")
async def test_a_ban_list_of_something_else_is_refused_by_the_child(short_dir: str) -> None:
    """fail2ban-shaped, but not strings: the child refuses it as the daemon would."""
    socket_path = os.path.join(short_dir, "f.sock")
    reply = pickle.dumps((0, ["192.0.2.1", 7]), pickle.HIGHEST_PROTOCOL)
    async with FakeFail2ban(socket_path, ban_list_reply(reply)):
        f2b = Fail2banClient(socket_path, timeout=2.0)
        with pytest.raises(Fail2banProtocolError, match=r"^fail2ban's `get bl banned` is not a"):
            await f2b.banned_among("bl", ASKED)
        await f2b.close()


async def test_a_reply_split_anywhere_is_read_whole(short_dir: str) -> None:
    """The end marker may arrive cut in two; everything before it is the reply."""
    socket_path = os.path.join(short_dir, "f.sock")
    reply = pickle.dumps((0, BANNED), pickle.HIGHEST_PROTOCOL)
    async with FakeFail2ban(socket_path, ban_list_reply(reply), chunk=5):
        f2b = Fail2banClient(socket_path, timeout=2.0)
        assert await f2b.banned_among("bl", ASKED) == ["192.0.2.3", "2001:db8::1"]
        await f2b.close()
