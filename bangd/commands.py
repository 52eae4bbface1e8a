"""The control socket's commands: argument checks and result objects per command.

Each handler takes the request's `args` and the peer, checks the arguments (answering
`invalid_argument` with what is accepted), asks the App's members, its jobs or its reports
and returns a JSON-ready dict. Errors from below are bangd's own types; the control
layer's one table (control/errors.py) turns them into protocol codes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from . import __version__, jobs, reports
from .app import App
from .control.args import Flag, Int, Text, Texts, accepts
from .control.server import Handler, Peer
from .errors import ControlError, SourceDisabled, UnknownJailName, UnknownSource
from .jobs import RECONCILE_JOB, RETENTION_JOB, import_job
from .metrics import render as render_metrics
from .services.bans import list_bans
from .services.exemptions import MAX_COMMENT, lift, normalised, unscreen
from .services.lookup import banned_in, skip_reasons
from .services.stats import banned_by

log = logging.getLogger(__name__)

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
            "verify": self._cmd_verify,
            **self._operator_handlers(),
        }

    @accepts()
    async def _cmd_version(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return {"version": __version__}

    @accepts()
    async def _cmd_reload(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return await self._reload()

    @accepts()
    async def _cmd_status(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return await reports.status(self.app)

    @accepts()
    async def _cmd_sources(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return {"sources": await reports.sources(self.app)}

    @accepts(sources=Texts(), all=Flag(), force=Flag(), dry_run=Flag())
    async def _cmd_import(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        names: list[str] = args["sources"]
        force, dry_run = args["force"], args["dry_run"]
        config = self.app.config
        if args["all"]:
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
        # A run already under way (e.g. the timer's) is waited for and is the answer: it
        # imported the list just now. --force (and a run that raised) runs again after it.
        if not force and not dry_run:
            joined = await self.app.scheduler.join(job)
            if joined is not None:
                return {**joined, "joined": True}
        if dry_run:
            async with self.app.scheduler.exclusive(job, wait=True):
                return (await jobs.run_import(self.app, name, dry_run=True)).as_dict()
        run = functools.partial(jobs.import_source, self.app, name, force=force,
                                trigger="manual")
        return await self.app.scheduler.run_now(job, run, wait=True)

    @accepts(source=Text(), limit=Int(default=20, low=1, high=10000))
    async def _cmd_runs(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        name = args["source"]
        runs = await self.app.imports.runs(name, args["limit"])
        if not runs and name is not None and self.app.config.source(name) is None:
            # A removed source with history still answers; a misspelt name does not.
            known = ", ".join(s.name for s in self.app.config.sources) or "none"
            raise UnknownSource(f"no source {name!r}; configured: {known}")
        return {"runs": [run.as_dict() for run in runs]}

    @accepts(jail=Text())
    async def _cmd_reconcile(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        jail = args["jail"]
        await self._known_jail(jail)
        # The same work as the timer's run, and recorded as one.
        run = functools.partial(jobs.reconcile, self.app, jail)
        return await self.app.scheduler.run_now(RECONCILE_JOB, run, wait=True)

    @accepts(ips=Texts(max_length=100))
    async def _cmd_lookup(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        results = await self.app.geo.service.lookup(args["ips"], banned_in=self._banned_in)
        self._explain(results)
        await self._add_kernel_view(results)
        return {"results": results}

    async def _add_kernel_view(self, results: list[dict[str, Any]]) -> None:
        """Per jail an address is banned in: does the kernel drop it (the listed entries
        that cover it, or the address itself when no source lists it)? One question per
        jail for all the addresses asked about."""
        wanted: dict[str, dict[str, list[str]]] = {}  # jail -> address -> entries
        for result in results:
            for jail in result.get("banned_in") or []:
                entries = sorted({m["entry"] for m in result.get("sources", [])
                                  if m.get("jail") == jail}) or [result["ip"]]
                wanted.setdefault(jail, {})[result["ip"]] = entries
        answers = {
            jail: await self.app.enforcement.missing_among(
                jail, sorted({e for entries in by_ip.values() for e in entries}))
            for jail, by_ip in wanted.items()
        }
        for result in results:
            view = {}
            for jail, by_ip in wanted.items():
                if result["ip"] not in by_ip:
                    continue
                missing = answers[jail]
                if isinstance(missing, str):
                    view[jail] = f"unknown: {missing}"
                    continue
                lacking = [e for e in by_ip[result["ip"]] if e in missing]
                view[jail] = ("NOT dropped: missing " + ", ".join(lacking)) if lacking \
                    else "dropped"
            result["kernel"] = view

    async def _banned_in(self, address: str) -> list[str]:
        app = self.app
        return await banned_in(app.fail2ban, app.imports, await app.jails_in_use(), address)

    @accepts()
    async def _cmd_cache_stats(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return await reports.cache_stats(self.app)

    @accepts(dry_run=Flag())
    async def _cmd_cache_cleanup(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        if args["dry_run"]:
            return await jobs.retention(self.app, dry_run=True)
        return await self.app.scheduler.run_now(RETENTION_JOB, wait=True)

    @accepts(jail=Text())
    async def _cmd_verify(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """Per jail: entries applied, entries the kernel enforces, the missing ones."""
        jails = await self.app.jails_in_use()
        if args["jail"] is not None:
            if args["jail"] not in jails:
                raise ControlError("not_found", f"bangd has no jail {args['jail']!r}; in use: "
                                   + (", ".join(jails) or "none"))
            jails = [args["jail"]]
        reports = await self.app.enforcement.check_all(jails)
        return {"jails": [r.as_dict() for r in reports], "ok": all(r.ok for r in reports)}

    @accepts()
    async def _cmd_metrics(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return {"text": render_metrics(await reports.metrics(self.app))}

    # -- the operator's views and exemptions (issue 12) -------------------------------------

    def _operator_handlers(self) -> dict[str, Handler]:
        return {
            "bans": self._cmd_bans,
            "allow_add": self._cmd_allow_add,
            "allow_list": self._cmd_allow_list,
            "allow_remove": self._cmd_allow_remove,
            "stats": self._cmd_stats,
        }

    async def _known_jail(self, jail: str | None) -> None:
        jails = await self.app.jails_in_use()
        if jail is not None and jail not in jails:
            raise UnknownJailName(f"no jail {jail!r} in bangd's config or records; known:"
                                  f" {', '.join(jails) or 'none'}")

    async def _known_source(self, name: str | None) -> None:
        if name is None or self.app.config.source(name) is not None:
            return
        if name not in await self.app.imports.known_sources():
            known = ", ".join(s.name for s in self.app.config.sources) or "none"
            raise UnknownSource(f"no source {name!r}; configured: {known}")

    @accepts(jail=Text(), source=Text(), limit=Int(default=100, low=1, high=100_000))
    async def _cmd_bans(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        await self._known_jail(args["jail"])
        await self._known_source(args["source"])
        return await list_bans(self.app.imports, jail=args["jail"], source=args["source"],
                               limit=args["limit"])

    @accepts(network=Text(required=True, max_length=100),
             seconds=Int(default=0, low=0, high=10 * 366 * 86400),
             comment=Text(max_length=MAX_COMMENT))
    async def _cmd_allow_add(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """Stored first (so no import bans it again meanwhile), then lifted now."""
        app = self.app
        exemption = await app.exemptions.add(args["network"], seconds=args["seconds"],
                                             comment=args["comment"])
        lifted = await lift(app.imports, app.applier, normalised(exemption.network))
        log.info("exemption network=%s added expires=%s lifted=%d uid=%d", exemption.network,
                 exemption.expires, lifted, peer.uid)
        return {"exemption": exemption.as_dict(), "lifted": lifted}

    @accepts()
    async def _cmd_allow_list(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return {"exemptions": [e.as_dict() for e in self.app.exemptions.active()]}

    @accepts(network=Text(required=True, max_length=100))
    async def _cmd_allow_remove(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """The lists' entries it kept out come back with the imports made due now."""
        exemption = await self.app.exemptions.remove(args["network"])
        await unscreen(self.app.imports)
        jobs.reimport_all(self.app)
        log.info("exemption network=%s removed uid=%d", exemption.network, peer.uid)
        return {"exemption": exemption.as_dict(), "reimporting": True}

    def _explain(self, results: list[dict[str, Any]]) -> None:
        """What lookup adds for the operator: exemptions, skip rules, a missing resolver."""
        app, config = self.app, self.app.config
        resolvers = app.geo.resolver_names()
        for result in results:
            result["exemptions"] = [e.as_dict() for e in app.exemptions.covering(result["ip"])]
            result["skipped"] = skip_reasons(
                result["ip"], allowlist=config.allowlist, skip_reserved=config.skip_reserved,
                exempt=app.exemptions.networks(),
            )
            result["geo_note"] = None if resolvers or result.get("cached") \
                else "no resolver configured (geo.mmdb, geo.asn_mmdb, geo.ip_api)"

    @accepts(by=Text(max_length=16), top=Int(default=10, low=1, high=1000))
    async def _cmd_stats(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        by = args["by"] or "country"
        if by not in ("country", "asn"):
            raise ControlError("invalid_argument", f"by must be country or asn, got {by!r}")
        return await banned_by(self.app.ban_stats, by=by, top=args["top"])
