"""bangd's service graph, built once from a Config and kept for the daemon's life.

Every member keeps its identity across reloads: a reload tells each one its new settings
(`App.reconfigure`) instead of replacing it, so whoever holds a member (a job, a command,
another member) never holds a stale one. Jobs and control commands receive the App; the
daemon only starts, serves and stops it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from . import __version__
from .config import Config
from .errors import BangdError
from .fail2ban.link import Fail2banLink
from .scheduler import Scheduler
from .services.apply import Applier
from .services.enforcement import Enforcement
from .services.exemptions import Exemptions
from .services.geo_runtime import GeoRuntime
from .services.health import Fail2banHealth, Fail2banMonitor
from .services.importer import FilterSettings, Importer
from .services.jailfigures import JailFigures
from .services.reconcile import Reconciler
from .sources.fetch import Fetcher, make_session
from .store.banstats import BanStatsStore
from .store.db import Database
from .store.exemptions import ExemptionStore
from .store.geo import GeoCacheStore
from .store.imports import ImportStore
from .store.integrity import DatabaseCorrupt

log = logging.getLogger(__name__)

# An existing database is checked before start for about this long: a full quick_check of a
# 1M-row database fits; a bigger one starts with the check unfinished (logged) and the
# integrity job, on its own connection, checks it in the background with more time.
INTEGRITY_BUDGET_START = 10.0

Listener = Callable[[], None]


class App:
    """The members, built by `open()` in dependency order, torn down in reverse by the
    AsyncExitStack given to it."""

    def __init__(
        self,
        config: Config,
        *,
        db: Database,
        fetcher: Fetcher,
        clock: Callable[[], float],
        reads: Database | None = None,
        geo_reads: Database | None = None,
    ) -> None:
        """`reads` is a second connection to `db` for what reports read (Database.reader
        says why), `geo_reads` a third, for the geo cache's bulk reads (a resolve reads
        its next chunk while it writes the last); without them, `db` serves them too."""
        self.config = config
        self.clock = clock
        self.started_at = clock()
        self.db = db
        self.imports = ImportStore(db)
        # Reports read here; only from tables an import writes as it goes (never a query
        # that folds confirmed batches: this connection may not write).
        self.views = ImportStore(reads if reads is not None else db)
        self.geo_store = GeoCacheStore(db, geo_reads)
        self.exemptions = Exemptions(ExemptionStore(db), clock=clock)
        self.ban_stats = BanStatsStore(db, self.imports)
        self.fail2ban = Fail2banLink(config.fail2ban)
        self.geo = GeoRuntime(config.geo, self.geo_store, clock=clock)
        # One apply protocol, and with it one writer to fail2ban at a time: an import's
        # unban must not race a reconciliation's re-ban of the same entry.
        self.applier = Applier(self.imports, self.fail2ban, batch_size=config.fail2ban.batch_size)
        self.importer = Importer(
            self.imports, self.fail2ban, fetcher, applier=self.applier, clock=clock,
            on_banned=self.geo.on_banned, on_unchanged=self.geo.on_unchanged,
        )
        self.reconciler = Reconciler(self.imports, self.fail2ban, applier=self.applier)
        self.enforcement = Enforcement(self.fail2ban, self.imports, clock=clock)
        self.jail_figures = JailFigures(self.fail2ban, busy=self._importing, clock=clock)
        self.scheduler = Scheduler(db, clock=clock)
        self.monitor = Fail2banMonitor(
            self.fail2ban, on_change=self._fail2ban_changed,
            on_recover=self._fail2ban_recovered, clock=clock,
        )
        self.retention_deleted = 0  # rows, since start; for metrics
        self.last_import: str | None = None  # one line, for systemd's status
        # Who wants to hear of a change the App cannot act on itself (kept to the jobs
        # and the daemon, which sit above it).
        self.on_status_change: list[Listener] = []
        self.on_fail2ban_recover: list[Listener] = []
        self.on_failure: list[Callable[[BangdError], None]] = []  # bangd must stop
        db.on_corrupt = self._database_corrupt

    @classmethod
    async def open(
        cls,
        config: Config,
        stack: contextlib.AsyncExitStack,
        *,
        clock: Callable[[], float] = time.time,
    ) -> App:
        """Open the database and build every member; `stack` undoes it all in reverse."""
        db = await Database.open(config.database, integrity_budget=INTEGRITY_BUDGET_START)
        stack.push_async_callback(db.close)
        log.info("database path=%s schema_version=%d", config.database, db.schema_version)
        session = make_session()
        stack.push_async_callback(session.close)
        fetcher = Fetcher(session, user_agent=f"bangd/{__version__}")
        stack.callback(fetcher.close)
        reads = await db.reader()
        if reads is not db:
            stack.push_async_callback(reads.close)
        geo_reads = await db.reader()
        if geo_reads is not db:
            stack.push_async_callback(geo_reads.close)
        app = cls(config, db=db, fetcher=fetcher, clock=clock, reads=reads, geo_reads=geo_reads)
        stack.push_async_callback(app.fail2ban.close)
        stack.push_async_callback(app.jail_figures.close)
        stack.push_async_callback(app.geo.close)
        await app.exemptions.load()
        interrupted = await app.imports.interrupt_running(clock())
        if interrupted:
            log.warning("imports interrupted by the previous stop: %s; they run again now",
                        ",".join(interrupted))
        return app

    async def reconfigure(self, new: Config) -> None:
        """Tell each member its new settings (what needs a restart is the daemon's call)."""
        self.config = new
        if await self.fail2ban.reconfigure(new.fail2ban):
            self.applier.reconfigure(batch_size=new.fail2ban.batch_size)
            self.monitor.poke()
        await self.geo.reconfigure(new.geo)

    def filter_settings(self) -> FilterSettings:
        return FilterSettings(self.config.allowlist, self.config.skip_reserved,
                              self.exemptions.networks())

    async def jails_in_use(self) -> list[str]:
        """Jails the config names and jails bangd still has entries in."""
        configured = {s.jail for s in self.config.sources}
        return sorted(configured | set(await self.views.jails()))

    def _importing(self) -> bool:
        """An import is parsing or applying, or a reconciliation re-banning."""
        return self.applier.lock.locked() or bool(self.importer.progress)

    def fail(self, failure: BangdError) -> None:
        """Something below found that running on would lose data: the daemon stops."""
        for listener in self.on_failure:
            listener(failure)

    def _database_corrupt(self, exc: Exception) -> None:
        self.fail(DatabaseCorrupt(self.db.path, str(exc)))

    def status_changed(self) -> None:
        for listener in self.on_status_change:
            listener()

    def _fail2ban_changed(self, health: Fail2banHealth) -> None:
        self.status_changed()

    async def _fail2ban_recovered(self) -> None:
        for listener in self.on_fail2ban_recover:
            listener()
