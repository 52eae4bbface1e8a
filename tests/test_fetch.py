"""Fetching blocklists: against a real local HTTP server and real files in tmp_path."""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bangd import __version__
from bangd.config import SourceConfig
from bangd.errors import FetchError
from bangd.sources.fetch import Fetcher, make_session
from tests.http_lists import ListServer, closed_port, gzip_bomb

LIST = b"192.0.2.1\n198.51.100.0/24\n# comment\n2001:db8::1\n"
USER_AGENT = f"bangd/{__version__}"
MIB = 1024 * 1024


class RecordingSleep:
    """Stands in for asyncio.sleep: remembers each backoff and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
async def lists() -> AsyncIterator[ListServer]:
    async with ListServer() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with make_session() as client:
        yield client


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """64 MiB of zeros as about 64 KiB of gzip; built once, it takes a moment."""
    return gzip_bomb(64 * MIB)


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def fetcher(session: aiohttp.ClientSession, sleep: RecordingSleep) -> Fetcher:
    return Fetcher(session, user_agent=USER_AGENT, retries=3, backoff=1.0, sleep=sleep)


def url_source(url: str, **overrides: Any) -> SourceConfig:
    return SourceConfig(name="testlist", jail="bl", interval=3600.0, url=url, **overrides)


def file_source(path: Path, **overrides: Any) -> SourceConfig:
    return SourceConfig(name="locallist", jail="bl", interval=3600.0, path=str(path), **overrides)


# --- HTTP -------------------------------------------------------------------------------


async def test_body_is_returned(lists: ListServer, fetcher: Fetcher) -> None:
    url = lists.serve("/drop.txt", LIST)

    fetched = await fetcher.fetch(url_source(url))

    assert fetched.body == LIST
    assert fetched.status == 200
    assert not fetched.not_modified


async def test_user_agent_is_sent(lists: ListServer, fetcher: Fetcher) -> None:
    url = lists.serve("/drop.txt", LIST)

    await fetcher.fetch(url_source(url))

    assert lists.requests("/drop.txt")[0].headers["User-Agent"] == USER_AGENT


async def test_etag_is_remembered_and_sent_back_so_an_unchanged_list_is_not_modified(
    lists: ListServer, fetcher: Fetcher
) -> None:
    url = lists.serve("/drop.txt", LIST, etag='"v1"')
    first = await fetcher.fetch(url_source(url))

    second = await fetcher.fetch(url_source(url), etag=first.etag)

    assert first.etag == '"v1"'
    assert lists.requests("/drop.txt")[1].headers["If-None-Match"] == '"v1"'
    assert second.not_modified and second.body is None and second.status == 304
    assert second.etag == '"v1"'


async def test_last_modified_is_remembered_and_sent_back_so_an_unchanged_list_is_not_modified(
    lists: ListServer, fetcher: Fetcher
) -> None:
    stamp = "Tue, 02 Jan 2024 03:04:05 GMT"
    url = lists.serve("/drop.txt", LIST, last_modified=stamp)
    first = await fetcher.fetch(url_source(url))

    second = await fetcher.fetch(url_source(url), last_modified=first.last_modified)

    assert first.last_modified == stamp
    assert lists.requests("/drop.txt")[1].headers["If-Modified-Since"] == stamp
    assert second.not_modified and second.body is None
    assert second.last_modified == stamp


async def test_changed_list_with_old_etag_returns_the_new_body(
    lists: ListServer, fetcher: Fetcher
) -> None:
    url = lists.serve("/drop.txt", b"192.0.2.9\n", etag='"v2"')

    fetched = await fetcher.fetch(url_source(url), etag='"v1"')

    assert fetched.body == b"192.0.2.9\n"
    assert fetched.etag == '"v2"'


async def test_gzip_content_encoding_is_decoded(lists: ListServer, fetcher: Fetcher) -> None:
    url = lists.serve("/drop.txt", LIST, content_encoding="gzip")

    fetched = await fetcher.fetch(url_source(url))

    assert fetched.body == LIST


async def test_gzip_content_encoding_is_decoded_when_aiohttp_decodes_it(
    lists: ListServer, sleep: RecordingSleep
) -> None:
    url = lists.serve("/drop.txt", LIST, content_encoding="gzip")
    async with aiohttp.ClientSession() as decoding_session:
        fetcher = Fetcher(decoding_session, user_agent=USER_AGENT, sleep=sleep)

        fetched = await fetcher.fetch(url_source(url))

    assert fetched.body == LIST


async def test_deflate_content_encoding_is_decoded(lists: ListServer, fetcher: Fetcher) -> None:
    url = lists.serve("/drop.txt", LIST, content_encoding="deflate")

    fetched = await fetcher.fetch(url_source(url))

    assert fetched.body == LIST


async def test_raw_deflate_content_encoding_is_decoded(
    lists: ListServer, fetcher: Fetcher
) -> None:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw = compressor.compress(LIST) + compressor.flush()
    url = lists.serve("/drop.txt", raw, headers={"Content-Encoding": "deflate"})

    fetched = await fetcher.fetch(url_source(url))

    assert fetched.body == LIST


async def test_gz_file_served_over_http_is_decompressed(
    lists: ListServer, fetcher: Fetcher
) -> None:
    url = lists.serve("/drop.txt.gz", gzip.compress(LIST), content_type="application/gzip")

    fetched = await fetcher.fetch(url_source(url))

    assert fetched.body == LIST


async def test_body_over_max_bytes_by_content_length_is_rejected(
    lists: ListServer, fetcher: Fetcher
) -> None:
    url = lists.serve("/big.txt", b"x" * 2000)

    with pytest.raises(FetchError, match=r"body exceeds max_bytes 1000: raise sources\[\]"):
        await fetcher.fetch(url_source(url, max_bytes=1000))


async def test_chunked_body_over_max_bytes_is_rejected_early(
    lists: ListServer, fetcher: Fetcher
) -> None:
    url = lists.serve("/huge.txt", size=1024 * MIB, chunked=True)

    with pytest.raises(FetchError, match="body exceeds max_bytes"):
        await fetcher.fetch(url_source(url, max_bytes=MIB))

    assert lists.bytes_sent("/huge.txt") < 64 * MIB


async def test_gzip_bomb_is_stopped_by_the_cap(
    lists: ListServer, fetcher: Fetcher, bomb: bytes
) -> None:
    url = lists.serve("/bomb.txt", bomb, headers={"Content-Encoding": "gzip"})

    with pytest.raises(FetchError, match="body exceeds max_bytes"):
        await fetcher.fetch(url_source(url, max_bytes=MIB))


async def test_gzip_bomb_is_stopped_by_the_cap_when_aiohttp_decodes_it(
    lists: ListServer, sleep: RecordingSleep, bomb: bytes
) -> None:
    url = lists.serve("/bomb.txt", bomb, headers={"Content-Encoding": "gzip"})
    async with aiohttp.ClientSession() as decoding_session:
        fetcher = Fetcher(decoding_session, user_agent=USER_AGENT, sleep=sleep)

        with pytest.raises(FetchError, match="body exceeds max_bytes"):
            await fetcher.fetch(url_source(url, max_bytes=MIB))


async def test_gz_file_bomb_is_stopped_by_the_cap(
    lists: ListServer, fetcher: Fetcher, bomb: bytes
) -> None:
    url = lists.serve("/bomb.txt.gz", bomb, content_type="application/gzip")

    with pytest.raises(FetchError, match="body exceeds max_bytes"):
        await fetcher.fetch(url_source(url, max_bytes=MIB))


async def test_truncated_gz_file_fails_with_a_clear_error(
    lists: ListServer, fetcher: Fetcher
) -> None:
    url = lists.serve("/drop.txt.gz", gzip.compress(LIST * 50)[:-20])

    with pytest.raises(FetchError, match=r"source testlist: .*gzip body is truncated"):
        await fetcher.fetch(url_source(url))


async def test_server_error_then_success_is_retried_once_after_backoff(
    lists: ListServer, fetcher: Fetcher, sleep: RecordingSleep
) -> None:
    url = lists.serve("/drop.txt", LIST, statuses=[500, 200])

    fetched = await fetcher.fetch(url_source(url))

    assert fetched.body == LIST
    assert lists.request_count("/drop.txt") == 2
    assert sleep.delays == [1.0]


async def test_persistent_server_error_fails_after_all_retries_with_growing_backoff(
    lists: ListServer, fetcher: Fetcher, sleep: RecordingSleep
) -> None:
    url = lists.serve("/drop.txt", LIST, statuses=[503])

    with pytest.raises(FetchError) as caught:
        await fetcher.fetch(url_source(url))

    assert str(caught.value).startswith(f"source testlist: HTTP 503 from {url} (4 attempts): ")
    assert lists.request_count("/drop.txt") == 4
    assert sleep.delays == [1.0, 2.0, 4.0]


async def test_not_found_fails_at_once_without_retry(
    lists: ListServer, fetcher: Fetcher, sleep: RecordingSleep
) -> None:
    url = lists.serve("/drop.txt", LIST, statuses=[404])

    with pytest.raises(FetchError) as caught:
        await fetcher.fetch(url_source(url))

    assert str(caught.value) == f"source testlist: HTTP 404 from {url}: check the url"
    assert lists.request_count("/drop.txt") == 1
    assert sleep.delays == []


async def test_too_many_requests_waits_as_long_as_retry_after_says(
    lists: ListServer, fetcher: Fetcher, sleep: RecordingSleep
) -> None:
    url = lists.serve("/drop.txt", LIST, statuses=[429, 200], headers={"Retry-After": "30"})

    fetched = await fetcher.fetch(url_source(url))

    assert fetched.body == LIST
    assert sleep.delays == [30.0]


async def test_a_retry_after_longer_than_five_minutes_is_not_waited_out_nor_ignored(
    lists: ListServer, fetcher: Fetcher, sleep: RecordingSleep
) -> None:
    url = lists.serve("/drop.txt", LIST, statuses=[429, 200], headers={"Retry-After": "86400"})

    with pytest.raises(FetchError, match=r"asked to come back in 86400s: not retried now"):
        await fetcher.fetch(url_source(url))

    assert sleep.delays == []
    assert lists.request_count("/drop.txt") == 1


async def test_server_slower_than_the_timeout_fails_after_each_attempt_times_out(
    lists: ListServer, session: aiohttp.ClientSession, sleep: RecordingSleep
) -> None:
    fetcher = Fetcher(session, user_agent=USER_AGENT, retries=1, sleep=sleep)
    url = lists.serve("/slow.txt", LIST, delay=30.0)

    with pytest.raises(FetchError, match=r"timed out after 0.2s fetching .* \(2 attempts\)"):
        await fetcher.fetch(url_source(url, timeout=0.2))

    assert lists.request_count("/slow.txt") == 2


async def test_body_that_stalls_after_the_headers_times_out(
    lists: ListServer, session: aiohttp.ClientSession, sleep: RecordingSleep
) -> None:
    fetcher = Fetcher(session, user_agent=USER_AGENT, retries=0, sleep=sleep)
    url = lists.serve("/stall.txt", LIST, body_delay=30.0)

    with pytest.raises(FetchError, match=r"timed out after 0.2s"):
        await fetcher.fetch(url_source(url, timeout=0.2))


async def test_refused_connection_is_retried_then_fails(
    fetcher: Fetcher, sleep: RecordingSleep
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/drop.txt"

    with pytest.raises(FetchError, match=r"connection to .* failed: .*\(4 attempts\): check"):
        await fetcher.fetch(url_source(url))

    assert sleep.delays == [1.0, 2.0, 4.0]


async def test_each_fetch_logs_one_debug_line(
    lists: ListServer, fetcher: Fetcher, caplog: pytest.LogCaptureFixture
) -> None:
    url = lists.serve("/drop.txt", LIST)
    caplog.set_level(logging.DEBUG, logger="bangd.sources.fetch")

    await fetcher.fetch(url_source(url))

    lines = [r.getMessage() for r in caplog.records if r.name == "bangd.sources.fetch"]
    assert len(lines) == 1
    assert lines[0].startswith(f"source=testlist status=200 bytes={len(LIST)} took=")


# --- files ------------------------------------------------------------------------------


async def test_file_is_read(tmp_path: Path, fetcher: Fetcher) -> None:
    path = tmp_path / "local.txt"
    path.write_bytes(LIST)

    fetched = await fetcher.fetch(file_source(path))

    assert fetched.body == LIST
    assert fetched.status is None
    assert fetched.etag is not None and fetched.etag.startswith("file:")


async def test_unchanged_file_is_not_modified(tmp_path: Path, fetcher: Fetcher) -> None:
    path = tmp_path / "local.txt"
    path.write_bytes(LIST)
    first = await fetcher.fetch(file_source(path))

    second = await fetcher.fetch(file_source(path), etag=first.etag)

    assert second.not_modified and second.body is None
    assert second.etag == first.etag


async def test_rewritten_file_is_read_again(tmp_path: Path, fetcher: Fetcher) -> None:
    path = tmp_path / "local.txt"
    path.write_bytes(LIST)
    first = await fetcher.fetch(file_source(path))
    path.write_bytes(b"192.0.2.77\n")
    os.utime(path, ns=(1, 1))

    second = await fetcher.fetch(file_source(path), etag=first.etag)

    assert second.body == b"192.0.2.77\n"
    assert second.etag != first.etag


async def test_missing_file_fails_naming_the_path(tmp_path: Path, fetcher: Fetcher) -> None:
    path = tmp_path / "absent.txt"

    with pytest.raises(FetchError) as caught:
        await fetcher.fetch(file_source(path))

    assert str(caught.value) == (
        f"source locallist: cannot read {path}: No such file or directory: "
        "check the path and its permissions"
    )


async def test_file_over_max_bytes_is_rejected(tmp_path: Path, fetcher: Fetcher) -> None:
    path = tmp_path / "local.txt"
    path.write_bytes(b"x" * 2000)

    with pytest.raises(FetchError, match=rf"source locallist: {path}: body exceeds max_bytes 1000"):
        await fetcher.fetch(file_source(path, max_bytes=1000))


async def test_gz_file_on_disk_is_decompressed(tmp_path: Path, fetcher: Fetcher) -> None:
    path = tmp_path / "local.txt.gz"
    path.write_bytes(gzip.compress(LIST))

    fetched = await fetcher.fetch(file_source(path))

    assert fetched.body == LIST


async def test_directory_instead_of_file_is_rejected(tmp_path: Path, fetcher: Fetcher) -> None:
    with pytest.raises(FetchError, match=r"source locallist: .*: check"):
        await fetcher.fetch(file_source(tmp_path))
