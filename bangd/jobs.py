"""bangd's jobs: one import per enabled source, reconcile and retention, with their bodies.

Each body takes the App, so the timer's run and a run asked for on the control socket are
the same code and are recorded as the same job. A run that fails still has a result worth
showing (an import summary that says `failed`): it is returned as a JobOutcome carrying
the error, not raised.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from .app import App
from .config import Config
from .errors import Fail2banError, UnknownSource
from .scheduler import Job, JobOutcome
from .services.exemptions import unscreen
from .services.importer import ImportSummary
from .services.retention import run_retention
from .store.integrity import DatabaseCorrupt, quick_check

log = logging.getLogger(__name__)

RECONCILE_JOB = "reconcile"
RETENTION_JOB = "retention"
INTEGRITY_JOB = "integrity"
INTEGRITY_INTERVAL = 6 * 3600.0
INTEGRITY_BUDGET_TIMER = 120.0


def import_job(source: str) -> str:
    return f"import:{source}"


async def run_import(
    app: App, name: str, *, force: bool = False, dry_run: bool = False, trigger: str = "timer"
) -> ImportSummary:
    """One import of a configured source (dry runs are not recorded)."""
    src = app.config.source(name)
    if src is None:
        raise UnknownSource(f"source {name!r} is no longer configured")
    return await app.importer.run(
        src, app.filter_settings(), force=force, dry_run=dry_run, trigger=trigger
    )


async def import_source(
    app: App, name: str, *, force: bool = False, trigger: str = "timer"
) -> JobOutcome:
    """The import job's run: a recorded import, failed when its summary says so."""
    summary = await run_import(app, name, force=force, trigger=trigger)
    app.last_import = (
        f"{name} {summary.state} +{summary.added} -{summary.removed} "
        f"at {time.strftime('%H:%M', time.localtime(app.clock()))}"
    )
    app.status_changed()
    error = (summary.error or "import failed") if summary.state == "failed" else None
    # The importer logged the failure in its summary line: one line per failure.
    return JobOutcome(summary.as_dict(), error, logged=True)


async def reconcile(app: App, jail: str | None = None) -> JobOutcome:
    """Withdraw removed sources, settle crashed runs, re-ban what fail2ban lost (a jail is
    never compared with half-done records), then make the kernel drop every entry again
    where bangd's action holds the jail (after `nft flush ruleset`, say)."""
    errors = await withdraw_removed_sources(app)
    if await app.exemptions.expire():
        await unscreen(app.imports)
        reimport_all(app)  # what an expired exemption kept out is banned again
    await app.importer.recover_all()
    reports = await app.reconciler.run(jail, settings=app.filter_settings())
    errors += [r.error for r in reports if r.error]
    jails = []
    for report in reports:
        row = report.as_dict()
        if report.error is None:
            kernel = await app.enforcement.check_and_repair(report.jail)
            row["enforcement"] = kernel.as_dict()
            if kernel.bangd_action and kernel.error is not None:
                errors.append(f"jail {report.jail}: kernel check: {kernel.error}")
        jails.append(row)
    return JobOutcome({"jails": jails}, "; ".join(errors) or None)


async def withdraw_removed_sources(app: App) -> list[str]:
    """Withdraw sources no longer configured; one failing never stops the others."""
    configured = {s.name for s in app.config.sources}
    errors = []
    for name in await app.imports.known_sources():
        if name in configured:
            continue
        try:
            await app.importer.withdraw_source(name)
        except Fail2banError as exc:
            log.error("source=%s withdrawal failed, retried next time: %s", name, exc)
            errors.append(f"withdrawing {name}: {exc}")
    return errors


async def retention(app: App, *, dry_run: bool = False) -> dict[str, Any]:
    result = await run_retention(
        app.geo_store, retention_days=app.config.geo.retention_days,
        clock=app.clock, dry_run=dry_run,
    )
    if not dry_run:
        app.retention_deleted += int(result["deleted"])
    return result


async def check_integrity(app: App) -> dict[str, Any]:
    """The slow timer's database check, on its own read-only connection; a damaged
    database stops the daemon (running on would lose writes)."""
    db = app.db
    if db.checked_at_open and app.clock() - app.started_at < INTEGRITY_INTERVAL / 2:
        return {"ok": True, "complete": True, "at_start": True}
    report = await quick_check(db.path, budget=INTEGRITY_BUDGET_TIMER)
    if not report.ok:
        app.fail(DatabaseCorrupt(db.path, "; ".join(report.problems)))
    log.info("db=%s integrity=%s took=%.2fs", db.path,
             "damaged" if not report.ok else "ok" if report.complete else "unfinished",
             report.took)
    return {"ok": report.ok, "complete": report.complete, "took": round(report.took, 3)}


def jobs_for(app: App, config: Config) -> list[Job]:
    """Every job `config` asks for: one import per enabled source, reconcile, retention,
    the database's integrity check."""
    jobs = [
        Job(import_job(src.name), src.interval, functools.partial(import_source, app, src.name))
        for src in config.sources if src.enabled
    ]
    jobs.append(Job(RECONCILE_JOB, config.fail2ban.reconcile_interval,
                    functools.partial(reconcile, app), jitter=0.0))
    jobs.append(Job(RETENTION_JOB, config.geo.cleanup_interval,
                    functools.partial(retention, app)))
    jobs.append(Job(INTEGRITY_JOB, INTEGRITY_INTERVAL, functools.partial(check_integrity, app)))
    return jobs


def schedule(app: App) -> None:
    """Put the config's jobs on the App's scheduler; reconcile when fail2ban comes back."""
    for job in jobs_for(app, app.config):
        app.scheduler.add(job)
    app.on_fail2ban_recover.append(functools.partial(_fail2ban_back, app))


async def reschedule(app: App, old: Config, new: Config) -> None:
    """After a reload: jobs follow the new config, keeping their state."""
    jobs = jobs_for(app, new)
    wanted = {job.name for job in jobs}
    for name in app.scheduler.names():
        if name not in wanted:
            await app.scheduler.remove(name)
    for job in jobs:
        app.scheduler.update(job)
    if {s.name for s in old.sources} - {s.name for s in new.sources}:
        # Withdrawing their entries is the reconcile job's first step.
        app.scheduler.make_due(RECONCILE_JOB)
    if (old.allowlist, old.skip_reserved) != (new.allowlist, new.skip_reserved):
        # What may be banned changed: re-apply every list now, not in hours.
        for src in new.sources:
            if src.enabled:
                app.scheduler.make_due(import_job(src.name))


def reimport_all(app: App) -> None:
    """Re-apply every enabled list soon: what may be banned changed."""
    for src in app.config.sources:
        if src.enabled:
            app.scheduler.make_due(import_job(src.name))


def _fail2ban_back(app: App) -> None:
    log.info("fail2ban is back: reconciling now")
    app.scheduler.make_due(RECONCILE_JOB)
