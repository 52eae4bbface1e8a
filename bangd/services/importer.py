"""Blocklist imports: fetch, parse, and apply only the difference to fail2ban, exactly once.

Idempotency rests on two records. `import_runs` says what each run saw (content hash) and
how it ended; unchanged content is recognised from an HTTP 304, the raw bytes' digest or
the normalised set's digest, cheapest first, and sends nothing. `applied` says which
entries each source has in which jail, and is written in step with fail2ban by the apply
protocol (apply.py): so no address is ever sent twice for the same source, and a re-run
sends only what is still missing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..config import TEXT_FORMAT, IPNetwork, SourceConfig
from ..errors import BangdError, Fail2banError, FetchError
from ..sources.fetch import Fetched
from ..sources.parse import raw_digest
from ..sources.parse_process import Parse, ParseFailed, parse_off_loop
from ..store.imports import ImportStore, RunEnd, SourceRow
from .apply import Applier, Fail2ban

log = logging.getLogger(__name__)


class Fetch(Protocol):
    async def fetch(
        self, source: SourceConfig, *, etag: str | None = None, last_modified: str | None = None
    ) -> Fetched: ...


PREVIEW = 20  # addresses a dry run lists per direction


class ImportRefused(BangdError):
    """The list itself is unacceptable (e.g. over max_entries): nothing was applied."""


@dataclass(frozen=True)
class FilterSettings:
    """What shapes the entry set besides the list: a change means re-applying."""

    allowlist: tuple[IPNetwork, ...]
    skip_reserved: bool
    exempt: tuple[IPNetwork, ...] = ()  # runtime exemptions (bangctl allow) now standing

    @property
    def screen(self) -> tuple[IPNetwork, ...]:
        """What the parser keeps out: the config's allowlist and the exemptions."""
        return self.allowlist + self.exempt

    def digest(self, jail: str) -> str:
        text = "|".join(
            [jail, str(self.skip_reserved), *sorted(str(n) for n in self.allowlist)]
            + (["exempt", *sorted(str(n) for n in self.exempt)] if self.exempt else [])
        )
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class ImportSummary:
    source: str
    jail: str
    state: str  # completed | unchanged | failed | (dry runs) would-change | unchanged
    added: int = 0
    removed: int = 0
    invalid: int = 0
    skipped_allowlist: int = 0
    skipped_reserved: int = 0
    entries: int | None = None
    content_hash: str | None = None  # digest of the normalised entry set
    raw_hash: str | None = None  # digest of the bytes as fetched
    sent: int = 0
    took: float = 0.0
    error: str | None = None
    run_id: int | None = None
    dry_run: bool = False
    invalid_lines: list[tuple[int, str]] = field(default_factory=list)
    would_add: list[str] = field(default_factory=list)
    would_remove: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return self.skipped_allowlist + self.skipped_reserved

    def as_dict(self) -> dict[str, Any]:
        data = {
            "source": self.source, "jail": self.jail, "state": self.state,
            "added": self.added, "removed": self.removed, "invalid": self.invalid,
            "skipped": self.skipped, "skipped_allowlist": self.skipped_allowlist,
            "skipped_reserved": self.skipped_reserved, "entries": self.entries,
            "sent": self.sent, "took": round(self.took, 3), "error": self.error,
            "run_id": self.run_id, "dry_run": self.dry_run,
            "content_hash": self.content_hash,
            "invalid_lines": [list(x) for x in self.invalid_lines],
        }
        if self.dry_run:
            data["would_add"] = self.would_add
            data["would_remove"] = self.would_remove
        return data

    def log_line(self) -> str:
        line = (
            f"source={self.source} jail={self.jail} state={self.state} added={self.added} "
            f"removed={self.removed} invalid={self.invalid} skipped={self.skipped} "
            f"entries={self.entries if self.entries is not None else '-'} "
            f"took={self.took:.2f}s"
        )
        if self.dry_run:
            line += " dry_run=true"
        if self.error:
            line += f" error={self.error}"
        return line


OnBanned = Callable[[str, Sequence[str]], Awaitable[None]]  # (source, entries added)
OnUnchanged = Callable[[str], Awaitable[None]]


class Importer:
    def __init__(
        self,
        store: ImportStore,
        fail2ban: Fail2ban,
        fetcher: Fetch,
        *,
        batch_size: int = 1000,
        apply_lock: asyncio.Lock | None = None,
        clock: Callable[[], float] = time.time,
        on_banned: OnBanned | None = None,
        on_unchanged: OnUnchanged | None = None,
        applier: Applier | None = None,
    ) -> None:
        """`applier` is the daemon's shared one; without it, one is made from `fail2ban`,
        `batch_size` and `apply_lock`."""
        self.store = store
        self.fetcher = fetcher
        self.applier = applier if applier is not None else Applier(
            store, fail2ban, batch_size=batch_size, lock=apply_lock
        )
        self.clock = clock
        self.on_banned = on_banned
        self.on_unchanged = on_unchanged
        # Source name -> {"phase", "done", "total"} while its import (dry runs too) runs:
        # what `sources` shows and `bangctl import` polls.
        self.progress: dict[str, dict[str, Any]] = {}

    def _phase(self, name: str, phase: str) -> None:
        self.progress[name] = {"phase": phase}

    def _counter(self, name: str, phase: str) -> Callable[[int, int], None]:
        def update(done: int, total: int) -> None:
            self.progress[name] = {"phase": phase, "done": done, "total": total}
        return update

    async def run(
        self,
        source: SourceConfig,
        settings: FilterSettings,
        *,
        force: bool = False,
        dry_run: bool = False,
        trigger: str = "timer",
    ) -> ImportSummary:
        """Import one source; always returns a summary, `failed` ones included."""
        started, t0 = self.clock(), time.monotonic()
        summary = ImportSummary(source.name, source.jail, "running", dry_run=dry_run)
        run_id = None
        if not dry_run:
            run_id = await self.store.start_run(
                source.name, source.jail, "force" if force else trigger, started
            )
        summary.run_id = run_id
        self._phase(source.name, "fetching")
        try:
            await self._import(source, settings, summary, force=force)
        except asyncio.CancelledError:
            summary.state = "interrupted"
            summary.error = "bangd stopped during this run"
            if run_id is not None:
                await asyncio.shield(self._finish(summary, run_id))
            raise
        except (FetchError, Fail2banError, ImportRefused, ParseFailed, ValueError) as exc:
            summary.state, summary.error = "failed", str(exc)
        except Exception as exc:
            log.exception("source=%s import crashed", source.name)
            summary.state, summary.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            self.progress.pop(source.name, None)
        summary.took = time.monotonic() - t0
        if run_id is not None:
            await self._finish(summary, run_id)
        level = logging.ERROR if summary.state == "failed" else logging.INFO
        log.log(level, "%s", summary.log_line())
        for number, text in summary.invalid_lines:
            log.warning("source=%s invalid line %d: %s", source.name, number, text)
        await self._fold(source.name)
        return summary

    async def _fold(self, name: str) -> None:
        """Once the run has ended (and fail2ban has nothing more of it to do), its confirmed
        batches become rows of `applied`: ~1.4 s of CPU per million entries, which during
        the bans slowed fail2ban by as much. Anything that reads `applied` before this is
        done folds first, so nothing ever sees less than what was applied."""
        started = time.monotonic()
        try:
            folded = await self.store.fold()
        except Exception as exc:  # the run is over and recorded; the next read folds again
            log.warning("source=%s ledger fold failed, retried on the next read: %s", name, exc)
            return
        if folded:
            log.info("source=%s ledger folded=%d took=%.2fs", name, folded,
                     time.monotonic() - started)

    async def _finish(self, summary: ImportSummary, run_id: int) -> None:
        await self.store.finish_run(run_id, RunEnd(
            state=summary.state, finished=self.clock(), entries=summary.entries,
            added=summary.added, removed=summary.removed, invalid=summary.invalid,
            skipped=summary.skipped, error=summary.error, content_hash=summary.content_hash,
            raw_hash=summary.raw_hash,
        ))

    async def _import(
        self, source: SourceConfig, settings: FilterSettings, summary: ImportSummary,
        *, force: bool,
    ) -> None:
        prev = await self.store.source(source.name)
        settings_digest = settings.digest(source.jail)
        if source.format != TEXT_FORMAT:  # the same bytes read another way are a change
            settings_digest = hashlib.sha256(
                f"{settings_digest}|{source.format!r}".encode()
            ).hexdigest()
        unfinished = await self.store.unfinished(source.name)
        if unfinished and not summary.dry_run:
            # Settle a crashed run first, whatever this run then finds: rows left pending
            # would hide the entry from other sources and from reconciliation. Read again
            # under the lock: reconciliation may have settled them meanwhile.
            async with self.applier.lock:
                await self.applier.recover(source.name, await self.store.unfinished(source.name))
        shortcuts = (
            not force
            and not unfinished
            and prev is not None
            and prev.settings_digest == settings_digest
            and prev.jail == source.jail
        )
        fetched = await self.fetcher.fetch(
            source,
            etag=prev.etag if shortcuts and prev else None,
            last_modified=prev.last_modified if shortcuts and prev else None,
        )
        if fetched.not_modified or fetched.body is None:
            await self._unchanged(source, prev, fetched, None, summary)
            return
        self._phase(source.name, "parsing")
        body = fetched.body
        fetched = dataclasses.replace(fetched, body=None)  # 14 MiB per 1M lines: drop it soon
        # hashlib lets go of the GIL, but in the loop it would still hold the loop ~30 ms.
        body_digest = await asyncio.to_thread(raw_digest, body)
        summary.raw_hash = body_digest
        if shortcuts and prev is not None and prev.raw_digest == body_digest:
            await self._unchanged(source, prev, fetched, body_digest, summary)
            return
        parse = await parse_off_loop(
            body,
            allowlist=settings.screen, skip_reserved=settings.skip_reserved,
            feed=source.format,
        )
        del body
        async with parse:
            await self._judge(source, parse, prev, fetched, body_digest, summary,
                              settings_digest=settings_digest, shortcuts=shortcuts, force=force)

    async def _judge(
        self, source: SourceConfig, parse: Parse, prev: SourceRow | None, fetched: Fetched,
        body_digest: str, summary: ImportSummary, *, settings_digest: str, shortcuts: bool,
        force: bool,
    ) -> None:
        """Refuse the parse, find it unchanged, or apply it."""
        parsed = parse.findings
        summary.invalid = parsed.invalid
        summary.invalid_lines = list(parsed.invalid_lines)
        summary.skipped_allowlist = parsed.skipped_allowlist
        summary.skipped_reserved = parsed.skipped_reserved
        summary.entries = parsed.count
        summary.content_hash = parsed.digest
        if parsed.count > source.max_entries:
            raise ImportRefused(
                f"source {source.name}: list has {parsed.count} entries, more than "
                f"max_entries {source.max_entries}; nothing applied. Raise "
                "sources[].max_entries if the list is really that big"
            )
        had_entries = prev is not None and bool(prev.entries)
        if parsed.unreadable and not force and not had_entries:
            # A list in a format this source is not set to read must never look like success.
            raise ImportRefused(f"source {source.name}: {parsed.format_hint()}; nothing applied")
        if parsed.guessed_format and parsed.invalid >= parsed.count:
            log.warning("source=%s invalid=%d hint=these lines look like format: %s",
                        source.name, parsed.invalid, parsed.guessed_format)
        if (
            source.max_drop is not None and prev is not None and prev.entries and not force
            and prev.jail == source.jail
            and parsed.count < prev.entries * (1 - source.max_drop)
        ):
            dropped = prev.entries - parsed.count
            raise ImportRefused(
                f"source {source.name}: the list shrank from {prev.entries} to "
                f"{parsed.count} entries ({100 * dropped // prev.entries}% dropped), "
                f"more than max_drop {source.max_drop:.0%}; nothing changed. If that is "
                f"right: bangctl import --force {source.name}"
            )
        if not parsed.count and prev is not None and prev.entries and not force:
            # An error page served with 200, or a truncated mirror, must not lift every ban.
            raise ImportRefused(
                f"source {source.name}: the new list has no valid entries "
                f"({parsed.invalid} invalid lines) but {prev.entries} are applied; nothing "
                f"changed. "
                + (f"{parsed.format_hint()}. " if parsed.unreadable else "")
                + f"If the list really is empty now: bangctl import --force {source.name}"
            )
        if shortcuts and prev is not None and prev.entries_digest == parsed.digest:
            await self._unchanged(source, prev, fetched, body_digest, summary)
            return
        if summary.dry_run:
            await self._plan(source, parse, summary)
            return
        async with self.applier.lock:
            newly_banned = await self._apply(source, parse, summary)
            if force:
                summary.sent += await self._reapply_missing(source, summary.run_id)
        await self.store.save_source(
            name=source.name, jail=source.jail, location=source.location,
            etag=fetched.etag, last_modified=fetched.last_modified,
            raw_digest=body_digest, entries_digest=parsed.digest,
            settings_digest=settings_digest, entries=parsed.count,
            last_success=self.clock(),
        )
        summary.state = "completed"
        if self.on_banned is not None:
            # Called even with nothing new: the hook also marks what the source still
            # lists as seen, so a list that only shrank keeps its geo rows fresh.
            await self.on_banned(source.name, newly_banned)

    async def _unchanged(
        self, source: SourceConfig, prev: SourceRow | None, fetched: Fetched,
        body_digest: str | None, summary: ImportSummary,
    ) -> None:
        summary.state = "unchanged"
        for run in await self.store.runs(source.name, 5):
            # The last real parse's invalid count stays visible: unchanged runs carry it on.
            if run.id != summary.run_id and run.state in ("completed", "unchanged"):
                summary.invalid = run.invalid
                break
        if prev is not None:
            summary.entries = prev.entries
            summary.content_hash = prev.entries_digest
            summary.raw_hash = body_digest or prev.raw_digest
        if summary.dry_run or prev is None:
            return
        await self.store.touch_source(
            source.name,
            etag=fetched.etag or prev.etag,
            last_modified=fetched.last_modified or prev.last_modified,
            raw_digest=body_digest or prev.raw_digest,
            last_success=self.clock(),
        )
        if self.on_unchanged is not None:
            await self.on_unchanged(source.name)

    async def _plan(self, source: SourceConfig, parse: Parse, summary: ImportSummary) -> None:
        to_add, to_remove = await parse.delta(
            self.store.entries_pieces(source.name, source.jail)
        )
        summary.added, summary.removed = len(to_add), len(to_remove)
        summary.would_add = list(to_add[:PREVIEW])
        summary.would_remove = list(to_remove[:PREVIEW])
        summary.state = "would-change" if to_add or to_remove else "unchanged"
        for old_jail in await self.store.jails_of(source.name):
            if old_jail != source.jail:
                summary.removed += len(await self.store.entries_of(source.name, old_jail))

    async def _apply(
        self, source: SourceConfig, parse: Parse, summary: ImportSummary
    ) -> Sequence[str]:
        """Apply the delta; return the entries added (networks too: the hook skips them)."""
        name, jail = source.name, source.jail
        to_add, to_remove = await parse.delta(self.store.entries_pieces(name, jail))
        # New bans first: if the jail is missing (UnknownJail) nothing has been lifted yet,
        # and a source moving to another jail is never left with no bans at all.
        self._phase(name, "applying")
        if to_add:
            summary.sent = await self.applier.add(
                name, jail, to_add, summary.run_id, self._counter(name, "applying")
            )
        self._phase(name, "removing")
        for old_jail in await self.store.jails_of(name):
            if old_jail != jail:
                summary.removed += await self.applier.remove_all(
                    name, old_jail, self._counter(name, "removing")
                )
        if to_remove:
            summary.removed += await self.applier.remove(
                name, jail, to_remove, self._counter(name, "removing")
            )
        summary.added = len(to_add)
        return to_add

    async def _reapply_missing(self, source: SourceConfig, run_id: int | None) -> int:
        """--force: re-ban this source's entries that fail2ban no longer holds."""
        current = await self.store.entries_of(source.name, source.jail)
        missing = await self.applier.missing(source.jail, current)
        await self.applier.reban(source.jail, missing)
        if missing:
            log.warning("source=%s jail=%s re-banned %d entries fail2ban had lost",
                        source.name, source.jail, len(missing))
        return len(missing)

    async def recover_all(self) -> None:
        """Settle every source's half-done rows (after a crash), e.g. before reconciling."""
        for name in await self.store.sources_with_unfinished():
            async with self.applier.lock:
                await self.applier.recover(name, await self.store.unfinished(name))

    async def withdraw_source(self, name: str) -> int:
        """A source left the config: unban what only it listed, and forget it."""
        removed = 0
        async with self.applier.lock:
            await self.applier.recover(name, await self.store.unfinished(name))
            for jail in await self.store.jails_of(name):
                removed += await self.applier.remove_all(name, jail)
        await self.store.forget_source(name)
        log.info("source=%s withdrawn removed=%d", name, removed)
        return removed
