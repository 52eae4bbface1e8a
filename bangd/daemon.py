"""The daemon's lifecycle: start, serve, stop; signals; reload; systemd notifications.

`run()` is `start()`, `serve()`, `stop()`. Everything started is registered on one
AsyncExitStack, so teardown runs in reverse order and every step runs even if an earlier
one fails. Signal handlers only set events; the main loop acts on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from . import __version__
from .commands import Commands
from .config import Config, IpApiConfig, load_config
from .control.server import ControlServer, claim_socket_path
from .errors import BangdError, ConfigError, ControlError, Fail2banError
from .fail2ban.client import Fail2banClient
from .geo.ipapi import IpApiClient
from .jobs import INTEGRITY_JOB, RECONCILE_JOB, RETENTION_JOB, import_job
from .logs import set_level
from .notify import Notifier, SystemdNotifier, watchdog_interval
from .scheduler import Job, JobFailed, Scheduler
from .services.geo import GeoService, build_geo_service, make_ipapi
from .services.health import Fail2banHealth, Fail2banMonitor
from .services.importer import FilterSettings, Importer, ImportSummary
from .services.reconcile import Reconciler
from .services.retention import run_retention
from .sources.fetch import Fetcher, make_session
from .store.db import Database
from .store.geo import GeoCacheStore
from .store.imports import ImportStore
from .store.integrity import DatabaseCorrupt, quick_check

log = logging.getLogger(__name__)

STOP_GRACE = 7.0  # running work gets this long to reach a safe point; the unit allows 10 s
# An existing database is checked before start for about this long: a full quick_check of a
# 1M-row database fits; a bigger one starts with the check unfinished (logged) and the
# integrity timer, on its own connection, checks it in the background with more time.
INTEGRITY_BUDGET_START = 10.0
INTEGRITY_BUDGET_TIMER = 120.0
INTEGRITY_INTERVAL = 6 * 3600.0
GEO_DRAIN = 1.0  # background geo warming gets this long to finish before a reload/stop


def _file_identities(*paths: str | None) -> tuple[tuple[int, int, int] | None, ...]:
    """(inode, size, mtime) per file, to notice a database replaced under the same path."""
    identities: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path) if path is not None else None
        except OSError:
            st = None
        identities.append((st.st_ino, st.st_size, st.st_mtime_ns) if st is not None else None)
    return tuple(identities)


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.notifier: Notifier = notifier if notifier is not None else SystemdNotifier()
        self.clock = clock
        self.started_at = clock()
        self.stopping = asyncio.Event()
        self.hurry = asyncio.Event()  # a second stop signal: cut the grace period short
        self.reload_requested = asyncio.Event()
        self.failure: BangdError | None = None  # why the daemon stopped itself
        self._stack = contextlib.AsyncExitStack()
        self._db: Database | None = None
        self._fail2ban: Fail2banClient | None = None
        self._scheduler: Scheduler | None = None
        self._monitor: Fail2banMonitor | None = None
        self._control: ControlServer | None = None
        self._importer: Importer | None = None
        self._reconciler: Reconciler | None = None
        self._imports: ImportStore | None = None
        self._geo_store: GeoCacheStore | None = None
        self._geo: GeoService | None = None
        self._geo_session: aiohttp.ClientSession | None = None
        self._ipapi: IpApiClient | None = None
        self._ipapi_config: IpApiConfig | None = None
        self._mmdb_files: tuple[tuple[int, int, int] | None, ...] = ()
        self.geo_error: str | None = None
        self.retention_deleted = 0
        self._last_import: str | None = None
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- collaborators, available once started ---------------------------------------------

    @property
    def db(self) -> Database:
        assert self._db is not None, "daemon not started"
        return self._db

    @property
    def fail2ban(self) -> Fail2banClient:
        assert self._fail2ban is not None, "daemon not started"
        return self._fail2ban

    @property
    def scheduler(self) -> Scheduler:
        assert self._scheduler is not None, "daemon not started"
        return self._scheduler

    @property
    def importer(self) -> Importer:
        assert self._importer is not None, "daemon not started"
        return self._importer

    @property
    def reconciler(self) -> Reconciler:
        assert self._reconciler is not None, "daemon not started"
        return self._reconciler

    @property
    def imports(self) -> ImportStore:
        assert self._imports is not None, "daemon not started"
        return self._imports

    @property
    def geo(self) -> GeoService:
        assert self._geo is not None, "daemon not started"
        return self._geo

    @property
    def geo_store(self) -> GeoCacheStore:
        assert self._geo_store is not None, "daemon not started"
        return self._geo_store

    @property
    def monitor(self) -> Fail2banMonitor:
        assert self._monitor is not None, "daemon not started"
        return self._monitor

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        """start, serve, stop. The signal handlers stay for the whole run, teardown
        included, so a second Ctrl-C hurries the stop instead of interrupting it; a reason
        the daemon stopped itself (a damaged database) is raised at the end."""
        self._install_signal_handlers()
        try:
            try:
                await self.start()
                await self.serve()
            finally:
                await self.stop()
        finally:
            self._remove_signal_handlers()
        if self.failure is not None:
            raise self.failure

    async def start(self) -> None:
        config = self.config
        stack = self._stack
        # Refuse early if another bangd is live, before touching its database.
        claim_socket_path(config.control.socket)
        self.notifier.notify("STATUS=opening database")
        self._db = await Database.open(config.database, integrity_budget=INTEGRITY_BUDGET_START)
        stack.push_async_callback(self._db.close)
        self._db.on_corrupt = self._on_database_corrupt
        log.info("database path=%s schema_version=%d", config.database, self._db.schema_version)

        self._fail2ban = self._make_fail2ban_client(config)
        stack.push_async_callback(self._close_fail2ban)

        session = make_session()
        stack.push_async_callback(session.close)
        self._imports = ImportStore(self._db)
        interrupted = await self._imports.interrupt_running(self.clock())
        if interrupted:
            log.warning("imports interrupted by the previous stop: %s; they run again now",
                        ",".join(interrupted))
        self._geo_store = GeoCacheStore(self._db)
        # ip-api gets an ordinary session: the list-fetching one leaves gzip to the fetcher.
        self._geo_session = aiohttp.ClientSession()
        stack.push_async_callback(self._geo_session.close)
        self._geo = self._make_geo(config)
        stack.push_async_callback(self._close_geo)
        apply_lock = asyncio.Lock()
        fetcher = Fetcher(session, user_agent=f"bangd/{__version__}")
        stack.callback(fetcher.close)
        self._importer = Importer(
            self._imports, self._fail2ban, fetcher,
            batch_size=config.fail2ban.batch_size, apply_lock=apply_lock, clock=self.clock,
            on_banned=self._on_banned, on_unchanged=self._on_unchanged,
        )
        self._reconciler = Reconciler(
            self._imports, self._fail2ban,
            batch_size=config.fail2ban.batch_size, apply_lock=apply_lock,
        )

        self._scheduler = Scheduler(self._db, clock=self.clock)
        await self._scheduler.start()
        stack.push_async_callback(functools.partial(self._scheduler.stop, STOP_GRACE,
                                                    hurry=self.hurry))
        for job in self._jobs(config):
            self._scheduler.add(job)

        self._monitor = Fail2banMonitor(
            self._fail2ban, on_change=self._on_fail2ban_change,
            on_recover=self._on_fail2ban_recover, clock=self.clock,
        )
        self._monitor.start()
        stack.push_async_callback(self._monitor.stop)

        self._control = ControlServer(
            config.control.socket,
            Commands(self).handlers(),
            mode=config.control.mode,
            group=config.control.group,
            idle_timeout=config.control.idle_timeout,
        )
        await self._control.start()
        stack.push_async_callback(self._control.stop)

        watchdog = watchdog_interval()
        if watchdog is not None:
            self._spawn(self._watchdog(watchdog), "watchdog")
        stack.push_async_callback(self._cancel_tasks)

        self.notifier.notify("READY=1")
        self.update_status()
        log.info("bangd %s ready pid=%d sources=%d control=%s",
                 __version__, os.getpid(), len(config.sources), config.control.socket)

    async def serve(self) -> None:
        while not self.stopping.is_set():
            stop_wait = asyncio.ensure_future(self.stopping.wait())
            reload_wait = asyncio.ensure_future(self.reload_requested.wait())
            try:
                await asyncio.wait(
                    {stop_wait, reload_wait}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stop_wait.cancel()
                reload_wait.cancel()
            if self.reload_requested.is_set() and not self.stopping.is_set():
                self.reload_requested.clear()
                with contextlib.suppress(ConfigError):
                    await self.reload()

    async def stop(self) -> None:
        """Undo start() in reverse; safe to call twice."""
        self.stopping.set()
        self.notifier.notify("STOPPING=1")
        self.notifier.notify("STATUS=stopping")
        started = time.monotonic()
        await self._stack.aclose()
        log.info("bangd stopped took=%.2fs", time.monotonic() - started)

    # -- reload ---------------------------------------------------------------------------

    async def reload(self) -> dict[str, Any]:
        """Swap in a new config if it is valid; keep the old one otherwise."""
        async with self._reload_lock:  # SIGHUP and `bangctl reload` may arrive together
            return await self._reload()

    async def _reload(self) -> dict[str, Any]:
        try:
            new = load_config(self.config.path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused, keeping the running config: %s", problem)
            self.update_status()
            raise
        old = self.config
        restart_needed = [
            key
            for key, before, after in (
                ("database", old.database, new.database),
                ("control", old.control, new.control),
            )
            if before != after
        ]
        self.config = new
        set_level(new.log_level)
        if new.fail2ban != old.fail2ban:
            await self._close_fail2ban()
            self._fail2ban = self._make_fail2ban_client(new)
            self.monitor.client = self._fail2ban
            self.importer.fail2ban = self.reconciler.fail2ban = self._fail2ban
            self.importer.batch_size = self.reconciler.batch_size = new.fail2ban.batch_size
            self.monitor.poke()
        if self._geo_needs_rebuild(old, new):
            await self._close_geo()
            self._geo = self._make_geo(new)
        await self._reschedule_jobs(old, new)
        if (old.allowlist, old.skip_reserved) != (new.allowlist, new.skip_reserved):
            # What may be banned changed: re-apply every list now, not in hours.
            for src in new.sources:
                if src.enabled:
                    self.scheduler.make_due(import_job(src.name))
        for key in restart_needed:
            log.warning("reload: %s changed; it takes effect at the next restart", key)
        log.info("reload done config=%s sources=%d", new.path, len(new.sources))
        self.update_status()
        return {"reloaded": True, "config": new.path, "restart_needed": restart_needed}

    # -- jobs -----------------------------------------------------------------------------

    def filter_settings(self) -> FilterSettings:
        return FilterSettings(self.config.allowlist, self.config.skip_reserved)

    async def run_import(
        self, name: str, *, force: bool = False, dry_run: bool = False, trigger: str = "timer"
    ) -> ImportSummary:
        src = self.config.source(name)
        if src is None:
            raise ControlError("not_found", f"source {name!r} is no longer configured")
        return await self.importer.run(
            src, self.filter_settings(), force=force, dry_run=dry_run, trigger=trigger
        )

    async def import_source(
        self, name: str, *, force: bool = False, trigger: str = "timer"
    ) -> dict[str, Any]:
        """One recorded import run, shaped as a job's result (JobFailed when it failed)."""
        summary = await self.run_import(name, force=force, trigger=trigger)
        result: dict[str, Any] = summary.as_dict()
        self._last_import = (
            f"{name} {summary.state} +{summary.added} -{summary.removed} "
            f"at {time.strftime('%H:%M', time.localtime(self.clock()))}"
        )
        self.update_status()
        if summary.state == "failed":
            raise JobFailed(summary.error or "import failed", result)
        return result

    async def retention(self, *, dry_run: bool = False) -> dict[str, Any]:
        result = await run_retention(
            self.geo_store, retention_days=self.config.geo.retention_days,
            clock=self.clock, dry_run=dry_run,
        )
        if not dry_run:
            self.retention_deleted += int(result["deleted"])
        return result

    async def reconcile(self, jail: str | None = None) -> dict[str, Any]:
        """The reconcile job, on its timer or from `bangctl reconcile`: withdraw removed
        sources, settle crashed runs, then re-ban what fail2ban lost."""
        errors = await self._withdraw_removed_sources()
        await self.importer.recover_all()
        reports = await self.reconciler.run(jail, settings=self.filter_settings())
        errors += [r.error for r in reports if r.error]
        result = {"jails": [r.as_dict() for r in reports]}
        if errors:
            raise JobFailed("; ".join(errors), result)
        return result

    async def _withdraw_removed_sources(self) -> list[str]:
        """Withdraw sources no longer configured; one failing never stops the others."""
        configured = {s.name for s in self.config.sources}
        errors = []
        for name in await self.imports.known_sources():
            if name in configured:
                continue
            try:
                await self.importer.withdraw_source(name)
            except Fail2banError as exc:
                log.error("source=%s withdrawal failed, retried next time: %s", name, exc)
                errors.append(f"withdrawing {name}: {exc}")
        return errors

    def _jobs(self, config: Config) -> list[Job]:
        """Every job `config` asks for: one import per enabled source, reconcile, retention."""
        jobs = [
            Job(import_job(src.name), src.interval, functools.partial(self.import_source,
                                                                      src.name))
            for src in config.sources if src.enabled
        ]
        jobs.append(Job(RECONCILE_JOB, config.fail2ban.reconcile_interval, self.reconcile,
                        jitter=0.0))
        jobs.append(Job(RETENTION_JOB, config.geo.cleanup_interval, self.retention))
        jobs.append(Job(INTEGRITY_JOB, INTEGRITY_INTERVAL, self.check_integrity))
        return jobs

    async def check_integrity(self) -> dict[str, Any]:
        """The slow timer's database check, on its own read-only connection."""
        if self.db.checked_at_open and self.clock() - self.started_at < INTEGRITY_INTERVAL / 2:
            return {"ok": True, "complete": True, "at_start": True}
        report = await quick_check(self.db.path, budget=INTEGRITY_BUDGET_TIMER)
        if not report.ok:
            self._fail(DatabaseCorrupt(self.db.path, "; ".join(report.problems)))
        log.info("db=%s integrity=%s took=%.2fs", self.db.path,
                 "ok" if report.complete else "unfinished", report.took)
        return {"ok": report.ok, "complete": report.complete, "took": round(report.took, 3)}

    def _on_database_corrupt(self, exc: Exception) -> None:
        self._fail(DatabaseCorrupt(self.db.path, str(exc)))

    def _fail(self, failure: BangdError) -> None:
        """Stop the daemon for `failure` (exit status 1): running on would lose writes."""
        if self.failure is None:
            self.failure = failure  # logged once, by the command line, at exit
            self.notifier.notify(f"STATUS=stopping: {failure}"[:400])
        self.stopping.set()

    async def _reschedule_jobs(self, old: Config, new: Config) -> None:
        jobs = self._jobs(new)
        wanted = {job.name for job in jobs}
        for name in self.scheduler.names():
            if name not in wanted:
                await self.scheduler.remove(name)
        for job in jobs:
            self.scheduler.update(job)
        removed = {s.name for s in old.sources} - {s.name for s in new.sources}
        if removed:
            # Withdrawing their entries is the reconcile job's first step.
            self.scheduler.make_due(RECONCILE_JOB)

    # -- internals ------------------------------------------------------------------------

    def update_status(self) -> None:
        health = self._monitor.health if self._monitor is not None else Fail2banHealth()
        f2b = {True: "up", False: "DOWN", None: "not checked"}[health.reachable]
        text = f"fail2ban {f2b}; {len(self.config.sources)} sources"
        if self._last_import is not None:
            text += f"; last import {self._last_import}"
        self.notifier.notify(f"STATUS={text}")

    def _on_fail2ban_change(self, health: Fail2banHealth) -> None:
        self.update_status()

    async def _on_fail2ban_recover(self) -> None:
        log.info("fail2ban is back: reconciling now")
        self.scheduler.make_due(RECONCILE_JOB)

    def _make_geo(self, config: Config) -> GeoService:
        """The geo service; a broken MMDB is logged and geo runs without it, because
        losing geolocation must never stop blocklist imports."""
        geo_config = config.geo
        if self._ipapi_config != geo_config.ip_api:
            # One client across reloads: it carries ip-api's rate-limit budget.
            self._ipapi_config = geo_config.ip_api
            self._ipapi = make_ipapi(geo_config.ip_api, self._geo_session)
        self._mmdb_files = _file_identities(geo_config.mmdb, geo_config.asn_mmdb)
        try:
            geo = build_geo_service(geo_config, self.geo_store, self._ipapi, self.clock)
        except BangdError as exc:
            self.geo_error = str(exc)
            log.error("geo: %s; running without MMDB lookups until fixed and reloaded", exc)
            without_mmdb = dataclasses.replace(geo_config, mmdb=None, asn_mmdb=None)
            return build_geo_service(without_mmdb, self.geo_store, self._ipapi, self.clock)
        self.geo_error = None
        return geo

    def _geo_needs_rebuild(self, old: Config, new: Config) -> bool:
        """A resolver setting changed, the MMDB was broken, or its files were replaced
        (geoipupdate renames new files into place): reopen."""
        fields = ("mmdb", "asn_mmdb", "ip_api", "negative_ttl")
        return (
            any(getattr(old.geo, f) != getattr(new.geo, f) for f in fields)
            or self.geo_error is not None
            or _file_identities(new.geo.mmdb, new.geo.asn_mmdb) != self._mmdb_files
        )

    @property
    def geo_problem(self) -> str | None:
        """What is wrong with geolocation now, for status: a file that would not open, or
        one whose data turned out corrupt during lookups."""
        if self.geo_error is not None:
            return self.geo_error
        if self._geo is not None and self._geo.mmdb_corrupt:
            return ("the MMDB's data is corrupt: lookups answer nothing known; download it "
                    "again and reload bangd")
        return None

    def resolver_names(self) -> list[str]:
        geo = self.config.geo
        names = []
        if (geo.mmdb or geo.asn_mmdb) and self.geo_error is None:
            names.append("mmdb")
        if geo.ip_api.enabled:
            names.append("ip-api")
        return names

    async def _close_geo(self) -> None:
        if self._geo is not None:
            await self._geo.drain(GEO_DRAIN)  # let warming in progress land first
            await self._geo.close()

    async def _on_banned(self, source: str, addresses: list[str]) -> None:
        await self.geo.on_banned(source, addresses)

    async def _on_unchanged(self, source: str) -> None:
        await self.geo.on_unchanged(source)

    async def jails_in_use(self) -> list[str]:
        """Jails the config names and jails bangd still has entries in."""
        configured = {s.jail for s in self.config.sources}
        return sorted(configured | set(await self.imports.jails()))

    def _make_fail2ban_client(self, config: Config) -> Fail2banClient:
        return Fail2banClient(
            config.fail2ban.socket,
            timeout=config.fail2ban.timeout,
            batch_size=config.fail2ban.batch_size,
        )

    async def _close_fail2ban(self) -> None:
        if self._fail2ban is not None:
            with contextlib.suppress(Exception):
                await self._fail2ban.close()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def _on_stop_signal(self, name: str) -> None:
        if self.stopping.is_set():
            if not self.hurry.is_set():
                log.warning("second %s: cutting the grace period short; running work is "
                            "cancelled at a safe point", name)
            self.hurry.set()
            return
        log.info("%s received: stopping", name)
        self.stopping.set()

    def _on_hup(self) -> None:
        log.info("SIGHUP received: reloading %s", self.config.path)
        self.reload_requested.set()
