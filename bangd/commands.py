"""The control socket's commands: argument checks and result objects per command.

Each handler takes the request's `args` and the peer, checks the arguments (answering
`invalid_argument` with what is accepted), asks the App's members, its jobs or its reports
and returns a JSON-ready dict. Errors from below are bangd's own types; the control
layer's one table (control/errors.py) turns them into protocol codes.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from . import __version__, jobs, reports
from .app import App
from .control.server import Handler, Peer
from .errors import ControlError, SourceDisabled, UnknownSource
from .jobs import RECONCILE_JOB, RETENTION_JOB, import_job
from .metrics import render as render_metrics
from .services.lookup import banned_in

Reload = Callable[[], Awaitable[dict[str, Any]]]


class Commands:
    def __init__(self, app: App, *, reload: Reload) -> None:
        self.app = app
        self._reload = reload  # the daemon's: it owns the config file and the lifecycle

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

    async def _cmd_version(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return {"version": __version__}

    async def _cmd_reload(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return await self._reload()

    async def _cmd_status(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return await reports.status(self.app)

    async def _cmd_sources(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return {"sources": await reports.sources(self.app)}

    async def _cmd_import(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        names = args.get("sources") or []
        force, dry_run = bool(args.get("force")), bool(args.get("dry_run"))
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ControlError("invalid_argument", "sources must be a list of source names")
        config = self.app.config
        if args.get("all"):
            names = [s.name for s in config.sources if s.enabled]
        if not names:
            raise ControlError("invalid_argument", "name at least one source, or all: true")
        for name in names:
            src = config.source(name)
            if src is None:
                known = ", ".join(s.name for s in config.sources) or "none"
                raise UnknownSource(f"no source {name!r}; configured: {known}")
            if not src.enabled:
                raise SourceDisabled(f"source {name!r} is disabled")
        results = await asyncio.gather(
            *(self._import_now(name, force=force, dry_run=dry_run) for name in names)
        )
        return {"imports": results}

    async def _import_now(self, name: str, *, force: bool, dry_run: bool) -> dict[str, Any]:
        job = import_job(name)
        # A run already under way (e.g. the timer's) is waited for, then this one runs:
        # "import now and wait" must not fail just because the timer got there first.
        if dry_run:
            async with self.app.scheduler.exclusive(job, wait=True):
                return (await jobs.run_import(self.app, name, dry_run=True)).as_dict()
        run = functools.partial(jobs.import_source, self.app, name, force=force,
                                trigger="manual")
        return await self.app.scheduler.run_now(job, run, wait=True)

    async def _cmd_runs(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        source = args.get("source")
        limit = args.get("limit", 20)
        if source is not None and not isinstance(source, str):
            raise ControlError("invalid_argument", "source must be a name")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10000:
            raise ControlError("invalid_argument", "limit must be an integer from 1 to 10000")
        return {"runs": await self.app.imports.runs(source, limit)}

    async def _cmd_reconcile(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        jail = args.get("jail")
        if jail is not None and not isinstance(jail, str):
            raise ControlError("invalid_argument", "jail must be a name")
        # The same work as the timer's run, and recorded as one.
        run = functools.partial(jobs.reconcile, self.app, jail)
        return await self.app.scheduler.run_now(RECONCILE_JOB, run, wait=True)

    async def _cmd_lookup(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        ips = args.get("ips")
        if not isinstance(ips, list) or not all(isinstance(ip, str) for ip in ips):
            raise ControlError("invalid_argument", 'ips must be a list of addresses')
        results = await self.app.geo.service.lookup(ips, banned_in=self._banned_in)
        return {"results": results}

    async def _banned_in(self, address: str) -> list[str]:
        app = self.app
        return await banned_in(app.fail2ban, app.imports, await app.jails_in_use(), address)

    async def _cmd_cache_stats(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return await reports.cache_stats(self.app)

    async def _cmd_cache_cleanup(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        if bool(args.get("dry_run")):
            return await jobs.retention(self.app, dry_run=True)
        return await self.app.scheduler.run_now(RETENTION_JOB, wait=True)

    async def _cmd_metrics(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return {"text": render_metrics(await reports.metrics(self.app))}
