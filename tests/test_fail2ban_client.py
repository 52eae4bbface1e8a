"""Fail2banClient against a real private fail2ban-server, and against a fake one for faults."""

from __future__ import annotations

import asyncio
import os
import pickle
import re

import pytest

from bangd.errors import (
    Fail2banCommandFailed,
    Fail2banProtocolError,
    Fail2banTimeout,
    Fail2banUnreachable,
    UnknownJail,
)
from bangd.fail2ban.client import Fail2banClient, JailStatus
from tests.fail2ban_server import PrivateFail2ban, PrivateFail2banFactory
from tests.fake_fail2ban import (
    FakeFail2ban,
    RunsCommand,
    count_of_addresses,
    reply_with,
    silent,
)

NOBODY = 65534
TEN_ADDRESSES = [f"192.0.2.{n}" for n in range(10)]


# --- real server -------------------------------------------------------------------------


async def test_ping_succeeds(client: Fail2banClient) -> None:
    await client.ping()


async def test_version_is_fail2bans_version(client: Fail2banClient) -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", await client.version())


async def test_jails_lists_the_running_jails(client: Fail2banClient) -> None:
    assert await client.jails() == ["bl", "bl2"]


async def test_jail_status_counts_current_and_total_bans(
    client: Fail2banClient, fail2ban_jail: str
) -> None:
    before = await client.jail_status(fail2ban_jail)

    await client.ban(fail2ban_jail, ["192.0.2.1", "192.0.2.2"])

    assert await client.jail_status(fail2ban_jail) == JailStatus(
        currently_banned=2, total_banned=before.total_banned + 2
    )


async def test_ban_counts_only_newly_banned_addresses(
    client: Fail2banClient, fail2ban_jail: str
) -> None:
    assert await client.ban(fail2ban_jail, ["192.0.2.1", "192.0.2.2"]) == 2
    assert await client.ban(fail2ban_jail, ["192.0.2.2", "192.0.2.3"]) == 1


async def test_ban_accepts_networks_and_ipv6(client: Fail2banClient, fail2ban_jail: str) -> None:
    assert await client.ban(fail2ban_jail, ["198.51.100.0/24", "2001:db8::1"]) == 2
    assert sorted(await client.banned(fail2ban_jail)) == ["198.51.100.0/24", "2001:db8::1"]


async def test_unban_counts_only_addresses_that_were_banned(
    client: Fail2banClient, fail2ban_jail: str
) -> None:
    await client.ban(fail2ban_jail, ["192.0.2.1", "192.0.2.2"])

    assert await client.unban(fail2ban_jail, ["192.0.2.1", "192.0.2.9"]) == 1
    assert await client.banned(fail2ban_jail) == ["192.0.2.2"]


async def test_banned_lists_every_banned_address(
    client: Fail2banClient, fail2ban_jail: str
) -> None:
    await client.ban(fail2ban_jail, TEN_ADDRESSES)

    assert sorted(await client.banned(fail2ban_jail)) == sorted(TEN_ADDRESSES)


async def test_ban_in_small_batches_bans_everything(
    fail2ban_server: PrivateFail2ban, fail2ban_jail: str
) -> None:
    f2b = Fail2banClient(fail2ban_server.socket, batch_size=3)
    try:
        assert await f2b.ban(fail2ban_jail, TEN_ADDRESSES) == 10
        assert sorted(await f2b.banned(fail2ban_jail)) == sorted(TEN_ADDRESSES)
        assert await f2b.unban(fail2ban_jail, TEN_ADDRESSES) == 10
    finally:
        await f2b.close()


async def test_ban_of_nothing_returns_zero(client: Fail2banClient, fail2ban_jail: str) -> None:
    assert await client.ban(fail2ban_jail, []) == 0


async def test_concurrent_calls_share_one_connection_safely(
    client: Fail2banClient, fail2ban_jail: str
) -> None:
    bans = [client.ban(fail2ban_jail, [f"192.0.2.{n}"]) for n in range(20)]
    statuses = [client.jail_status(fail2ban_jail) for _ in range(20)]

    results = await asyncio.gather(*bans, *statuses)

    assert results[:20] == [1] * 20
    assert all(isinstance(status, JailStatus) for status in results[20:])


@pytest.mark.parametrize("method", ["jail_status", "banned"])
async def test_unknown_jail_raises_unknown_jail(client: Fail2banClient, method: str) -> None:
    with pytest.raises(UnknownJail) as caught:
        await getattr(client, method)("nosuchjail")

    assert caught.value.jail == "nosuchjail"


async def test_ban_into_unknown_jail_raises_unknown_jail(client: Fail2banClient) -> None:
    with pytest.raises(UnknownJail, match="nosuchjail"):
        await client.ban("nosuchjail", ["192.0.2.1"])


async def test_command_rejected_by_fail2ban_raises_command_failed(
    client: Fail2banClient,
) -> None:
    with pytest.raises(Fail2banCommandFailed) as caught:
        await client.command(["frobnicate"])

    assert (caught.value.name, caught.value.message) == ("Exception", "Invalid command")


async def test_client_keeps_working_after_a_remote_error(client: Fail2banClient) -> None:
    with pytest.raises(UnknownJail):
        await client.banned("nosuchjail")

    await client.ping()


@pytest.mark.parametrize(
    "bad", ["example.com", "-1.2.3.4", "1.2.3.4 5.6.7.8", "1.2.3.4\n5.6.7.8", "", "--all"]
)
async def test_non_ip_entry_raises_value_error_before_anything_is_sent(
    client: Fail2banClient, fail2ban_jail: str, bad: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        await client.ban(fail2ban_jail, ["192.0.2.1", bad])

    assert await client.banned(fail2ban_jail) == []


async def test_unban_of_a_host_name_is_refused(client: Fail2banClient, fail2ban_jail: str) -> None:
    with pytest.raises(ValueError, match="localhost"):
        await client.unban(fail2ban_jail, ["localhost"])


async def test_a_single_string_instead_of_a_list_is_refused(
    client: Fail2banClient, fail2ban_jail: str
) -> None:
    with pytest.raises(TypeError):
        await client.ban(fail2ban_jail, "192.0.2.1")


async def test_jail_name_looking_like_an_option_is_refused(client: Fail2banClient) -> None:
    with pytest.raises(ValueError, match="jail"):
        await client.banned("--all")


async def test_missing_socket_raises_unreachable(short_dir: str) -> None:
    f2b = Fail2banClient(os.path.join(short_dir, "none.sock"))

    with pytest.raises(Fail2banUnreachable, match="systemctl status fail2ban"):
        await f2b.ping()


async def test_socket_owned_by_a_disallowed_uid_is_refused(
    fail2ban_server: PrivateFail2ban,
) -> None:
    f2b = Fail2banClient(fail2ban_server.socket, allowed_uids={NOBODY})

    with pytest.raises(Fail2banUnreachable, match="owned by uid 0"):
        await f2b.ping()

    assert not f2b.connected


async def test_socket_chowned_to_nobody_is_refused(
    private_fail2ban: PrivateFail2banFactory,
) -> None:
    server = private_fail2ban()
    os.chown(server.socket, NOBODY, -1)
    f2b = Fail2banClient(server.socket)

    with pytest.raises(Fail2banUnreachable, match=f"owned by uid {NOBODY}"):
        await f2b.ping()


async def test_socket_served_by_a_disallowed_process_is_refused(
    private_fail2ban: PrivateFail2banFactory,
) -> None:
    """The file's owner can be changed; the listening process's uid is checked too."""
    server = private_fail2ban()
    os.chown(server.socket, NOBODY, -1)
    f2b = Fail2banClient(server.socket, allowed_uids={NOBODY})

    with pytest.raises(Fail2banUnreachable, match="served by uid 0"):
        await f2b.ping()

    assert not f2b.connected


async def test_server_stopping_mid_connection_raises_unreachable_then_client_reconnects(
    private_fail2ban: PrivateFail2banFactory,
) -> None:
    server = private_fail2ban()
    f2b = Fail2banClient(server.socket, timeout=5.0)
    await f2b.ping()
    assert f2b.connected

    await asyncio.to_thread(server.stop)
    with pytest.raises(Fail2banUnreachable):
        await f2b.ping()

    await asyncio.to_thread(server.start)
    await f2b.ping()
    await f2b.close()


async def test_close_is_idempotent_and_the_next_call_reconnects(client: Fail2banClient) -> None:
    await client.ping()

    await client.close()
    await client.close()
    assert not client.connected

    await client.ping()
    assert client.connected


async def test_close_leaves_no_error_in_fail2bans_log(
    private_fail2ban: PrivateFail2banFactory,
) -> None:
    server = private_fail2ban()
    f2b = Fail2banClient(server.socket)
    await f2b.ping()

    await f2b.close()
    await f2b.ping()  # a request after the polite close goes through a new connection
    await f2b.close()

    assert "ERROR" not in server.log_text()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout": 0},
        {"timeout": -1.0},
        {"batch_size": 0},
        {"batch_size": 2.5},
        {"allowed_uids": []},
        {"allowed_uids": [-1]},
    ],
)
def test_constructor_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Fail2banClient("/run/fail2ban/fail2ban.sock", **kwargs)  # type: ignore[arg-type]


def test_constructor_rejects_an_empty_socket_path() -> None:
    with pytest.raises(ValueError):
        Fail2banClient("")


# --- faults, injected with a fake server -------------------------------------------------


async def test_garbage_reply_raises_protocol_error_and_next_call_reconnects(
    short_dir: str,
) -> None:
    socket_path = os.path.join(short_dir, "f.sock")
    async with FakeFail2ban(socket_path, reply_with(b"not a pickle")) as fake:
        f2b = Fail2banClient(socket_path, timeout=2.0)

        with pytest.raises(Fail2banProtocolError):
            await f2b.ping()
        with pytest.raises(Fail2banProtocolError):
            await f2b.ping()

        assert fake.connections == 2
        await f2b.close()


async def test_server_closing_mid_reply_raises_unreachable(short_dir: str) -> None:
    socket_path = os.path.join(short_dir, "f.sock")
    reply = pickle.dumps((0, "pong"), 5)
    async with FakeFail2ban(socket_path, reply_with(reply), truncate_to=len(reply) // 2):
        f2b = Fail2banClient(socket_path, timeout=2.0)

        with pytest.raises(Fail2banUnreachable, match="broke during 'ping'"):
            await f2b.ping()

        assert not f2b.connected


async def test_server_that_never_answers_raises_timeout(short_dir: str) -> None:
    socket_path = os.path.join(short_dir, "f.sock")
    async with FakeFail2ban(socket_path, silent):
        f2b = Fail2banClient(socket_path, timeout=0.2)

        async with asyncio.timeout(5.0):
            with pytest.raises(Fail2banTimeout, match=r"within 0\.2 s"):
                await f2b.ping()

        assert not f2b.connected


async def test_forbidden_pickle_reply_is_refused_and_nothing_runs(short_dir: str) -> None:
    socket_path = os.path.join(short_dir, "f.sock")
    witness = os.path.join(short_dir, "ran")
    reply = pickle.dumps((0, RunsCommand(f"touch {witness}")), 5)
    async with FakeFail2ban(socket_path, reply_with(reply)):
        f2b = Fail2banClient(socket_path, timeout=2.0)

        with pytest.raises(Fail2banProtocolError):
            await f2b.ping()

    assert not await asyncio.to_thread(os.path.exists, witness)


async def test_ban_sends_one_command_per_batch(short_dir: str) -> None:
    socket_path = os.path.join(short_dir, "f.sock")
    async with FakeFail2ban(socket_path, count_of_addresses) as fake:
        f2b = Fail2banClient(socket_path, batch_size=3)

        assert await f2b.ban("bl", TEN_ADDRESSES) == 10

        assert [len(cmd) - 3 for cmd in fake.requests] == [3, 3, 3, 1]
        assert all(cmd[:3] == ["set", "bl", "banip"] for cmd in fake.requests)
        await f2b.close()


async def test_many_calls_reuse_one_connection(short_dir: str) -> None:
    socket_path = os.path.join(short_dir, "f.sock")
    async with FakeFail2ban(socket_path, count_of_addresses) as fake:
        f2b = Fail2banClient(socket_path, batch_size=1)

        await f2b.ban("bl", TEN_ADDRESSES)

        assert (fake.connections, len(fake.requests)) == (1, 10)
        await f2b.close()


async def test_invalid_entry_late_in_the_list_sends_nothing(short_dir: str) -> None:
    socket_path = os.path.join(short_dir, "f.sock")
    async with FakeFail2ban(socket_path, count_of_addresses) as fake:
        f2b = Fail2banClient(socket_path, batch_size=3)

        with pytest.raises(ValueError, match=r"host\.example"):
            await f2b.ban("bl", [*TEN_ADDRESSES, "host.example"])

        assert (fake.connections, fake.requests) == (0, [])


async def test_cancelled_call_drops_the_connection(short_dir: str) -> None:
    """A reply arriving after cancellation must not be read as the next call's reply."""
    socket_path = os.path.join(short_dir, "f.sock")
    async with FakeFail2ban(socket_path, silent) as fake:
        f2b = Fail2banClient(socket_path, timeout=5.0)
        call = asyncio.create_task(f2b.ping())
        async with asyncio.timeout(5.0):
            await fake.request_seen.wait()

        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

        assert not f2b.connected
