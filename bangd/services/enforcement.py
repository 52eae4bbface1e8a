"""Does the kernel drop what bangd banned? Ask the jail's bangd-nftables action.

A ban in fail2ban is bookkeeping; only the firewall action makes it a drop, and a stock
action can lose entries silently (measured: `nftables-allports` enforced 0 of 300 networks
while `banip` and fail2ban's counts said banned). bangd's own action reports what the
kernel holds over fail2ban's socket (`set JAIL action bangd-nftables enforced {...}`) and
re-applies its model on `repair`, so bangd checks and repairs enforcement without any
privilege of its own. A jail with another action is reported as "cannot be checked".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import Fail2banError

log = logging.getLogger(__name__)

BANGD_ACTION = "bangd-nftables"
SHOWN_MISSING = 20
# Up to this many applied entries are checked one by one in a single call (~1-4 s at 100k,
# a 2 MB request); above it the action checks its own model, which fail2ban fed with the
# same entries, and the counts are compared.
EXPLICIT_CHECK_MAX = 100_000


class ActionLink(Protocol):
    async def jail_actions(self, jail: str) -> list[str]: ...

    async def action_call(
        self, jail: str, action: str, method: str, kwargs: Mapping[str, object] | None = None
    ) -> object: ...


class AppliedEntries(Protocol):
    async def expected(self, jail: str) -> Sequence[str]: ...


@dataclass
class JailEnforcement:
    """One jail's answer. `enforced`/`missing_count` are None when it cannot be checked."""

    jail: str
    actions: list[str] = field(default_factory=list)
    applied: int = 0
    enforced: int | None = None
    missing_count: int | None = None
    missing: list[str] = field(default_factory=list)
    kernel_elements: int | None = None
    repaired: bool = False
    error: str | None = None
    checked_at: float | None = None

    @property
    def bangd_action(self) -> bool:
        return BANGD_ACTION in self.actions

    @property
    def ok(self) -> bool:
        return self.error is None and self.missing_count == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "jail": self.jail, "actions": self.actions, "bangd_action": self.bangd_action,
            "applied": self.applied, "enforced": self.enforced,
            "missing_count": self.missing_count, "missing": self.missing,
            "kernel_elements": self.kernel_elements, "repaired": self.repaired,
            "ok": self.ok, "error": self.error, "checked_at": self.checked_at,
        }


class Enforcement:
    def __init__(self, fail2ban: ActionLink, imports: AppliedEntries,
                 clock: Callable[[], float] = time.time) -> None:
        self.fail2ban = fail2ban
        self.imports = imports
        self.clock = clock
        # The latest report per jail (from reconcile or verify), for status and metrics:
        # they must stay cheap, and a kernel check costs seconds at 100k entries.
        self.last: dict[str, JailEnforcement] = {}

    async def check(self, jail: str) -> JailEnforcement:
        """Entries bangd applied to `jail` against what the kernel drops; never raises for
        fail2ban's sake (an unreachable fail2ban or a foreign action is the answer)."""
        report = JailEnforcement(jail)
        applied = await self.imports.expected(jail)  # in key order
        report.applied = len(applied)
        try:
            report.actions = await self.fail2ban.jail_actions(jail)
            if not report.bangd_action:
                report.error = foreign_action(jail, report.actions)
                self._remember(report)
                return report
            kwargs: dict[str, object] = {"limit": SHOWN_MISSING}
            if len(applied) <= EXPLICIT_CHECK_MAX:
                kwargs["entries"] = list(applied)  # JSON: a list, not the text it is kept as
            reply = await self.fail2ban.action_call(jail, BANGD_ACTION, "enforced", kwargs)
        except Fail2banError as exc:
            report.error = str(exc)
            self._remember(report)
            return report
        _read_enforced(report, reply, explicit="entries" in kwargs)
        self._remember(report)
        return report

    def _remember(self, report: JailEnforcement) -> None:
        report.checked_at = self.clock()
        self.last[report.jail] = report

    async def check_and_repair(self, jail: str) -> JailEnforcement:
        """check(); when the kernel lacks entries (a firewall reload, `nft flush ruleset`),
        ask the action to re-apply its model, then check again."""
        report = await self.check(jail)
        if report.error is not None or not report.missing_count:
            return report
        log.warning("jail=%s kernel lacks %d of %d entries: repairing", jail,
                    report.missing_count, report.applied)
        try:
            await self.fail2ban.action_call(jail, BANGD_ACTION, "repair")
        except Fail2banError as exc:
            report.error = f"repair failed: {exc}"
            return report
        again = await self.check(jail)
        again.repaired = True
        if again.missing_count:
            again.error = f"still missing {again.missing_count} entries after repair"
            log.warning("jail=%s kernel %s", jail, again.error)
        else:
            log.info("jail=%s kernel repaired enforced=%s", jail, again.enforced)
        return again

    async def missing_among(self, jail: str, entries: Sequence[str]) -> set[str] | str:
        """Which of `entries` the kernel does not drop (for `lookup`), in one call however
        many addresses were asked about (each call lists the whole table: ~1 s at 100k);
        a string says why that is unknown."""
        try:
            actions = await self.fail2ban.jail_actions(jail)
            if BANGD_ACTION not in actions:
                return f"the jail's action is {', '.join(actions) or 'none'}"
            reply = await self.fail2ban.action_call(
                jail, BANGD_ACTION, "enforced",
                {"entries": list(entries), "limit": min(len(entries), 10_000)},
            )
        except Fail2banError as exc:
            return str(exc)
        if not isinstance(reply, dict) or not isinstance(reply.get("missing"), list):
            return f"{BANGD_ACTION} sent a report bangd cannot read"
        return {str(m) for m in reply["missing"]}

    async def check_all(self, jails: Sequence[str]) -> list[JailEnforcement]:
        return [await self.check(jail) for jail in jails]


def foreign_action(jail: str, actions: list[str]) -> str:
    named = ", ".join(actions) or "no action"
    return (f"jail {jail} uses {named}, not {BANGD_ACTION}: the kernel side cannot be "
            "checked, and a stock action may lose networks silently; set "
            f"`action = {BANGD_ACTION}.py` for the jail")


def _read_enforced(report: JailEnforcement, reply: object, *, explicit: bool) -> None:
    if not isinstance(reply, dict):
        report.error = f"{BANGD_ACTION} answered {type(reply).__name__}, not a report"
        return
    try:
        missing_count = int(reply["missing_count"])
        checked = int(reply["checked"])
        report.kernel_elements = int(reply.get("kernel_elements") or 0)
        report.missing = [str(m) for m in reply.get("missing", [])][:SHOWN_MISSING]
    except (KeyError, TypeError, ValueError):
        report.error = f"{BANGD_ACTION} sent a report bangd cannot read: {str(reply)[:200]}"
        return
    if explicit:
        report.missing_count = missing_count
    else:
        # The model check covers what fail2ban handed the action; anything bangd applied
        # beyond that (fail2ban lost it; reconcile re-bans it) is missing too.
        report.missing_count = missing_count + max(0, report.applied - checked)
    report.enforced = report.applied - report.missing_count
