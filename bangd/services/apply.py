"""The apply protocol: how entries reach fail2ban and the `applied` ledger in step.

    1. a batch is committed as one pending batch (store: pending_batches),
    2. the batch is sent to fail2ban (`banip`),
    3. the batch is committed as confirmed: its entries are applied. They become rows of
       the `applied` table once the import has ended (ImportStore.fold), off the path of
       the bans; every read of `applied` folds what is left first.

A crash between 1 and 3 leaves a pending batch; `recover` asks fail2ban once which of its
entries arrived, instead of sending them again. Unbans work the same way with `removing`,
and an entry is never unbanned when bangd did not ban it (`owned`) or another source still
lists it for that jail. The importer and the reconciler share one Applier, and with it one
lock: an import's unban must never race a reconciliation's re-ban of the same entry.

Two batch sizes meet here, and they are different things. The Applier's batch
(`fail2ban.batch_size`) is the unit of crash safety and of the ledger's commits: what may
be in doubt after a crash. The fail2ban client splits each such batch into wire calls of
its own size, measured from fail2ban's reply times so that no call nears
`fail2ban.timeout` (a slow firewall action makes fail2ban slow per ban). So one Applier
batch may be several `banip` calls; it is confirmed once all of them answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from .. import slices, windows
from ..errors import UnknownJail
from ..store.imports import ImportStore, Unfinished, chunked

log = logging.getLogger(__name__)


class Banning(Protocol):
    async def ban(self, jail: str, addrs: Sequence[str]) -> int: ...
    async def banned_among(
        self, jail: str, entries: Sequence[str], *, held: bool = True
    ) -> Sequence[str]: ...


class Fail2ban(Banning, Protocol):
    async def unban(self, jail: str, addrs: Sequence[str]) -> int: ...


Progress = Callable[[int, int], None]  # (done, total) after each batch


class Applier:
    def __init__(
        self,
        store: ImportStore,
        fail2ban: Fail2ban,
        *,
        batch_size: int = 1000,
        lock: asyncio.Lock | None = None,
    ) -> None:
        self.store = store
        self.fail2ban = fail2ban
        self.batch_size = _checked(batch_size)
        # Held by the callers around a whole apply, recovery or reconciliation.
        self.lock = lock if lock is not None else asyncio.Lock()

    def reconfigure(self, *, batch_size: int) -> None:
        """New `fail2ban.batch_size`, from the next batch on."""
        self.batch_size = _checked(batch_size)

    async def add(
        self, name: str, jail: str, entries: Sequence[str], run_id: int | None,
        progress: Progress | None = None,
    ) -> int:
        """Apply new entries; return how many were sent to fail2ban."""
        others = await self.store.held_by_others(jail, name)
        held = await self.fail2ban.banned_among(jail, entries)
        known, to_send = await _classify(entries, others, held)
        if known:
            await self.store.record(name, jail, known, run_id)
        # Pipelined: while fail2ban works on batch i, the database confirms batch i-1 and
        # records batch i+1 as pending. Each batch is still pending before it is sent and
        # confirmed only after fail2ban answered, so the crash-safety rule holds.
        size = self.batch_size
        count = -(-len(to_send) // size)  # batches, each sliced only when it is next
        if not count:
            return 0
        in_flight = await self.store.record_pending(name, jail, to_send[:size], run_id)
        answered: int | None = None  # the batch fail2ban took last, not yet confirmed
        for i in range(count):
            ban = asyncio.create_task(self.fail2ban.ban(jail, to_send[i * size : (i + 1) * size]))
            try:
                upcoming = to_send[(i + 1) * size : (i + 2) * size]
                following = await self.store.record_pending(
                    name, jail, upcoming, run_id, confirm=answered
                )
            finally:
                await asyncio.wait({ban})
            ban.result()
            answered, in_flight = in_flight, following
            if progress is not None:
                progress(min((i + 1) * size, len(to_send)), len(to_send))
        if answered is not None:
            await self.store.confirm(answered)
        return len(to_send)

    async def remove(
        self, name: str, jail: str, entries: Sequence[str], progress: Progress | None = None
    ) -> int:
        """Batch by batch: marked `removing` (so a crash is settled later), then lifted."""
        done = 0
        for batch in chunked(entries, self.batch_size):
            await self.store.mark_removing(name, jail, batch)
            await self._withdraw(name, jail, batch, None)
            done += len(batch)
            if progress is not None:
                progress(done, len(entries))
        return len(entries)

    async def remove_all(
        self, name: str, jail: str, progress: Progress | None = None
    ) -> int:
        """Lift everything `name` applied to `jail` (it left the config, or the jail)."""
        return await self.remove(name, jail, await self.store.entries_of(name, jail), progress)

    async def recover(self, name: str, unfinished: Sequence[Unfinished]) -> None:
        """Settle rows a crash left half-done, asking fail2ban once per jail."""
        by_jail: dict[str, list[Unfinished]] = {}
        for row in unfinished:
            by_jail.setdefault(row.jail, []).append(row)
        for jail, rows in by_jail.items():
            banned = await self._held_or_gone(jail, [r.entry for r in rows])
            arrived = [r.entry for r in rows if r.state == "pending" and r.entry in banned]
            lost = [r.entry for r in rows if r.state == "pending" and r.entry not in banned]
            removing = [r.entry for r in rows if r.state == "removing"]
            await self.store.settle(name, jail, arrived=arrived, lost=lost)
            if removing:
                await self._withdraw(name, jail, removing, banned)
            log.warning(
                "source=%s jail=%s recovered after an interrupted run: arrived=%d "
                "not_arrived=%d unbans_finished=%d",
                name, jail, len(arrived), len(lost), len(removing),
            )

    async def reban(self, jail: str, entries: Sequence[str]) -> None:
        """Ban entries fail2ban lost, as bangd's own bans. Marked owned before each ban: a
        crash after it must not leave bangd's ban looking like someone else's."""
        for batch in chunked(entries, self.batch_size):
            await self.store.claim(jail, batch)
            await self.fail2ban.ban(jail, batch)

    async def missing(self, jail: str, entries: Sequence[str]) -> Sequence[str]:
        """Which of `entries` fail2ban does not hold in `jail`, in their order."""
        return await self.fail2ban.banned_among(jail, entries, held=False)

    async def _withdraw(
        self, name: str, jail: str, entries: Sequence[str], banned: set[str] | None
    ) -> None:
        """Unban `removing` entries this source held, then forget them."""
        for batch in chunked(entries, self.batch_size):
            others = await self.store.held_by_others_among(jail, name, batch)
            owned = await self.store.owned_of(name, jail, batch)
            lift = [
                e for e in batch
                if owned.get(e) and e not in others and (banned is None or e in banned)
            ]
            if lift:
                try:
                    await self.fail2ban.unban(jail, lift)
                except UnknownJail:
                    log.warning("source=%s jail=%s no longer exists in fail2ban; forgetting "
                                "its %d entries there", name, jail, len(entries))
            await self.store.forget(name, jail, batch)

    async def _held_or_gone(self, jail: str, entries: Sequence[str]) -> set[str]:
        """Which of `entries` fail2ban holds in `jail`; none if the jail was deleted."""
        try:
            return set(await self.fail2ban.banned_among(jail, entries))
        except UnknownJail:
            return set()


def _checked(batch_size: int) -> int:
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    return batch_size


async def _classify(
    entries: Sequence[str], others: dict[str, int], held: Sequence[str]
) -> tuple[list[tuple[str, str, int]], Sequence[str]]:
    """Split new entries into rows to record as they are, and addresses to send.

    An entry another source already applied to the jail inherits its ownership; one that
    fail2ban already held (`held`: someone else's ban) is recorded as not bangd's to lift.
    In the event loop, a slice at a time (`slices`).
    """
    if not others and not held:
        return [], entries  # nothing known yet: all of it, not a copy
    held_set = await slices.set_of(held)
    known: list[tuple[str, str, int]] = []
    to_send: list[str] = []
    for start in range(0, len(entries), windows.SLICE):
        for entry in entries[start : start + windows.SLICE]:
            if entry in others:
                known.append((entry, "applied", others[entry]))
            elif entry in held_set:
                known.append((entry, "applied", 0))
            else:
                to_send.append(entry)
        await slices.pause()
    return known, to_send
