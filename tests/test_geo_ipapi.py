"""IpApiClient against a local imitation of ip-api's batch endpoint.

The imitation and the client share a FakeClock: the client's injected sleep moves the
server's time, so rate-limit windows pass instantly and every wait is recorded. Every
test ends by checking the server saw no overrun (a request after being told to stop).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bangd.errors import BangdError
from bangd.geo import GeoInfo, IpApiClient, IpApiUnavailable
from bangd.geo.ipapi import parse_as
from tests.ipapi_server import Answer, FakeClock, IpApiImitation

ANSWERS = {
    "8.8.8.8": Answer("US", "United States", "AS15169 Google LLC"),
    "1.1.1.1": Answer("AU", "Australia", "AS13335 Cloudflare, Inc."),
    "9.9.9.9": Answer("CH", "Switzerland", ""),
}


def public_addresses(count: int) -> list[str]:
    return [f"8.{index // 250}.{index % 250}.1" for index in range(count)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
def budget() -> int:
    return 15


@pytest.fixture
async def server(clock: FakeClock, budget: int) -> AsyncIterator[IpApiImitation]:
    async with IpApiImitation(ANSWERS, budget=budget, window=60.0, clock=clock) as imitation:
        yield imitation
    assert imitation.overruns == 0, "client kept sending after X-Rl: 0 or 429"


@pytest.fixture
def client(session: aiohttp.ClientSession, server: IpApiImitation, clock: FakeClock) -> IpApiClient:
    return IpApiClient(session, server.url, timeout=2.0, clock=clock, sleep=clock.sleep)


async def test_250_addresses_go_out_as_three_batches_of_at_most_100(
    client: IpApiClient, server: IpApiImitation
) -> None:
    ips = public_addresses(250)
    results = await client.resolve(ips)
    assert server.batch_sizes == [100, 100, 50]
    assert [r.ip for r in results] == ips


async def test_known_address_gets_country_and_split_as_field(client: IpApiClient) -> None:
    [google] = await client.resolve(["8.8.8.8"])
    assert google == GeoInfo("8.8.8.8", "US", "United States", 15169, "Google LLC", "ip-api", False)


async def test_empty_as_field_leaves_asn_unknown_but_keeps_the_country(
    client: IpApiClient,
) -> None:
    [quad9] = await client.resolve(["9.9.9.9"])
    assert (quad9.country_code, quad9.asn, quad9.as_org, quad9.negative) == (
        "CH",
        None,
        None,
        False,
    )


def test_as_text_is_parsed_into_number_and_organisation() -> None:
    assert parse_as("AS13335 Cloudflare, Inc.") == (13335, "Cloudflare, Inc.")
    assert parse_as("AS64512") == (64512, None)
    assert parse_as(None) == (None, None)
    assert parse_as("no number here") == (None, "no number here")


async def test_private_reserved_and_invalid_queries_come_back_negative(
    client: IpApiClient,
) -> None:
    results = await client.resolve(["10.1.2.3", "127.0.0.1", "not-an-ip"])
    assert [(r.ip, r.negative, r.origin) for r in results] == [
        ("10.1.2.3", True, "ip-api"),
        ("127.0.0.1", True, "ip-api"),
        ("not-an-ip", True, "ip-api"),
    ]


async def test_public_address_with_nothing_known_is_negative(client: IpApiClient) -> None:
    [unknown] = await client.resolve(["5.5.5.5"])
    assert unknown.negative


async def test_no_addresses_means_no_request(client: IpApiClient, server: IpApiImitation) -> None:
    assert await client.resolve([]) == []
    assert server.received == []


@pytest.mark.parametrize("budget", [2])
async def test_used_up_budget_waits_x_ttl_plus_one_before_the_next_request(
    client: IpApiClient, server: IpApiImitation, clock: FakeClock
) -> None:
    await client.resolve(public_addresses(400))
    assert server.batch_sizes == [100, 100, 100, 100]
    assert clock.sleeps == [61.0]
    assert server.received[2].at - server.received[1].at >= 60.0


@pytest.mark.parametrize("budget", [1])
async def test_budget_learned_in_one_call_is_respected_in_the_next(
    client: IpApiClient, server: IpApiImitation, clock: FakeClock
) -> None:
    await client.resolve(["8.8.8.8"])
    await client.resolve(["1.1.1.1"])
    assert clock.sleeps == [61.0]
    assert [r.status for r in server.received] == [200, 200]


@pytest.mark.parametrize("budget", [1])
async def test_concurrent_calls_share_one_budget_without_overrun(
    client: IpApiClient, server: IpApiImitation, clock: FakeClock
) -> None:
    first, second = await asyncio.gather(client.resolve(["8.8.8.8"]), client.resolve(["1.1.1.1"]))
    assert (first[0].country_code, second[0].country_code) == ("US", "AU")
    assert [r.status for r in server.received] == [200, 200]


async def test_429_backs_off_for_x_ttl_then_succeeds_without_overrunning(
    client: IpApiClient, server: IpApiImitation, clock: FakeClock
) -> None:
    server.spend(15)  # another program on this host used the whole window
    [google] = await client.resolve(["8.8.8.8"])
    assert google.country_code == "US"
    assert [r.status for r in server.received] == [429, 200]
    assert clock.sleeps == [61.0]
    assert server.overruns == 0


async def test_persistent_429_gives_up_after_bounded_retries(
    session: aiohttp.ClientSession, server: IpApiImitation, clock: FakeClock
) -> None:
    for number in range(1, 10):
        server.fault_on(number, 429)
    client = IpApiClient(session, server.url, clock=clock, sleep=clock.sleep, max_429_retries=2)
    with pytest.raises(IpApiUnavailable, match="429"):
        await client.resolve(["8.8.8.8"])
    assert len(server.received) == 3
    assert len(clock.sleeps) == 2


async def test_http_500_raises_unavailable_carrying_earlier_batches(
    client: IpApiClient, server: IpApiImitation
) -> None:
    ips = public_addresses(250)
    server.fault_on(2, 500)
    with pytest.raises(IpApiUnavailable, match="HTTP 500") as caught:
        await client.resolve(ips)
    assert isinstance(caught.value, BangdError)
    assert [r.ip for r in caught.value.partial] == ips[:100]
    assert len(server.received) == 2


async def test_reply_that_is_not_json_raises_unavailable(
    client: IpApiClient, server: IpApiImitation
) -> None:
    server.fault_on(1, "not-json")
    with pytest.raises(IpApiUnavailable, match="not JSON") as caught:
        await client.resolve(["8.8.8.8"])
    assert caught.value.partial == []


async def test_silent_server_raises_unavailable_after_the_timeout(
    session: aiohttp.ClientSession, server: IpApiImitation, clock: FakeClock
) -> None:
    server.fault_on(2, "stall")
    client = IpApiClient(session, server.url, timeout=0.2, clock=clock, sleep=clock.sleep)
    async with asyncio.timeout(5):
        with pytest.raises(IpApiUnavailable, match="did not answer") as caught:
            await client.resolve(public_addresses(150))
    assert len(caught.value.partial) == 100


async def test_unreachable_server_raises_unavailable(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    async with IpApiImitation(clock=clock) as stopped:
        url = stopped.url
    client = IpApiClient(session, url, timeout=2.0, clock=clock, sleep=clock.sleep)
    with pytest.raises(IpApiUnavailable, match="cannot reach"):
        await client.resolve(["8.8.8.8"])
