"""GeoService: the resolver chain over a real SQLite cache, MMDB files written for the
session, and ip-api imitated by a local aiohttp server."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from bangd.config import GeoConfig, IpApiConfig
from bangd.errors import Fail2banUnreachable, GeoError
from bangd.geo import IpApiClient, MmdbResolver
from bangd.geo.model import GeoInfo
from bangd.services.geo import DAY, POSITIVE_TTL, GeoService, build_geo_service, make_ipapi
from bangd.store.db import Database
from bangd.store.geo import CachedGeo, GeoCacheStore
from tests.ipapi_server import Answer, IpApiImitation
from tests.mmdb_factory import (
    AsnNet,
    CountryNet,
    filler_address,
    filler_asn_nets,
    filler_country_nets,
    write_asn_db,
    write_country_db,
)

T0 = 1_700_000_000.0
NEGATIVE_TTL = 3600.0
FILLER = 200
GOOGLE = GeoInfo("8.8.8.8", "US", "United States", 15169, "Google LLC", "mmdb", False)
IP_API_ANSWERS = {
    "1.1.1.1": Answer("AU", "Australia", "AS13335 Cloudflare, Inc."),
    "8.8.8.8": Answer("ZZ", "Elsewhere", "AS1 Wrong"),
}


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Mmdbs:
    country: str
    asn: str


@pytest.fixture(scope="session")
def mmdbs(tmp_path_factory: pytest.TempPathFactory) -> Mmdbs:
    directory = tmp_path_factory.mktemp("geo-service-mmdb")
    country = [
        *filler_country_nets(FILLER),
        CountryNet("8.8.8.0/24", "US", "United States", "NA"),
        CountryNet("2a00:1450::/32", "IE", "Ireland"),
    ]
    asn = [*filler_asn_nets(FILLER), AsnNet("8.8.8.0/24", 15169, "Google LLC")]
    return Mmdbs(
        str(write_country_db(directory / "country.mmdb", country)),
        str(write_asn_db(directory / "asn.mmdb", asn)),
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["one connection", "reads on a second connection"])
async def store(db: Database, request: pytest.FixtureRequest) -> AsyncIterator[GeoCacheStore]:
    """Every behaviour holds both ways: the daemon reads the cache on a second connection
    (a resolve reads its next chunk while it writes the last), tests and tools on one."""
    if request.param == "one connection":
        yield GeoCacheStore(db)
        return
    reads = await db.reader()
    try:
        yield GeoCacheStore(db, reads)
    finally:
        await reads.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def ipapi_server() -> AsyncIterator[IpApiImitation]:
    async with IpApiImitation(IP_API_ANSWERS) as server:
        yield server
    assert server.overruns == 0


@pytest.fixture
def ipapi(http: aiohttp.ClientSession, ipapi_server: IpApiImitation) -> IpApiClient:
    return IpApiClient(http, ipapi_server.url, timeout=2.0)


ServiceFactory = Callable[..., GeoService]


@pytest.fixture
async def make_service(
    store: GeoCacheStore, clock: Clock, mmdbs: Mmdbs
) -> AsyncIterator[ServiceFactory]:
    """`make_service(mmdb=True, ipapi=None, **kw)`; every service is closed afterwards."""
    made: list[GeoService] = []

    def make(*, mmdb: bool = True, ipapi: IpApiClient | None = None, **kw: object) -> GeoService:
        resolver = MmdbResolver(mmdbs.country, mmdbs.asn) if mmdb else None
        options: dict[str, object] = {"negative_ttl": NEGATIVE_TTL, "clock": clock, **kw}
        service = GeoService(store, mmdb=resolver, ipapi=ipapi, **options)  # type: ignore[arg-type]
        made.append(service)
        return service

    yield make
    for service in made:
        await service.close()


def queried(server: IpApiImitation) -> list[object]:
    return [query for request in server.received for query in request.queries]


async def add_applied(db: Database, jail: str, entry: str, source: str) -> None:
    await db.execute(
        "INSERT INTO applied (jail, entry, source, state, owned) VALUES (?, ?, ?, 'applied', 1)",
        (jail, entry, source),
    )


# -- the chain ------------------------------------------------------------------------------


async def test_mmdb_answers_country_and_asn_and_the_answer_is_cached(
    make_service: ServiceFactory, store: GeoCacheStore
) -> None:
    found = await make_service().resolve(["8.8.8.8"])
    assert found == {"8.8.8.8": CachedGeo(GOOGLE, T0, T0, T0)}
    assert await store.get("8.8.8.8") == CachedGeo(GOOGLE, T0, T0, T0)


async def test_ipv4_mapped_ipv6_is_looked_up_as_ipv4(make_service: ServiceFactory) -> None:
    found = await make_service().resolve(["::ffff:8.8.8.8"])
    assert found["::ffff:8.8.8.8"].info.country_code == "US"


async def test_fresh_cache_row_answers_without_asking_any_resolver(
    make_service: ServiceFactory, store: GeoCacheStore, ipapi: IpApiClient,
    ipapi_server: IpApiImitation,
) -> None:
    cached = GeoInfo("1.1.1.1", "XX", "Cached", None, None, "ip-api", False)
    await store.upsert(cached, T0 - 100)
    found = await make_service(ipapi=ipapi).resolve(["1.1.1.1"])
    assert found["1.1.1.1"].info == cached
    assert ipapi_server.received == []


async def test_only_addresses_unknown_to_mmdb_are_asked_of_ip_api(
    make_service: ServiceFactory, ipapi: IpApiClient, ipapi_server: IpApiImitation
) -> None:
    found = await make_service(ipapi=ipapi).resolve(["8.8.8.8", "1.1.1.1"])
    assert queried(ipapi_server) == ["1.1.1.1"]
    assert found["8.8.8.8"].info == GOOGLE
    assert found["1.1.1.1"].info == GeoInfo(
        "1.1.1.1", "AU", "Australia", 13335, "Cloudflare, Inc.", "ip-api", False
    )


async def test_ip_api_alone_answers_when_no_mmdb_is_configured(
    make_service: ServiceFactory, ipapi: IpApiClient
) -> None:
    found = await make_service(mmdb=False, ipapi=ipapi).resolve(["1.1.1.1"])
    assert found["1.1.1.1"].info.origin == "ip-api"


async def test_address_mmdb_does_not_know_is_cached_negative_when_ip_api_is_off(
    make_service: ServiceFactory, store: GeoCacheStore
) -> None:
    await make_service().resolve(["1.1.1.1"])
    row = await store.get("1.1.1.1")
    assert row is not None
    assert (row.info.negative, row.info.origin, row.last_seen) == (True, "mmdb", T0)


async def test_address_nobody_knows_is_cached_negative_from_ip_api(
    make_service: ServiceFactory, store: GeoCacheStore, ipapi: IpApiClient
) -> None:
    await make_service(ipapi=ipapi).resolve(["10.1.2.3", "9.9.9.9"])
    private, empty = await store.get("10.1.2.3"), await store.get("9.9.9.9")
    assert private is not None and empty is not None
    assert (private.info.negative, private.info.origin) == (True, "ip-api")
    assert (empty.info.negative, empty.info.origin) == (True, "ip-api")


async def test_negative_row_is_not_asked_again_before_negative_ttl(
    make_service: ServiceFactory, clock: Clock, ipapi: IpApiClient,
    ipapi_server: IpApiImitation,
) -> None:
    service = make_service(ipapi=ipapi)
    await service.resolve(["10.1.2.3"])
    clock.now += NEGATIVE_TTL - 1
    found = await service.resolve(["10.1.2.3"])
    assert found["10.1.2.3"].info.negative
    assert len(ipapi_server.received) == 1


async def test_negative_row_is_asked_again_once_negative_ttl_has_passed(
    make_service: ServiceFactory, clock: Clock, store: GeoCacheStore, ipapi: IpApiClient,
    ipapi_server: IpApiImitation,
) -> None:
    service = make_service(ipapi=ipapi)
    await service.resolve(["10.1.2.3"])
    clock.now += NEGATIVE_TTL
    await service.resolve(["10.1.2.3"])
    assert len(ipapi_server.received) == 2
    row = await store.get("10.1.2.3")
    assert row is not None
    assert (row.first_resolved, row.last_resolved, row.last_seen) == (
        T0, T0 + NEGATIVE_TTL, T0 + NEGATIVE_TTL
    )


async def test_expired_negative_row_becomes_positive_when_a_resolver_knows_more(
    make_service: ServiceFactory, clock: Clock, store: GeoCacheStore
) -> None:
    await store.upsert_negative("8.8.8.8", "mmdb", T0 - NEGATIVE_TTL)
    found = await make_service().resolve(["8.8.8.8"])
    assert found["8.8.8.8"] == CachedGeo(GOOGLE, T0 - NEGATIVE_TTL, T0, T0)


async def test_positive_row_is_resolved_again_after_positive_ttl(
    make_service: ServiceFactory, store: GeoCacheStore
) -> None:
    old = GeoInfo("8.8.8.8", "XX", "Old answer", None, None, "mmdb", False)
    await store.upsert(old, T0 - POSITIVE_TTL)
    found = await make_service().resolve(["8.8.8.8"])
    assert found["8.8.8.8"].info == GOOGLE


async def test_positive_rows_stay_fresh_forever_without_a_positive_ttl(
    make_service: ServiceFactory, store: GeoCacheStore
) -> None:
    old = GeoInfo("8.8.8.8", "XX", "Old answer", None, None, "mmdb", False)
    await store.upsert(old, T0 - 10 * POSITIVE_TTL)
    found = await make_service(positive_ttl=None).resolve(["8.8.8.8"])
    assert found["8.8.8.8"].info == old


async def test_ip_api_http_error_means_try_later_and_nothing_is_cached(
    make_service: ServiceFactory, store: GeoCacheStore, ipapi: IpApiClient,
    ipapi_server: IpApiImitation,
) -> None:
    ipapi_server.fault_on(1, 500)
    service = make_service(ipapi=ipapi)
    found = await service.resolve(["8.8.8.8", "1.1.1.1"])
    assert list(found) == ["8.8.8.8"]
    assert await store.get("1.1.1.1") is None
    again = await service.resolve(["1.1.1.1"])
    assert again["1.1.1.1"].info.country_code == "AU"


async def test_after_one_ip_api_failure_the_same_resolve_stops_asking_it(
    make_service: ServiceFactory, ipapi: IpApiClient, ipapi_server: IpApiImitation
) -> None:
    ipapi_server.fault_on(1, 503)
    unknown = [f"7.0.{index // 250}.{index % 250 + 1}" for index in range(300)]
    found = await make_service(ipapi=ipapi).resolve(unknown)
    assert found == {}
    assert len(ipapi_server.received) == 1


async def test_stale_row_ip_api_cannot_refresh_is_kept_and_marked_seen(
    make_service: ServiceFactory, store: GeoCacheStore, ipapi: IpApiClient,
    ipapi_server: IpApiImitation,
) -> None:
    ipapi_server.fault_on(1, 500)
    await store.upsert_negative("1.1.1.1", "ip-api", T0 - NEGATIVE_TTL - 5)
    found = await make_service(ipapi=ipapi).resolve(["1.1.1.1"])
    assert found["1.1.1.1"].info.negative
    row = await store.get("1.1.1.1")
    assert row is not None
    assert (row.last_resolved, row.last_seen) == (T0 - NEGATIVE_TTL - 5, T0)


async def test_unknown_addresses_go_to_ip_api_in_batches_of_at_most_100(
    make_service: ServiceFactory, ipapi: IpApiClient, ipapi_server: IpApiImitation
) -> None:
    unknown = [f"7.0.{index // 250}.{index % 250 + 1}" for index in range(250)]
    found = await make_service(ipapi=ipapi).resolve(unknown)
    assert ipapi_server.batch_sizes == [100, 100, 50]
    assert len(found) == 250


async def test_without_resolvers_only_the_cache_answers(
    make_service: ServiceFactory, store: GeoCacheStore
) -> None:
    await store.upsert(GOOGLE, T0)
    found = await make_service(mmdb=False).resolve(["8.8.8.8", "1.1.1.1"])
    assert list(found) == ["8.8.8.8"]
    assert await store.get("1.1.1.1") is None


async def test_small_chunks_resolve_every_address(
    make_service: ServiceFactory, store: GeoCacheStore
) -> None:
    addresses = [filler_address(index) for index in range(23)]
    found = await make_service(chunk=5).resolve([*addresses, addresses[0]])
    assert sorted(found) == sorted(addresses)
    assert (await store.stats())["rows"] == 23


async def test_resolve_answers_the_rows_it_wrote_hits_and_misses_alike(
    make_service: ServiceFactory, store: GeoCacheStore, clock: Clock
) -> None:
    """Chunks of 7 over runs of one network, unmapped gaps and odd entries."""
    addresses = [filler_address(index // 4, 1 + index % 4) for index in range(40)]
    addresses += ["8.8.8.8", "8.8.8.9", "1.1.1.1", "7.0.0.1", "2a00:1450::1", "::ffff:8.8.8.7"]
    service = make_service(chunk=7)
    await service.resolve(addresses[::2])
    clock.now += 10
    found = await service.resolve(addresses)
    assert dict(found) == await store.get_many(addresses)
    assert {row.last_seen for row in found.values()} == {T0 + 10}
    assert {ip: row.first_resolved for ip, row in found.items()} == {
        ip: T0 if index % 2 == 0 else T0 + 10 for index, ip in enumerate(addresses)
    }
    assert found["8.8.8.9"].info == GeoInfo("8.8.8.9", *GOOGLE[1:])
    assert found["::ffff:8.8.8.7"].info.asn == 15169
    assert found["2a00:1450::1"].info.country_code == "IE"
    assert found["7.0.0.1"].info.negative


async def test_a_failed_write_stops_the_resolve_and_leaves_no_lookup_running(
    make_service: ServiceFactory, store: GeoCacheStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = 0
    upsert_runs = store.upsert_runs

    async def failing_second_write(*args: object, **kwargs: object) -> int:
        nonlocal writes
        writes += 1
        if writes == 2:
            raise OSError("disk full")
        return await upsert_runs(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "upsert_runs", failing_second_write)
    before = asyncio.all_tasks()
    with pytest.raises(OSError, match="disk full"):
        await make_service(chunk=5).resolve([filler_address(index) for index in range(23)])
    assert asyncio.all_tasks() == before
    assert (await store.stats())["rows"] == 5  # the first chunk, not the failed second


# -- last_seen ------------------------------------------------------------------------------


async def test_cache_hit_refreshes_last_seen(
    make_service: ServiceFactory, clock: Clock, store: GeoCacheStore
) -> None:
    service = make_service()
    await service.resolve(["8.8.8.8"])
    clock.now += 500
    found = await service.resolve(["8.8.8.8"])
    assert found["8.8.8.8"] == CachedGeo(GOOGLE, T0, T0, T0 + 500)
    assert await store.get("8.8.8.8") == CachedGeo(GOOGLE, T0, T0, T0 + 500)


async def test_resolve_without_refresh_seen_leaves_cache_hits_alone(
    make_service: ServiceFactory, clock: Clock, store: GeoCacheStore
) -> None:
    service = make_service()
    await service.resolve(["8.8.8.8"])
    clock.now += 500
    await service.resolve(["8.8.8.8"], refresh_seen=False)
    assert await store.get("8.8.8.8") == CachedGeo(GOOGLE, T0, T0, T0)


async def test_lookup_refreshes_last_seen(
    make_service: ServiceFactory, clock: Clock, store: GeoCacheStore
) -> None:
    await store.upsert(GOOGLE, T0 - 100)
    [reply] = await make_service().lookup(["8.8.8.8"])
    assert reply["last_seen"] == T0
    assert await store.get("8.8.8.8") == CachedGeo(GOOGLE, T0 - 100, T0 - 100, T0)


async def test_unchanged_import_refreshes_last_seen_of_that_sources_rows_only(
    make_service: ServiceFactory, store: GeoCacheStore, db: Database
) -> None:
    other = GeoInfo("9.9.9.9", "CH", "Switzerland", None, None, "mmdb", False)
    await store.upsert_many([GOOGLE, other], T0 - 100)
    await add_applied(db, "bl", "8.8.8.8", "drop")
    await add_applied(db, "bl", "9.9.9.9", "other")
    await make_service().on_unchanged("drop")
    assert await store.get("8.8.8.8") == CachedGeo(GOOGLE, T0 - 100, T0 - 100, T0)
    assert await store.get("9.9.9.9") == CachedGeo(other, T0 - 100, T0 - 100, T0 - 100)


# -- warming --------------------------------------------------------------------------------


async def test_on_banned_warms_the_new_single_addresses_and_skips_cidrs(
    make_service: ServiceFactory, store: GeoCacheStore
) -> None:
    service = make_service()
    await service.on_banned("drop", ["8.8.8.8", filler_address(3), "8.8.8.0/24"])
    assert await service.drain(grace=10)
    stats = await store.stats()
    assert stats["rows"] == 2
    assert await store.get("8.8.8.0/24") is None


async def test_on_banned_refreshes_last_seen_of_everything_the_source_lists(
    make_service: ServiceFactory, store: GeoCacheStore, db: Database
) -> None:
    await store.upsert(GOOGLE, T0 - 100)
    await add_applied(db, "bl", "8.8.8.8", "drop")
    await add_applied(db, "bl", filler_address(1), "drop")
    service = make_service()
    await service.on_banned("drop", [filler_address(1)])
    assert await service.drain(grace=10)
    assert await store.get("8.8.8.8") == CachedGeo(GOOGLE, T0 - 100, T0 - 100, T0)


async def test_on_banned_returns_while_warming_still_waits_for_ip_api(
    make_service: ServiceFactory, store: GeoCacheStore, ipapi: IpApiClient,
    ipapi_server: IpApiImitation,
) -> None:
    ipapi_server.fault_on(1, "stall")
    service = make_service(mmdb=False, ipapi=ipapi)
    await service.on_banned("drop", ["1.1.1.1"])
    assert not await service.drain(grace=0.2)
    await service.close()
    assert await store.get("1.1.1.1") is None


async def test_warming_errors_are_logged_and_never_raised(
    make_service: ServiceFactory, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    service = make_service()
    await db.close()
    await service.on_banned("drop", ["8.8.8.8"])
    assert await service.drain(grace=10)
    assert "geo warm source=drop failed" in caplog.text
    assert "geo last_seen refresh for source=drop failed" in caplog.text


async def test_warm_logs_a_summary_line(
    make_service: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bangd.services.geo")
    await make_service().warm("drop", ["8.8.8.8", "1.1.1.1"])
    assert "geo warm source=drop addresses=2 written=2" in caplog.text


async def test_resolving_20k_addresses_never_holds_the_event_loop_long(
    make_service: ServiceFactory, store: GeoCacheStore
) -> None:
    addresses = [filler_address(index % FILLER, 1 + index // FILLER) for index in range(20_000)]
    loop = asyncio.get_running_loop()
    worst_lag = 0.0
    done = asyncio.Event()

    async def watch_lag() -> None:
        nonlocal worst_lag
        while not done.is_set():
            before = loop.time()
            await asyncio.sleep(0.01)
            worst_lag = max(worst_lag, loop.time() - before - 0.01)

    watcher = asyncio.create_task(watch_lag())
    try:
        found = await make_service().resolve(addresses)
    finally:
        done.set()
        await watcher
    assert len(found) == 20_000
    assert (await store.stats())["rows"] == 20_000
    assert worst_lag < 0.5


# -- lookup and stats -----------------------------------------------------------------------


async def fail2ban_says(ip: str) -> list[str]:
    return ["bl2", "bl"] if ip == "8.8.8.8" else []


async def test_lookup_reports_geo_origin_age_sources_and_jails(
    make_service: ServiceFactory, clock: Clock, store: GeoCacheStore, db: Database
) -> None:
    await store.upsert(GOOGLE, T0 - 60)
    await add_applied(db, "bl", "8.8.8.8", "drop")
    await add_applied(db, "bl2", "8.8.0.0/16", "edrop")
    await add_applied(db, "bl2", "8.8.9.0/24", "edrop")
    [reply] = await make_service().lookup(["8.8.8.8"], banned_in=fail2ban_says)
    assert reply == {
        "ip": "8.8.8.8", "cached": True, "country_code": "US", "country_name": "United States",
        "asn": 15169, "as_org": "Google LLC", "origin": "mmdb", "negative": False,
        "first_resolved": T0 - 60, "last_resolved": T0 - 60, "last_seen": T0, "age": 60.0,
        "sources": [
            {"source": "edrop", "jail": "bl2", "entry": "8.8.0.0/16"},
            {"source": "drop", "jail": "bl", "entry": "8.8.8.8"},
        ],
        "banned_in": ["bl", "bl2"], "banned_in_error": None, "jail_errors": {},
    }


async def test_lookup_result_is_json_serialisable(make_service: ServiceFactory) -> None:
    replies = await make_service().lookup(["8.8.8.8", "1.1.1.1"], banned_in=fail2ban_says)
    assert json.loads(json.dumps(replies)) == replies


async def test_lookup_refuses_a_bad_address_naming_it(make_service: ServiceFactory) -> None:
    with pytest.raises(ValueError, match=r"not an IP address: '8\.8\.8\.0/24'"):
        await make_service().lookup(["8.8.8.8", "8.8.8.0/24"])


async def test_lookup_refuses_an_argument_that_is_not_text(make_service: ServiceFactory) -> None:
    with pytest.raises(ValueError, match="not an IP address: 42"):
        await make_service().lookup([42])  # type: ignore[list-item]


async def test_closed_service_refuses_to_resolve(make_service: ServiceFactory) -> None:
    service = make_service()
    await service.close()
    with pytest.raises(RuntimeError, match="after close"):
        await service.resolve(["8.8.8.8"])


async def test_lookup_writes_addresses_the_way_lists_store_them(
    make_service: ServiceFactory,
) -> None:
    replies = await make_service().lookup(["::ffff:8.8.8.8", "2A00:1450:0::1"])
    assert [(r["ip"], r["country_code"]) for r in replies] == [
        ("8.8.8.8", "US"), ("2a00:1450::1", "IE")
    ]


async def test_lookup_finds_an_ipv6_address_inside_a_listed_network(
    make_service: ServiceFactory, db: Database
) -> None:
    await add_applied(db, "bl", "2a00:1450::/32", "v6list")
    [reply] = await make_service().lookup(["2a00:1450::1"])
    assert reply["sources"] == [{"source": "v6list", "jail": "bl", "entry": "2a00:1450::/32"}]


async def test_lookup_still_answers_when_fail2ban_cannot(make_service: ServiceFactory) -> None:
    async def unreachable(ip: str) -> list[str]:
        raise Fail2banUnreachable("cannot connect to /run/fail2ban/fail2ban.sock")

    [reply] = await make_service().lookup(["8.8.8.8"], banned_in=unreachable)
    assert reply["country_code"] == "US"
    assert reply["banned_in"] is None
    assert "cannot connect" in reply["banned_in_error"]


async def test_lookup_of_an_address_no_resolver_can_answer_says_it_is_not_cached(
    make_service: ServiceFactory,
) -> None:
    [reply] = await make_service(mmdb=False).lookup(["1.1.1.1"])
    assert (reply["cached"], reply["country_code"], reply["age"]) == (False, None, None)


async def test_stats_count_rows_and_negative_rows(make_service: ServiceFactory) -> None:
    service = make_service()
    await service.resolve(["8.8.8.8", "1.1.1.1"])
    stats = await service.stats()
    assert (stats["rows"], stats["negative"], stats["by_origin"]) == (2, 1, {"mmdb": 2})
    assert stats["oldest_last_seen"] == T0


# -- building from config -------------------------------------------------------------------


async def test_build_geo_service_opens_the_configured_databases(
    mmdbs: Mmdbs, store: GeoCacheStore, clock: Clock
) -> None:
    config = GeoConfig(mmdb=mmdbs.country, asn_mmdb=mmdbs.asn)
    service = build_geo_service(config, store, None, clock)
    try:
        found = await service.resolve(["8.8.8.8"])
    finally:
        await service.close()
    assert found["8.8.8.8"].info == GOOGLE


async def test_build_geo_service_reports_a_missing_database_by_its_config_key(
    tmp_path: Path, store: GeoCacheStore
) -> None:
    config = GeoConfig(mmdb=str(tmp_path / "missing.mmdb"))
    with pytest.raises(GeoError, match=r"^geo\.mmdb: cannot open .*missing\.mmdb"):
        build_geo_service(config, store, None)


async def test_build_geo_service_asks_the_configured_ip_api_url(
    store: GeoCacheStore, http: aiohttp.ClientSession, ipapi_server: IpApiImitation
) -> None:
    config = GeoConfig(ip_api=IpApiConfig(enabled=True, url=ipapi_server.url, timeout=2.0))
    service = build_geo_service(config, store, make_ipapi(config.ip_api, http))
    try:
        found = await service.resolve(["1.1.1.1"])
    finally:
        await service.close()
    assert found["1.1.1.1"].info.country_code == "AU"


async def test_negative_ttl_comes_from_the_config(
    store: GeoCacheStore, mmdbs: Mmdbs, clock: Clock
) -> None:
    config = GeoConfig(mmdb=mmdbs.country, negative_ttl=2 * DAY)
    service = build_geo_service(config, store, None, clock)
    try:
        await service.resolve(["1.1.1.1"])
        clock.now += 2 * DAY - 1
        await store.db.execute("UPDATE geo_cache SET origin = 'marker'")
        await service.resolve(["1.1.1.1"])
    finally:
        await service.close()
    assert (await store.stats())["by_origin"] == {"marker": 1}

