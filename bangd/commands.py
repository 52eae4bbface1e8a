"""The control socket's commands: argument checks and result objects per command.

Each handler takes the request's `args` and the peer, checks the arguments (answering
`invalid_argument` with what is accepted), asks the daemon's services and returns a
JSON-ready dict. What the services do lives with them; this is only the protocol's face.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

from . import __version__
from .control.args import Flag, Int, Text, Texts, accepts
from .control.server import Handler, Peer
from .errors import ConfigError, ControlError, Fail2banError
from .jobs import RECONCILE_JOB, RETENTION_JOB, import_job
from .metrics import Metric
from .metrics import render as render_metrics
from .scheduler import JobFailed
from .services.geo import covering_entries

if TYPE_CHECKING:
    from .daemon import Daemon


class Commands:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def handlers(self) -> dict[str, Handler]:
        return {
            "status": self._cmd_status,
            "version": self._cmd_version,
            "reload": self._cmd_reload,
            "sources": self._cmd_sources,
            "import": self._cmd_import,
            "runs": self._cmd_runs,
            "reconcile": self._cmd_reconcile,
            "metrics": self._cmd_metrics,
            "lookup": self._cmd_lookup,
            "cache_stats": self._cmd_cache_stats,
            "cache_cleanup": self._cmd_cache_cleanup,
        }

    @accepts()
    async def _cmd_version(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return {"version": __version__}

    @accepts()
    async def _cmd_reload(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        try:
            return await self.daemon.reload()
        except ConfigError as exc:
            raise ControlError(
                "invalid_argument",
                "new config refused, the running one is kept: " + "; ".join(exc.problems),
            ) from None

    @accepts()
    async def _cmd_status(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        now = self.daemon.clock()
        config = self.daemon.config
        return {
            "version": __version__,
            "pid": os.getpid(),
            "started_at": self.daemon.started_at,
            "uptime": now - self.daemon.started_at,
            "config": config.path,
            "database": {
                "path": self.daemon.db.path, "schema_version": self.daemon.db.schema_version,
            },
            "fail2ban": {"socket": config.fail2ban.socket, **self.daemon.monitor.health.as_dict()},
            "sources": await self._sources(),
            "jails": await self._jail_counts(),
            "timers": [s.as_dict() for s in self.daemon.scheduler.states()],
            "geo": {"resolvers": self.daemon.resolver_names(), "error": self.daemon.geo_problem},
        }

    async def _jail_counts(self) -> list[dict[str, Any]]:
        """fail2ban's own counts for the jails bangd uses (`status JAIL short` is cheap)."""
        if not self.daemon.monitor.health.reachable:
            return []
        jails = await self.daemon.jails_in_use()
        counts: list[dict[str, Any]] = []
        for jail in jails:
            try:
                status = await self.daemon.fail2ban.jail_status(jail)
            except Fail2banError as exc:
                counts.append({"jail": jail, "currently_banned": None, "total_banned": None,
                               "error": str(exc)})
            else:
                counts.append({"jail": jail, "currently_banned": status.currently_banned,
                               "total_banned": status.total_banned, "error": None})
        return counts

    @accepts()
    async def _cmd_sources(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return {"sources": await self._sources()}

    async def _sources(self) -> list[dict[str, Any]]:
        rows = {row.name: row for row in await self.daemon.imports.sources()}
        last = await self.daemon.imports.last_runs()
        listed = []
        for src in self.daemon.config.sources:
            row = rows.get(src.name)
            run = last.get(src.name, {})
            state = self.daemon.scheduler.state(import_job(src.name))
            listed.append({
                "name": src.name, "jail": src.jail, "interval": src.interval,
                "enabled": src.enabled, "location": src.location,
                "entries": row.entries if row is not None else 0,
                "last_success": row.last_success if row is not None else None,
                "last_run": run.get("finished") or run.get("started"),
                "last_state": "running" if state is not None and state.running
                else run.get("state"),
                "last_error": run.get("error"),
                "next_run": state.next_run if state is not None else None,
            })
        return listed

    @accepts(sources=Texts(), all=Flag(), force=Flag(), dry_run=Flag())
    async def _cmd_import(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        names: list[str] = args["sources"]
        force, dry_run = args["force"], args["dry_run"]
        if args["all"]:
            names = [s.name for s in self.daemon.config.sources if s.enabled]
        if not names:
            raise ControlError("invalid_argument", "name at least one source, or all: true")
        for name in names:
            src = self.daemon.config.source(name)
            if src is None:
                known = ", ".join(s.name for s in self.daemon.config.sources) or "none"
                raise ControlError("not_found", f"no source {name!r}; configured: {known}")
            if not src.enabled:
                raise ControlError("invalid_argument", f"source {name!r} is disabled")
        results = await asyncio.gather(
            *(self._import_now(name, force=force, dry_run=dry_run) for name in names)
        )
        return {"imports": results}

    async def _import_now(self, name: str, *, force: bool, dry_run: bool) -> dict[str, Any]:
        job = import_job(name)
        # A run already under way (e.g. the timer's) is waited for, then this one runs:
        # "import now and wait" must not fail just because the timer got there first.
        if dry_run:
            async with self.daemon.scheduler.exclusive(job, wait=True):
                return (await self.daemon.run_import(name, dry_run=True)).as_dict()
        try:
            return await self.daemon.scheduler.run_now(
                job, lambda: self.daemon.import_source(name, force=force, trigger="manual"),
                wait=True,
            )
        except JobFailed as exc:
            return exc.result

    @accepts(source=Text(), limit=Int(default=20, low=1, high=10000))
    async def _cmd_runs(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return {"runs": await self.daemon.imports.runs(args["source"], args["limit"])}

    @accepts(jail=Text())
    async def _cmd_reconcile(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        jail = args["jail"]
        # The same work as the timer's run, and recorded as one: withdrawals and crashed
        # runs are settled first, so a jail is never compared with half-done records.
        try:
            return await self.daemon.scheduler.run_now(
                RECONCILE_JOB, lambda: self.daemon.reconcile(jail), wait=True
            )
        except JobFailed as exc:
            return exc.result

    @accepts(ips=Texts(max_length=100))
    async def _cmd_lookup(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        ips = args["ips"]
        try:
            results = await self.daemon.geo.lookup(ips, banned_in=self._banned_in)
        except ValueError as exc:
            raise ControlError("invalid_argument", str(exc)) from None
        return {"results": results}

    async def _banned_in(self, address: str) -> list[str]:
        """The jails in which fail2ban has `address` banned, itself or through a listed
        network containing it (fail2ban keeps a CIDR ban as one entry: asking for an
        address inside it answers 0)."""
        asked = {jail: {address} for jail in await self.daemon.jails_in_use()}
        covering = await asyncio.to_thread(covering_entries, address)
        for match in await self.daemon.geo_store.applied_matches(covering):
            asked.setdefault(match.jail, {address}).add(match.entry)
        found = []
        for jail, entries in sorted(asked.items()):
            result = await self.daemon.fail2ban.command(["get", jail, "banned", *sorted(entries)])
            flags = result if isinstance(result, list) else [result]
            if any(flags):
                found.append(jail)
        return found

    @accepts()
    async def _cmd_cache_stats(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        stats = await self.daemon.geo.stats()
        stats["retention_days"] = self.daemon.config.geo.retention_days
        stats["resolvers"] = self.daemon.resolver_names()
        stats["error"] = self.daemon.geo_problem
        return stats

    @accepts(dry_run=Flag())
    async def _cmd_cache_cleanup(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        dry_run = args["dry_run"]
        if dry_run:
            return await self.daemon.retention(dry_run=True)
        return await self.daemon.scheduler.run_now(RETENTION_JOB, wait=True)

    @accepts()
    async def _cmd_metrics(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return {"text": render_metrics(await self.metrics())}

    async def metrics(self) -> list[Metric]:
        now = self.daemon.clock()
        health = self.daemon.monitor.health
        rows = {row.name: row for row in await self.daemon.imports.sources()}
        last = await self.daemon.imports.last_runs()
        entries = Metric("bangd_source_entries", "gauge", "Entries a source has applied.")
        success = Metric("bangd_source_last_success_timestamp_seconds", "gauge",
                         "When a source's last completed or unchanged run ended.")
        duration = Metric("bangd_source_last_run_duration_seconds", "gauge",
                          "How long a source's last run took.")
        failing = Metric("bangd_source_last_run_failed", "gauge",
                         "1 if a source's last run failed.")
        for src in self.daemon.config.sources:
            row, run = rows.get(src.name), last.get(src.name)
            labels = {"source": src.name, "jail": src.jail}
            entries.add(row.entries if row is not None else 0, **labels)
            if row is not None and row.last_success is not None:
                success.add(row.last_success, **labels)
            if run is not None and run.get("finished"):
                duration.add(run["finished"] - run["started"], **labels)
                failing.add(1 if run["state"] == "failed" else 0, **labels)
        runs = Metric("bangd_import_runs_total", "counter", "Import runs by source and state.")
        for source, state, count in await self.daemon.imports.run_counts():
            runs.add(count, source=source, state=state)
        return [
            Metric("bangd_info", "gauge", "bangd's version.").add(1, version=__version__),
            Metric("bangd_start_time_seconds", "gauge", "When bangd started.").add(
                self.daemon.started_at
            ),
            Metric("bangd_uptime_seconds", "gauge", "Seconds since bangd started.").add(
                now - self.daemon.started_at
            ),
            Metric("bangd_fail2ban_up", "gauge", "1 if fail2ban answers on its socket.").add(
                1 if health.reachable else 0
            ),
            entries, success, duration, failing, runs,
            self._jail_metric(await self._jail_counts()),
            *await self._geo_metrics(),
        ]

    @staticmethod
    def _jail_metric(counts: list[dict[str, Any]]) -> Metric:
        metric = Metric("bangd_fail2ban_jail_banned", "gauge",
                        "Addresses fail2ban currently holds in the jails bangd uses.")
        for jail in counts:
            if jail["currently_banned"] is not None:
                metric.add(jail["currently_banned"], jail=jail["jail"])
        return metric

    async def _geo_metrics(self) -> list[Metric]:
        stats = await self.daemon.geo.stats()
        rows = Metric("bangd_geo_cache_rows", "gauge", "Geo cache rows, by negative or not.")
        rows.add(stats["rows"] - stats["negative"], negative="false")
        rows.add(stats["negative"], negative="true")
        deleted = Metric("bangd_geo_retention_deleted_total", "counter",
                         "Geo cache rows deleted by retention since bangd started.")
        return [rows, deleted.add(self.daemon.retention_deleted)]

