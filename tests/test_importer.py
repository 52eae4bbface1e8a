"""Blocklist imports against a real fail2ban-server: idempotent, delta-synced, crash-safe."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bangd import children
from bangd.config import SourceConfig
from bangd.fail2ban.client import Fail2banClient
from bangd.services.importer import FilterSettings, Importer, ImportSummary
from bangd.services.reconcile import Reconciler
from bangd.sources import parse_process
from bangd.sources.fetch import Fetcher, make_session
from bangd.store import imports
from bangd.store.db import Database
from bangd.store.imports import ImportStore
from tests.fail2ban_server import PrivateFail2ban
from tests.http_lists import ListServer

NO_FILTER = FilterSettings(allowlist=(), skip_reserved=False)


class Harness:
    """An importer wired to a real database, a real fail2ban jail and real fetching."""

    def __init__(self, tmp: Path, db: Database, f2b: Fail2banClient, fetcher: Fetcher) -> None:
        self.tmp = tmp
        self.db = db
        self.f2b = f2b
        self.store = ImportStore(db)
        self.importer = Importer(self.store, f2b, fetcher, batch_size=3)
        self.reconciler = Reconciler(self.store, f2b, batch_size=3)

    def file_source(self, name: str, lines: list[str], jail: str = "bl", **kw: Any) -> SourceConfig:
        path = self.tmp / f"{name}.txt"
        path.write_text("\n".join(lines) + "\n")
        return SourceConfig(name=name, jail=jail, interval=3600, path=str(path), **kw)

    async def run(
        self, source: SourceConfig, settings: FilterSettings = NO_FILTER, **kw: Any
    ) -> ImportSummary:
        return await self.importer.run(source, settings, **kw)

    async def banned(self, jail: str = "bl") -> set[str]:
        return set(await self.f2b.banned(jail))

    async def total_banned(self, jail: str = "bl") -> int:
        """fail2ban's own counter of bans it performed: proves what was (not) sent."""
        return (await self.f2b.jail_status(jail)).total_banned


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with make_session() as s:
        yield s


@pytest.fixture
async def h(
    tmp_path: Path, fail2ban_jail: str, fail2ban_server: PrivateFail2ban,
    session: aiohttp.ClientSession,
) -> AsyncIterator[Harness]:
    db = await Database.open(str(tmp_path / "bangd.db"))
    f2b = Fail2banClient(fail2ban_server.socket, timeout=10)

    async def no_sleep(_: float) -> None:
        return None

    fetcher = Fetcher(session, user_agent="bangd/test", retries=2, sleep=no_sleep)
    yield Harness(tmp_path, db, f2b, fetcher)
    await f2b.close()
    await db.close()


LIST_A = ["203.0.113.1", "203.0.113.2", "198.51.100.0/24", "2001:db8::1", "203.0.113.3"]


async def test_first_import_bans_every_entry_and_records_a_completed_run(h: Harness) -> None:
    summary = await h.run(h.file_source("a", LIST_A))
    assert (summary.state, summary.added, summary.removed) == ("completed", 5, 0)
    assert await h.banned() == set(LIST_A)
    runs = await h.store.runs("a", 10)
    assert [(r.state, r.added, r.entries) for r in runs] == [("completed", 5, 5)]


async def test_reimport_of_identical_content_sends_nothing(h: Harness) -> None:
    src = h.file_source("a", LIST_A)
    await h.run(src)
    before = await h.total_banned()
    src = h.file_source("a", LIST_A)  # rewritten: same bytes, new mtime
    summary = await h.run(src)
    assert summary.state == "unchanged"
    assert await h.total_banned() == before


async def test_reordered_content_with_comments_is_unchanged(h: Harness) -> None:
    await h.run(h.file_source("a", LIST_A))
    before = await h.total_banned()
    shuffled = ["# header", *reversed(LIST_A), "203.0.113.1 ; again", ""]
    summary = await h.run(h.file_source("a", shuffled))
    assert summary.state == "unchanged"
    assert await h.total_banned() == before


async def test_changed_list_bans_and_unbans_exactly_the_difference(h: Harness) -> None:
    await h.run(h.file_source("a", LIST_A))
    before = await h.total_banned()
    new = ["203.0.113.1", "198.51.100.0/24", "203.0.113.50", "203.0.113.51"]
    summary = await h.run(h.file_source("a", new))
    assert (summary.state, summary.added, summary.removed) == ("completed", 2, 3)
    assert await h.banned() == set(new)
    assert await h.total_banned() == before + 2


async def test_an_entry_two_sources_share_stays_banned_until_both_drop_it(h: Harness) -> None:
    await h.run(h.file_source("a", ["203.0.113.7", "203.0.113.8"]))
    await h.run(h.file_source("b", ["203.0.113.7", "203.0.113.9"]))
    await h.run(h.file_source("a", ["203.0.113.8"]))
    assert await h.banned() == {"203.0.113.7", "203.0.113.8", "203.0.113.9"}
    await h.run(h.file_source("b", ["203.0.113.9"]))
    assert await h.banned() == {"203.0.113.8", "203.0.113.9"}


async def test_an_entry_shared_with_another_source_is_not_sent_again(h: Harness) -> None:
    await h.run(h.file_source("a", ["203.0.113.7"]))
    before = await h.total_banned()
    summary = await h.run(h.file_source("b", ["203.0.113.7"]))
    assert (summary.added, summary.sent) == (1, 0)
    assert await h.total_banned() == before


async def test_bangd_never_unbans_what_it_did_not_ban(h: Harness) -> None:
    await h.f2b.ban("bl", ["203.0.113.66"])  # an operator's manual ban
    await h.run(h.file_source("a", ["203.0.113.66", "203.0.113.67"]))
    await h.run(h.file_source("a", ["203.0.113.67"]))
    assert await h.banned() == {"203.0.113.66", "203.0.113.67"}


async def test_allowlisted_entries_and_lists_containing_them_are_skipped(h: Harness) -> None:
    settings = FilterSettings(
        allowlist=(ipaddress.ip_network("203.0.113.5/32"),), skip_reserved=False
    )
    summary = await h.run(
        h.file_source("a", ["203.0.113.5", "203.0.113.0/24", "198.51.100.1"]), settings
    )
    assert (summary.added, summary.skipped, summary.skipped_allowlist) == (1, 2, 2)
    assert await h.banned() == {"198.51.100.1"}


async def test_an_allowlist_change_reapplies_unchanged_content(h: Harness) -> None:
    src = h.file_source("a", ["203.0.113.5", "198.51.100.1"])
    await h.run(src)
    settings = FilterSettings(
        allowlist=(ipaddress.ip_network("203.0.113.5/32"),), skip_reserved=False
    )
    summary = await h.run(src, settings)
    assert (summary.state, summary.removed) == ("completed", 1)
    assert await h.banned() == {"198.51.100.1"}


async def test_a_list_over_max_entries_fails_and_applies_nothing(h: Harness) -> None:
    summary = await h.run(h.file_source("a", LIST_A, max_entries=4))
    assert summary.state == "failed"
    assert summary.error is not None and "more than max_entries 4" in summary.error
    assert await h.banned() == set()
    runs = await h.store.runs("a", 1)
    assert runs[0].state == "failed" and "max_entries" in (runs[0].error or "")


async def test_a_big_list_parsed_in_a_child_process_is_applied_like_any_other(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parse_process, "PROCESS_MIN_BYTES", 0)
    summary = await h.run(h.file_source("a", [*LIST_A, "not-an-ip"]))
    assert (summary.state, summary.added, summary.invalid) == ("completed", 5, 1)
    assert await h.banned() == set(LIST_A)


@pytest.mark.parametrize("piece", [2, imports.ENTRIES_PIECE])
async def test_a_changed_big_list_is_compared_in_its_parser_process_and_applied_as_a_delta(
    h: Harness, monkeypatch: pytest.MonkeyPatch, piece: int
) -> None:
    """What is applied reaches the parser process a piece at a time, as it is read."""
    monkeypatch.setattr(parse_process, "PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(imports, "ENTRIES_PIECE", piece)
    await h.run(h.file_source("a", LIST_A))
    changed = [*LIST_A[1:], "203.0.113.99"]
    summary = await h.run(h.file_source("a", changed))
    assert (summary.state, summary.added, summary.removed) == ("completed", 1, 1)
    assert await h.banned() == set(changed)
    assert await h.store.entries_of("a", "bl") == sorted(changed)


async def test_a_parser_process_that_dies_fails_the_run_and_bans_nothing(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parse_process, "PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(children, "_BOOT", "import os; os.kill(os.getpid(), 9)")
    summary = await h.run(h.file_source("a", LIST_A))
    assert (summary.state, summary.error) == (
        "failed", "the parser process was killed by SIGKILL (out of memory?); nothing applied"
    )
    assert await h.banned() == set()


async def test_invalid_lines_are_counted_and_never_sent(h: Harness) -> None:
    summary = await h.run(h.file_source("a", ["203.0.113.1", "not-an-ip", "999.1.1.1"]))
    assert (summary.added, summary.invalid) == (1, 2)
    assert summary.invalid_lines == [(2, "not-an-ip"), (3, "999.1.1.1")]
    assert await h.banned() == {"203.0.113.1"}


async def test_http_304_is_unchanged_and_nothing_is_downloaded_again(h: Harness) -> None:
    async with ListServer() as lists:
        url = lists.serve("/l.txt", b"203.0.113.1\n", etag='"v1"')
        src = SourceConfig(name="web", jail="bl", interval=3600, url=url)
        assert (await h.run(src)).state == "completed"
        summary = await h.run(src)
        assert summary.state == "unchanged"
        assert lists.requests("/l.txt")[-1].headers["If-None-Match"] == '"v1"'


async def test_http_500_then_success_completes(h: Harness) -> None:
    async with ListServer() as lists:
        url = lists.serve("/l.txt", b"203.0.113.1\n", statuses=(500, 200))
        summary = await h.run(SourceConfig(name="web", jail="bl", interval=3600, url=url))
        assert summary.state == "completed"
        assert lists.request_count("/l.txt") == 2


async def test_a_failed_fetch_is_recorded_and_keeps_earlier_bans(h: Harness) -> None:
    async with ListServer() as lists:
        url = lists.serve("/l.txt", b"203.0.113.1\n")
        src = SourceConfig(name="web", jail="bl", interval=3600, url=url)
        await h.run(src)
        lists.serve("/l.txt", b"", statuses=(404,))
        summary = await h.run(src, force=True)
    assert summary.state == "failed"
    assert summary.error is not None and "404" in summary.error
    assert await h.banned() == {"203.0.113.1"}


async def test_a_timed_out_download_fails_the_run(h: Harness) -> None:
    async with ListServer() as lists:
        url = lists.serve("/l.txt", b"203.0.113.1\n", delay=5)
        src = SourceConfig(name="web", jail="bl", interval=3600, url=url, timeout=0.3)
        summary = await h.run(src)
    assert summary.state == "failed"
    assert summary.error is not None and "timed out" in summary.error


async def test_an_oversize_body_fails_the_run(h: Harness) -> None:
    async with ListServer() as lists:
        url = lists.serve("/l.txt", b"203.0.113.1\n" * 1000)
        src = SourceConfig(name="web", jail="bl", interval=3600, url=url, max_bytes=100)
        summary = await h.run(src)
    assert summary.state == "failed"
    assert summary.error is not None and "max_bytes" in summary.error


async def test_after_a_crash_pending_entries_that_arrived_are_not_sent_again(
    h: Harness,
) -> None:
    src = h.file_source("a", ["203.0.113.1", "203.0.113.2", "203.0.113.3"])
    # What a crash between "pending" and "applied" leaves: rows pending, one batch sent.
    await h.store.record(
        "a", "bl", [("203.0.113.1", "pending", 1), ("203.0.113.2", "pending", 1)], None
    )
    await h.f2b.ban("bl", ["203.0.113.1"])
    before = await h.total_banned()
    summary = await h.run(src)
    assert summary.state == "completed"
    assert await h.banned() == {"203.0.113.1", "203.0.113.2", "203.0.113.3"}
    assert await h.total_banned() == before + 2  # .2 and .3 only; .1 was not resent


async def test_a_run_left_running_is_marked_interrupted(h: Harness) -> None:
    run_id = await h.store.start_run("a", "bl", "timer", 1.0)
    assert await h.store.interrupt_running(2.0) == ["a"]
    runs = await h.store.runs("a", 1)
    assert (runs[0].id, runs[0].state) == (run_id, "interrupted")


async def test_withdrawing_a_source_unbans_only_what_no_other_source_lists(h: Harness) -> None:
    await h.run(h.file_source("a", ["203.0.113.1", "203.0.113.2"]))
    await h.run(h.file_source("b", ["203.0.113.2"]))
    assert await h.importer.withdraw_source("a") == 2
    assert await h.banned() == {"203.0.113.2"}
    assert await h.store.source("a") is None


async def test_moving_a_source_to_another_jail_moves_its_entries(h: Harness) -> None:
    await h.run(h.file_source("a", ["203.0.113.1"]))
    summary = await h.run(h.file_source("a", ["203.0.113.1"], jail="bl2"))
    assert summary.state == "completed"
    assert await h.banned("bl") == set()
    assert await h.banned("bl2") == {"203.0.113.1"}


async def test_dry_run_reports_the_difference_and_changes_nothing(h: Harness) -> None:
    await h.run(h.file_source("a", ["203.0.113.1", "203.0.113.2"]))
    before_runs = await h.store.runs("a", 10)
    summary = await h.run(h.file_source("a", ["203.0.113.2", "203.0.113.3"]), dry_run=True)
    assert (summary.state, summary.added, summary.removed) == ("would-change", 1, 1)
    assert (summary.would_add, summary.would_remove) == (["203.0.113.3"], ["203.0.113.1"])
    assert await h.banned() == {"203.0.113.1", "203.0.113.2"}
    assert await h.store.runs("a", 10) == before_runs


async def test_force_rebans_what_fail2ban_lost_even_when_unchanged(h: Harness) -> None:
    src = h.file_source("a", LIST_A)
    await h.run(src)
    await h.f2b.unban("bl", ["203.0.113.1", "2001:db8::1"])
    summary = await h.run(src, force=True)
    assert (summary.state, summary.sent) == ("completed", 2)
    assert await h.banned() == set(LIST_A)


async def test_reconcile_rebans_everything_unbanned_behind_bangds_back(
    h: Harness, fail2ban_server: PrivateFail2ban,
) -> None:
    await h.run(h.file_source("a", LIST_A))
    await h.run(h.file_source("b", ["203.0.113.9"], jail="bl2"))
    assert fail2ban_server.command(["unban", "--all"])[0] == 0
    reports = {r.jail: r for r in await h.reconciler.run()}
    assert (reports["bl"].expected, reports["bl"].missing, reports["bl"].rebanned) == (5, 5, 5)
    assert reports["bl2"].rebanned == 1
    assert await h.banned() == set(LIST_A)
    assert await h.banned("bl2") == {"203.0.113.9"}
    again = await h.reconciler.run("bl")
    assert (again[0].missing, again[0].present) == (0, 5)




async def test_after_a_crash_an_entry_that_arrived_counts_as_bangds_own_ban(h: Harness) -> None:
    await h.store.record("a", "bl", [("203.0.113.1", "pending", 1)], None)
    await h.f2b.ban("bl", ["203.0.113.1"])
    await h.run(h.file_source("a", ["203.0.113.1", "203.0.113.2"]))
    await h.run(h.file_source("a", ["203.0.113.2"]))
    assert await h.banned() == {"203.0.113.2"}


async def test_every_run_records_the_content_hash(h: Harness) -> None:
    src = h.file_source("a", LIST_A)
    first = await h.run(src)
    await h.run(h.file_source("a", list(reversed(LIST_A))))
    runs = await h.store.runs("a", 10)
    assert [r.state for r in runs] == ["unchanged", "completed"]
    assert first.content_hash is not None and len(first.content_hash) == 64
    assert [r.content_hash for r in runs] == [first.content_hash, first.content_hash]
    assert runs[0].raw_hash != runs[1].raw_hash


async def test_a_list_that_suddenly_has_no_entries_fails_and_keeps_the_bans(h: Harness) -> None:
    await h.run(h.file_source("a", LIST_A))
    summary = await h.run(h.file_source("a", ["<html>Service Unavailable</html>"]))
    assert summary.state == "failed"
    assert summary.error is not None and "no valid entries" in summary.error
    assert "--force" in summary.error
    assert await h.banned() == set(LIST_A)


async def test_force_applies_a_list_that_became_empty(h: Harness) -> None:
    await h.run(h.file_source("a", LIST_A))
    summary = await h.run(h.file_source("a", ["# nothing listed today"]), force=True)
    assert (summary.state, summary.removed) == ("completed", 5)
    assert await h.banned() == set()


async def test_moving_to_a_jail_fail2ban_lacks_fails_and_keeps_the_old_bans(h: Harness) -> None:
    await h.run(h.file_source("a", ["203.0.113.1"]))
    summary = await h.run(h.file_source("a", ["203.0.113.1"], jail="nosuchjail"))
    assert summary.state == "failed"
    assert summary.error is not None and "nosuchjail" in summary.error
    assert await h.banned() == {"203.0.113.1"}
    assert await h.store.entries_of("a", "bl") == ["203.0.113.1"]


async def test_withdrawing_from_a_jail_that_was_deleted_forgets_its_entries(
    h: Harness,
) -> None:
    await h.store.record("gone", "deletedjail", [("203.0.113.1", "applied", 1)], None)
    assert await h.importer.withdraw_source("gone") == 1
    assert await h.store.jails_of("gone") == []


async def test_a_crashed_runs_rows_are_settled_even_when_the_next_fetch_fails(
    h: Harness,
) -> None:
    await h.store.record("a", "bl", [("203.0.113.1", "pending", 1)], None)
    await h.f2b.ban("bl", ["203.0.113.1"])
    missing = SourceConfig(name="a", jail="bl", interval=3600, path=str(h.tmp / "none.txt"))
    summary = await h.run(missing)
    assert summary.state == "failed"
    assert await h.store.unfinished("a") == []
    assert await h.store.entries_of("a", "bl") == ["203.0.113.1"]


async def test_reconcile_does_not_reban_what_the_allowlist_now_covers(h: Harness) -> None:
    await h.run(h.file_source("a", ["203.0.113.1", "203.0.113.2"]))
    await h.f2b.unban("bl", ["203.0.113.1", "203.0.113.2"])
    settings = FilterSettings(
        allowlist=(ipaddress.ip_network("203.0.113.1/32"),), skip_reserved=False
    )
    (report,) = await h.reconciler.run("bl", settings)
    assert (report.missing, report.rebanned) == (1, 1)
    assert await h.banned() == {"203.0.113.2"}


async def test_recover_all_settles_every_source(h: Harness) -> None:
    await h.store.record("a", "bl", [("203.0.113.1", "pending", 1)], None)
    await h.store.record("b", "bl", [("203.0.113.2", "pending", 1)], None)
    await h.f2b.ban("bl", ["203.0.113.2"])
    await h.importer.recover_all()
    assert await h.store.entries_of("a", "bl") == []
    assert await h.store.entries_of("b", "bl") == ["203.0.113.2"]


# -- the fold: confirmed batches become rows of `applied` after the run -------------------


async def pending_batches(db: Database) -> list[tuple[str, int]]:
    return [(r["source"], r["confirmed"]) for r in await db.fetchall(
        "SELECT source, confirmed FROM pending_batches ORDER BY id")]


async def test_a_finished_import_leaves_its_entries_in_applied_and_no_batch(h: Harness) -> None:
    await h.run(h.file_source("a", LIST_A))
    assert await pending_batches(h.db) == []
    assert await h.db.fetchval("SELECT COUNT(*) FROM applied WHERE source = 'a'") == 5


async def test_confirmed_entries_count_as_applied_before_they_are_folded(h: Harness) -> None:
    batch = await h.store.record_pending("a", "bl", ["203.0.113.1", "203.0.113.2"], 1)
    assert batch is not None
    await h.store.confirm(batch)
    assert await pending_batches(h.db) == [("a", 1)]
    assert await h.store.jails() == ["bl"]  # the reports' view, without folding
    assert await h.store.jails_of("a") == ["bl"]
    assert await pending_batches(h.db) == [("a", 1)]
    assert await h.store.entries_of("a", "bl") == ["203.0.113.1", "203.0.113.2"]
    assert await pending_batches(h.db) == []  # the read folded them first


async def test_a_sources_entries_are_read_in_pieces_in_key_order_each_after_the_last(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imports, "ENTRIES_PIECE", 2)
    mine = ["203.0.113.1", "203.0.113.2", "198.51.100.0/24", "2001:db8::1", "203.0.113.3"]
    for source, jail, entries in [("a", "bl", mine), ("b", "bl", ["203.0.113.20"]),
                                  ("a", "other", ["192.0.2.1"])]:
        batch = await h.store.record_pending(source, jail, entries, 1)
        assert batch is not None
        await h.store.confirm(batch)  # folded by the read
    read = [piece async for piece in h.store.entries_pieces("a", "bl")]
    assert read == [b"198.51.100.0/24\n2001:db8::1\n", b"203.0.113.1\n203.0.113.2\n",
                    b"203.0.113.3\n"]
    assert await h.store.entries_of("a", "bl") == sorted(mine)
    assert [piece async for piece in h.store.entries_pieces("c", "bl")] == []


async def test_a_stop_before_the_fold_loses_nothing_and_recovers_nothing(h: Harness) -> None:
    batch = await h.store.record_pending("a", "bl", ["203.0.113.1"], 1)
    assert batch is not None
    await h.f2b.ban("bl", ["203.0.113.1"])
    await h.store.confirm(batch)
    restarted = ImportStore(h.db)  # what the next bangd opens
    assert await restarted.unfinished("a") == []  # confirmed: nothing to ask fail2ban
    assert await restarted.held_by_others("bl", "b") == {"203.0.113.1": 1}
    listing = await restarted.applied_listing(jail=None, source=None, limit=10)
    assert [(e.entry, e.sources) for e in listing] == [("203.0.113.1", ("a",))]


async def test_a_source_dropping_an_entry_still_folded_unbans_it(h: Harness) -> None:
    batch = await h.store.record_pending("a", "bl", ["203.0.113.1", "203.0.113.2"], 1)
    assert batch is not None
    await h.f2b.ban("bl", ["203.0.113.1", "203.0.113.2"])
    await h.store.confirm(batch)
    await h.run(h.file_source("a", ["203.0.113.2"]))
    assert await h.banned() == {"203.0.113.2"}


async def test_another_store_over_the_database_sees_entries_confirmed_after_its_fold(
    h: Harness,
) -> None:
    geo_side = ImportStore(h.db)  # e.g. the geo service's own view of the ledger
    assert await geo_side.entries_of("a", "bl") == []  # folds: nothing yet
    batch = await h.store.record_pending("a", "bl", ["203.0.113.1"], 1)
    assert batch is not None
    await h.store.confirm(batch)
    assert await geo_side.entries_of("a", "bl") == ["203.0.113.1"]
