"""What `status`, `sources` and `metrics` report: read-only views over the App.

Built from the database and the members' in-memory state on each request, so there is
nothing to keep in sync; only fail2ban's own counts may be a moment old, while bangd is
banning (services/jailfigures.py says why).
"""

from __future__ import annotations

import os
from typing import Any

from . import __version__
from .app import App
from .jobs import import_job
from .metrics import Metric
from .services.enforcement import BANGD_ACTION, foreign_action
from .services.jailfigures import Figures
from .services.stats import banned_by


async def status(app: App) -> dict[str, Any]:
    now = app.clock()
    config = app.config
    return {
        "version": __version__,
        "pid": os.getpid(),
        "started_at": app.started_at,
        "uptime": now - app.started_at,
        "config": config.path,
        "database": {"path": app.db.path, "schema_version": app.db.schema_version},
        "fail2ban": {"socket": config.fail2ban.socket, **app.monitor.health.as_dict()},
        "sources": await sources(app),
        "jails": await jail_counts(app),
        "timers": [s.as_dict() for s in app.scheduler.states()],
        "geo": {"resolvers": app.geo.resolver_names(), "error": app.geo.problem},
        "exemptions": [e.as_dict() for e in app.exemptions.active()],
    }


async def jail_counts(app: App) -> list[dict[str, Any]]:
    """fail2ban's own counts for the jails bangd uses (`status JAIL short` is cheap); while
    bangd is banning, as of fail2ban's last answer (see services/jailfigures.py)."""
    if not app.monitor.health.reachable:
        return []
    counts: list[dict[str, Any]] = []
    for jail in await app.jails_in_use():
        figures = await app.jail_figures.of(jail)
        if figures.status is None:
            counts.append({"jail": jail, "currently_banned": None, "total_banned": None,
                           "error": figures.error, "as_of": figures.as_of})
        else:
            counts.append({"jail": jail, "currently_banned": figures.status.currently_banned,
                           "total_banned": figures.status.total_banned, "error": None,
                           "as_of": figures.as_of,
                           "enforcement": _enforcement(app, jail, figures)})
    return counts


def _enforcement(app: App, jail: str, figures: Figures) -> dict[str, Any]:
    """The jail's action (as fail2ban last answered) and the latest kernel check (from
    reconcile or verify: a check costs seconds on a big jail, too much for every status)."""
    actions = figures.actions
    if actions is None:
        return {"actions": None, "bangd_action": None, "error": figures.error}
    bangd_action = BANGD_ACTION in actions
    last = app.enforcement.last.get(jail)
    return {
        "actions": actions,
        "bangd_action": bangd_action,
        "checked_at": last.checked_at if last is not None else None,
        "applied": last.applied if last is not None else None,
        "enforced": last.enforced if last is not None and bangd_action else None,
        "missing_count": last.missing_count if last is not None and bangd_action else None,
        "error": (last.error if last is not None else None) if bangd_action
        else foreign_action(jail, actions),
    }


async def sources(app: App) -> list[dict[str, Any]]:
    rows = {row.name: row for row in await app.views.sources()}
    last = await app.views.last_runs()
    invalid = await app.views.last_invalid()
    listed = []
    for src in app.config.sources:
        row = rows.get(src.name)
        run = last.get(src.name)
        state = app.scheduler.state(import_job(src.name))
        progress = app.importer.progress.get(src.name)
        running = progress is not None or (state is not None and state.running)
        listed.append({
            "name": src.name, "jail": src.jail, "interval": src.interval,
            "enabled": src.enabled, "location": src.location,
            "entries": row.entries if row is not None else 0,
            "last_success": row.last_success if row is not None else None,
            "last_run": (run.finished or run.started) if run is not None else None,
            "last_state": "running" if running else run.state if run is not None else None,
            "progress": progress if running else None,
            "last_error": run.error if run is not None else None,
            "invalid": invalid.get(src.name, 0),
            "next_run": state.next_run if state is not None else None,
        })
    return listed


async def cache_stats(app: App) -> dict[str, Any]:
    stats = await app.geo.service.stats()
    stats["retention_days"] = app.config.geo.retention_days
    stats["resolvers"] = app.geo.resolver_names()
    stats["error"] = app.geo.problem
    return stats


async def metrics(app: App) -> list[Metric]:
    now = app.clock()
    health = app.monitor.health
    rows = {row.name: row for row in await app.views.sources()}
    last = await app.views.last_runs()
    entries = Metric("bangd_source_entries", "gauge", "Entries a source has applied.")
    success = Metric("bangd_source_last_success_timestamp_seconds", "gauge",
                     "When a source's last completed or unchanged run ended.")
    duration = Metric("bangd_source_last_run_duration_seconds", "gauge",
                      "How long a source's last run took.")
    failing = Metric("bangd_source_last_run_failed", "gauge",
                     "1 if a source's last run failed.")
    for src in app.config.sources:
        row, run = rows.get(src.name), last.get(src.name)
        labels = {"source": src.name, "jail": src.jail}
        entries.add(row.entries if row is not None else 0, **labels)
        if row is not None and row.last_success is not None:
            success.add(row.last_success, **labels)
        if run is not None and run.finished:
            duration.add(run.finished - run.started, **labels)
            failing.add(1 if run.state == "failed" else 0, **labels)
    invalid = Metric("bangd_source_invalid_lines", "gauge",
                     "Lines the source's latest parse could not read (never banned).")
    for name, count in (await app.views.last_invalid()).items():
        configured = app.config.source(name)
        if configured is not None:
            invalid.add(count, source=name, jail=configured.jail)
    runs = Metric("bangd_import_runs_total", "counter", "Import runs by source and state.")
    for source, state, count in await app.views.run_counts():
        runs.add(count, source=source, state=state)
    return [
        Metric("bangd_info", "gauge", "bangd's version.").add(1, version=__version__),
        Metric("bangd_start_time_seconds", "gauge", "When bangd started.").add(app.started_at),
        Metric("bangd_uptime_seconds", "gauge", "Seconds since bangd started.").add(
            now - app.started_at
        ),
        Metric("bangd_fail2ban_up", "gauge", "1 if fail2ban answers on its socket.").add(
            1 if health.reachable else 0
        ),
        entries, success, duration, failing, invalid, runs,
        *_jail_metrics(await jail_counts(app)),
        *await _geo_metrics(app),
        Metric("bangd_exemptions", "gauge",
               "Runtime exemptions (bangctl allow) standing now.").add(
            len(app.exemptions.active())
        ),
        await _country_metric(app),
    ]


COUNTRY_METRIC_TOP = 10  # countries with a label of their own; the rest are "other"


async def _country_metric(app: App) -> Metric:
    metric = Metric("bangd_banned_addresses_by_country", "gauge",
                    f"Addresses bangd bans (networks by size), top {COUNTRY_METRIC_TOP} "
                    "countries from the geo cache, the rest as other.")
    stats = await banned_by(app.ban_stats, by="country", top=COUNTRY_METRIC_TOP)
    for group in stats["groups"]:
        metric.add(group["addresses"], country=group["key"])
    return metric


def _jail_metrics(counts: list[dict[str, Any]]) -> list[Metric]:
    banned = Metric("bangd_fail2ban_jail_banned", "gauge",
                    "Addresses fail2ban currently holds in the jails bangd uses.")
    action = Metric("bangd_jail_bangd_action", "gauge",
                    "1 if the jail's bans are enforced by bangd-nftables (so checked).")
    enforced = Metric("bangd_jail_enforced_entries", "gauge",
                      "Entries the kernel drops, at the latest check.")
    missing = Metric("bangd_jail_enforcement_missing_entries", "gauge",
                     "Entries bangd applied that the kernel did not drop, at the latest check.")
    for jail in counts:
        if jail["currently_banned"] is not None:
            banned.add(jail["currently_banned"], jail=jail["jail"])
        kernel = jail.get("enforcement") or {}
        if kernel.get("bangd_action") is not None:
            action.add(1 if kernel["bangd_action"] else 0, jail=jail["jail"])
        if kernel.get("enforced") is not None:
            enforced.add(kernel["enforced"], jail=jail["jail"])
            missing.add(kernel["missing_count"], jail=jail["jail"])
    return [banned, action, enforced, missing]


async def _geo_metrics(app: App) -> list[Metric]:
    stats = await app.geo.service.stats()
    rows = Metric("bangd_geo_cache_rows", "gauge", "Geo cache rows, by negative or not.")
    rows.add(stats["rows"] - stats["negative"], negative="false")
    rows.add(stats["negative"], negative="true")
    deleted = Metric("bangd_geo_retention_deleted_total", "counter",
                     "Geo cache rows deleted by retention since bangd started.")
    return [rows, deleted.add(app.retention_deleted)]
