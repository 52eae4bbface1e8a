"""Every feed format imported from a real local HTTP server into a real fail2ban jail.

Sources are configured through YAML, the way README's snippets show them, so the config,
the fetcher, the parser and the importer are all on the path. Plus the ways an import used
to fail in silence: a list in another format, a list that suddenly shrank, a refused key.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bangd.config import SourceConfig, parse_config
from bangd.fail2ban.client import Fail2banClient
from bangd.services.importer import FilterSettings, Importer, ImportSummary
from bangd.sources.fetch import Fetcher, make_session
from bangd.store.db import Database
from bangd.store.imports import ImportStore
from tests.addresses import public_ipv4
from tests.fail2ban_server import PrivateFail2ban
from tests.http_lists import ListServer

FEEDS = Path(__file__).parent / "data" / "feeds"
SETTINGS = FilterSettings(allowlist=(), skip_reserved=True)


def source(url: str, extra: str = "", name: str = "feed") -> SourceConfig:
    """One source from YAML, as an operator would write it."""
    text = f"sources:\n  - name: {name}\n    url: {url}\n    interval: 1h\n    jail: bl\n"
    text += "".join(f"    {line}\n" for line in extra.strip().splitlines())
    return parse_config(text, "bangd.yaml").sources[0]


class Harness:
    def __init__(self, db: Database, f2b: Fail2banClient, fetcher: Fetcher,
                 lists: ListServer) -> None:
        self.store = ImportStore(db)
        self.f2b = f2b
        self.lists = lists
        self.importer = Importer(self.store, f2b, fetcher, batch_size=500)

    async def run(self, src: SourceConfig, *, force: bool = False) -> ImportSummary:
        return await self.importer.run(src, SETTINGS, force=force)

    async def banned(self) -> set[str]:
        return set(await self.f2b.banned("bl"))


@pytest.fixture
async def h(
    tmp_path: Path, fail2ban_jail: str, fail2ban_server: PrivateFail2ban
) -> AsyncIterator[Harness]:
    db = await Database.open(str(tmp_path / "bangd.db"))
    f2b = Fail2banClient(fail2ban_server.socket, timeout=10)

    async def no_sleep(_: float) -> None:
        return None

    async with make_session() as session, ListServer() as lists:
        fetcher = Fetcher(session, user_agent="bangd/test", retries=0, sleep=no_sleep)
        yield Harness(db, f2b, fetcher, lists)
        fetcher.close()
    await f2b.close()
    await db.close()


def expected(file: str) -> set[str]:
    return set((FEEDS / f"{file}.expected").read_text().split())


# (sample file, the lines a README snippet adds to the source)
FEED_SNIPPETS = [
    ("drop_v4.json", "format: spamhaus-json"),
    ("drop_v6.json", "format: spamhaus-json"),
    ("block.txt", "format: dshield"),
    ("ipsum.min3.txt", "format: ipsum\nmin_score: 3"),
    ("abuseipdb.min75.csv", "format: abuseipdb-csv\nmin_score: 75"),
    ("level1.p2p", "format: ranges"),
    ("crowdsec-decisions.csv", "format: crowdsec-raw"),
    ("exit-addresses", "format: tor-exits"),
]


@pytest.mark.parametrize(("file", "snippet"), FEED_SNIPPETS)
async def test_each_feed_bans_exactly_its_entries(h: Harness, file: str, snippet: str) -> None:
    url = h.lists.serve(f"/{file}", (FEEDS / file).read_bytes())
    summary = await h.run(source(url, snippet))
    assert (summary.state, summary.invalid, summary.error) == ("completed", 0, None)
    assert await h.banned() == expected(file)


async def test_abuseipdb_key_from_the_environment_is_sent(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ABUSEIPDB_KEY", "k-123-secret")
    url = h.lists.serve("/blacklist", (FEEDS / "abuseipdb.csv").read_bytes())
    src = source(url, "format: abuseipdb-csv\nheaders:\n  Key: ${ABUSEIPDB_KEY}\n"
                      "  Accept: text/plain")
    summary = await h.run(src)
    assert summary.state == "completed"
    (request,) = h.lists.requests("/blacklist")
    assert (request.headers["Key"], request.headers["Accept"]) == ("k-123-secret", "text/plain")
    assert await h.banned() == expected("abuseipdb.csv")


async def test_headers_file_values_are_sent(h: Harness, tmp_path: Path) -> None:
    (tmp_path / "keys").write_text("# CrowdSec blocklist key\nX-Api-Key: cs-456\n")
    url = h.lists.serve("/decisions", (FEEDS / "crowdsec-decisions.csv").read_bytes())
    await h.run(source(url, f"format: crowdsec-raw\nheaders_file: {tmp_path / 'keys'}"))
    assert h.lists.requests("/decisions")[0].headers["X-Api-Key"] == "cs-456"


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_get_their_own_message_without_the_key(
    h: Harness, status: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ABUSEIPDB_KEY", "k-789-secret")
    url = h.lists.serve("/blacklist", b"", statuses=(status,))
    caplog.set_level(logging.DEBUG)
    summary = await h.run(source(url, "format: abuseipdb-csv\nheaders:\n  Key: ${ABUSEIPDB_KEY}"))
    assert summary.state == "failed"
    assert summary.error == (
        f"source feed: HTTP {status} from {url}: the server refused the credentials: "
        "check headers/headers_file (Key)"
    )
    assert "k-789-secret" not in caplog.text


async def test_a_first_import_in_another_format_fails_and_names_the_format(h: Harness) -> None:
    url = h.lists.serve("/block.txt", (FEEDS / "block.txt").read_bytes())
    summary = await h.run(source(url))
    assert summary.state == "failed"
    assert summary.error is not None
    assert "no line looked like an address" in summary.error
    assert "(it looks like format: dshield)" in summary.error
    assert await h.banned() == set()


async def test_a_list_that_loses_more_than_max_drop_is_refused_until_forced(h: Harness) -> None:
    lines = public_ipv4(420)
    url = h.lists.serve("/list", "\n".join(lines).encode())
    src = source(url, "max_drop: 50%")
    await h.run(src)
    h.lists.serve("/list", "\n".join(lines[:3]).encode())
    refused = await h.run(src)
    assert refused.state == "failed"
    assert refused.error == (
        "source feed: the list shrank from 420 to 3 entries (99% dropped), more than "
        "max_drop 50%; nothing changed. If that is right: bangctl import --force feed"
    )
    assert await h.banned() == set(lines)
    forced = await h.run(src, force=True)
    assert (forced.state, forced.removed) == ("completed", 417)
    assert await h.banned() == set(lines[:3])


async def test_without_max_drop_a_shrinking_list_is_applied(h: Harness) -> None:
    url = h.lists.serve("/list", b"11.0.0.1\n11.0.0.2\n11.0.0.3\n")
    await h.run(source(url))
    h.lists.serve("/list", b"11.0.0.1\n")
    assert (await h.run(source(url))).state == "completed"


async def test_the_invalid_count_stays_visible_after_unchanged_reimports(h: Harness) -> None:
    body = b"11.0.0.1\nbogus\n11.0.0.2\nnot-an-address\n"
    url = h.lists.serve("/list", body, etag='"v1"')
    src = source(url)
    first = await h.run(src)
    again = await h.run(src)
    third = await h.run(src)
    assert [(s.state, s.invalid) for s in (first, again, third)] == [
        ("completed", 2), ("unchanged", 2), ("unchanged", 2)
    ]
    runs = await h.store.runs("feed", 10)
    assert [r.invalid for r in runs] == [2, 2, 2]


async def test_escape_sequences_in_a_list_are_escaped_in_the_summary_and_log(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    url = h.lists.serve("/list", b"11.0.0.1\n\x1b]2;pwned\x07\x1b[1A\n")
    summary = await h.run(source(url))
    assert summary.invalid_lines == [(2, "\\x1b]2;pwned\\x07\\x1b[1A")]
    assert "\x1b" not in caplog.text


async def test_changing_the_format_rereads_an_unchanged_download(h: Harness) -> None:
    url = h.lists.serve("/list", b"11.0.0.1\n11.0.0.2-11.0.0.3\n", etag='"v1"')
    first = await h.run(source(url))
    assert (first.state, first.invalid) == ("completed", 1)
    second = await h.run(source(url, "format: ranges"))
    assert (second.state, second.invalid) == ("completed", 0)
    assert await h.banned() == {"11.0.0.1", "11.0.0.2/31"}
