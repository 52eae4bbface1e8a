"""Periodic jobs: an interval with jitter, one run at a time, "run now", state in SQLite.

The last start/finish of every job is stored, so a restart waits for what is not due instead
of redoing it, and a run that was in progress when bangd died is found as `running` at start
and marked `interrupted`, which makes it due at once. A failing job retries with exponential
backoff capped at its interval; one job failing never stops another.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import JobBusy, UnknownJob
from .store.db import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobOutcome:
    """How a run ended when it has a result worth showing either way (an import summary
    that says `failed`): `error` set means the run counts as failed, with backoff."""

    result: dict[str, Any]
    error: str | None = None
    logged: bool = False  # the job logged its failure itself: the scheduler stays quiet


# A plain dict is a successful run's result; raising also marks the run failed.
JobFunc = Callable[[], Awaitable[dict[str, Any] | JobOutcome]]

FIRST_RETRY = 30.0
MAX_JITTER = 300.0
MAX_DOUBLINGS = 30  # 30 s * 2**30 is far past any interval; more would overflow a float


@dataclass
class Job:
    """A named periodic task. `run` returns a summary, or a JobOutcome that may say the
    run failed; raising marks the run failed too."""

    name: str
    interval: float
    run: JobFunc
    jitter: float = 0.1  # fraction of the interval, capped at MAX_JITTER seconds
    first_retry: float = FIRST_RETRY


@dataclass
class JobState:
    name: str
    interval: float
    running: bool = False
    last_started: float | None = None
    last_finished: float | None = None
    last_state: str | None = None
    last_error: str | None = None
    failures: int = 0
    next_run: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "interval": self.interval,
            "running": self.running,
            "last_started": self.last_started,
            "last_finished": self.last_finished,
            "last_state": self.last_state,
            "last_error": self.last_error,
            "failures": self.failures,
            "next_run": self.next_run,
        }


@dataclass
class _Entry:
    job: Job
    state: JobState
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None
    rerun: bool = False  # make_due() arrived while running: run again right after
    current: asyncio.Future[dict[str, Any] | None] | None = None  # the run under way


class Scheduler:
    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.db = db
        self.clock = clock
        self.rng = rng
        self._entries: dict[str, _Entry] = {}
        self._stored: dict[str, JobState] = {}
        self._started = False
        self._stopping = False

    async def start(self) -> None:
        """Load stored state; runs left `running` by a dead bangd become `interrupted`."""
        now = self.clock()
        interrupted = await self.db.execute(
            "UPDATE job_state SET last_state = 'interrupted', last_finished = ?, "
            "last_error = 'bangd stopped during this run' WHERE last_state = 'running'",
            (now,),
        )
        if interrupted:
            log.warning("jobs interrupted by the previous stop: %d; they run again now",
                        interrupted)
        for row in await self.db.fetchall("SELECT * FROM job_state"):
            self._stored[row["name"]] = JobState(
                name=row["name"],
                interval=0.0,
                last_started=row["last_started"],
                last_finished=row["last_finished"],
                last_state=row["last_state"],
                last_error=row["last_error"],
                failures=row["failures"],
            )
        self._started = True
        for entry in self._entries.values():
            self._launch(entry)

    def add(self, job: Job) -> None:
        if job.interval <= 0:
            raise ValueError(f"job {job.name}: interval must be positive")
        if job.name in self._entries:
            raise ValueError(f"job {job.name} already scheduled")
        stored = self._stored.get(job.name)
        state = (
            dataclasses.replace(stored, interval=job.interval, running=False, next_run=None)
            if stored is not None
            else JobState(name=job.name, interval=job.interval)
        )
        entry = _Entry(job, state)
        entry.state.next_run = self._next_run(entry)
        self._entries[job.name] = entry
        if self._started:
            self._launch(entry)

    def update(self, job: Job) -> None:
        """Add a job, or replace its definition (e.g. after a reload) keeping its state.

        The next run moves only if the interval changed: a reload must not re-roll the
        jitter, nor undo a make_due() that asked for a run soon.
        """
        entry = self._entries.get(job.name)
        if entry is None:
            self.add(job)
            return
        changed = job.interval != entry.job.interval
        entry.job = job
        entry.state.interval = job.interval
        if changed:
            entry.state.next_run = self._next_run(entry)
            entry.wake.set()

    async def remove(self, name: str) -> None:
        """Unschedule a job. A timer run in progress is cancelled (jobs are cancel-safe and
        record `interrupted`), so a reload or a stop never waits on a long import."""
        entry = self._entries.pop(name, None)
        if entry is None:
            return
        if entry.task is not None:
            entry.task.cancel()
            await asyncio.gather(entry.task, return_exceptions=True)
        self._stored[name] = entry.state  # a job added back later resumes from here

    def names(self) -> list[str]:
        return list(self._entries)

    def state(self, name: str) -> JobState | None:
        entry = self._entries.get(name)
        return entry.state if entry is not None else None

    def states(self) -> list[JobState]:
        return [entry.state for entry in self._entries.values()]

    async def run_now(
        self, name: str, func: JobFunc | None = None, *, wait: bool = False
    ) -> dict[str, Any]:
        """Run a job at once and return its summary (a failed outcome's too).

        If it is already running: `busy`, or with `wait` run it again once that run ends.
        `func` replaces the job's own function for this run (e.g. a forced import) while
        still counting as the job's run: same slot, same recorded state.
        """
        entry = self._entry(name)
        async with self.exclusive(name, wait=wait):
            return await self._run(entry, func)

    async def join(self, name: str) -> dict[str, Any] | None:
        """Wait for the run under way, if any, and return its result (a failed outcome's
        too); None when nothing was running or the run raised. Lets "import now" report
        the timer's run it waited for instead of running again."""
        entry = self._entry(name)
        if entry.current is None or entry.current.done():
            return None
        return await asyncio.shield(entry.current)

    def make_due(self, name: str) -> None:
        """Ask for a run soon without waiting for it (e.g. after fail2ban came back).

        If the job is running now, it runs again right after: the running one may have
        started before whatever made this request.
        """
        entry = self._entries.get(name)
        if entry is not None:
            entry.rerun = entry.state.running
            entry.state.next_run = self.clock()
            entry.wake.set()

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str, *, wait: bool = False) -> AsyncIterator[None]:
        """Hold a job's run slot, for work such as a dry run that must not overlap a run."""
        entry = self._entry(name)
        if entry.lock.locked() and not wait:
            raise JobBusy(f"{name} is running right now; try again when it ends")
        try:
            async with entry.lock:
                yield
        finally:
            entry.wake.set()  # the timer loop may be waiting for the slot

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownJob(f"no job named {name!r}")
        return entry

    async def stop(self, grace: float = 8.0, *, hurry: asyncio.Event | None = None) -> None:
        """Stop all timers; running jobs get `grace` seconds to reach a safe point, cut
        short when `hurry` is set (a second Ctrl-C). Jobs still running are then cancelled,
        which they survive consistently (their transactions roll back)."""
        self._stopping = True
        tasks = [e.task for e in self._entries.values() if e.task is not None]
        for entry in self._entries.values():
            entry.wake.set()
        if not tasks:
            return
        waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(asyncio.wait(tasks))}
        if hurry is not None:
            waiters.add(asyncio.ensure_future(hurry.wait()))
        try:
            await asyncio.wait(waiters, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _launch(self, entry: _Entry) -> None:
        if entry.task is None or entry.task.done():
            entry.task = asyncio.create_task(self._loop(entry), name=f"job:{entry.job.name}")

    def _next_run(self, entry: _Entry) -> float:
        state, job = entry.state, entry.job
        now = self.clock()
        if state.last_state in (None, "interrupted") or state.last_finished is None:
            return now
        if state.last_state == "failed" and state.failures > 0:
            doublings = min(state.failures - 1, MAX_DOUBLINGS)
            delay = min(job.interval, job.first_retry * 2.0**doublings)
        else:
            delay = job.interval + min(job.interval * job.jitter, MAX_JITTER) * self.rng()
        return state.last_finished + delay

    async def _loop(self, entry: _Entry) -> None:
        while not self._stopping:
            entry.wake.clear()
            due = entry.state.next_run if entry.state.next_run is not None else self.clock()
            wait = due - self.clock()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await entry.wake.wait()
                continue
            if entry.lock.locked():
                # A "run now" or a dry run holds the slot; exclusive() wakes us after it.
                await entry.wake.wait()
                continue
            async with entry.lock:
                with contextlib.suppress(Exception):  # _run logged it and rescheduled
                    await self._run(entry)
            if entry.state.next_run is None or entry.state.next_run <= self.clock():
                # Never spin: if bookkeeping failed (e.g. the disk is full), wait a retry.
                entry.state.next_run = self.clock() + entry.job.first_retry

    async def _run(self, entry: _Entry, func: JobFunc | None = None) -> dict[str, Any]:
        current = entry.current = asyncio.get_running_loop().create_future()
        result: dict[str, Any] | None = None  # raised: joiners get None and run it themselves
        try:
            result = await self._run_once(entry, func)
            return result
        finally:
            current.set_result(result)

    async def _run_once(self, entry: _Entry, func: JobFunc | None) -> dict[str, Any]:
        state = entry.state
        state.running = True
        state.last_started = self.clock()
        entry.rerun = False
        try:
            await self._persist(state, "running")
            outcome = await (func or entry.job.run)()
        except asyncio.CancelledError:
            state.last_error = "bangd stopped during this run"
            await self._finish(entry, "interrupted", shielded=True)
            raise
        except Exception as exc:
            await self._failed(entry, str(exc) or type(exc).__name__)
            raise
        if isinstance(outcome, JobOutcome):
            if outcome.error is not None:
                await self._failed(entry, outcome.error, logged=outcome.logged)
                return outcome.result
            outcome = outcome.result
        state.failures = 0
        state.last_error = None
        await self._finish(entry, "ok")
        return outcome

    async def _failed(self, entry: _Entry, error: str, *, logged: bool = False) -> None:
        state = entry.state
        state.failures += 1
        state.last_error = error
        await self._finish(entry, "failed")
        log.log(logging.DEBUG if logged else logging.ERROR,
                "job=%s state=failed failures=%d retry_in=%.0fs error=%s", entry.job.name,
                state.failures, (state.next_run or 0) - self.clock(), error)

    async def _finish(self, entry: _Entry, outcome: str, *, shielded: bool = False) -> None:
        """Record how a run ended and schedule the next, even if recording fails."""
        state = entry.state
        state.running = False
        state.last_finished = self.clock()
        state.last_state = outcome
        try:
            if shielded:
                await asyncio.shield(self._persist(state, outcome))
            else:
                await self._persist(state, outcome)
        except Exception:
            log.exception("job=%s: recording its state failed", entry.job.name)
        finally:
            state.next_run = self.clock() if entry.rerun else self._next_run(entry)
            entry.rerun = False
            entry.wake.set()

    async def _persist(self, state: JobState, job_state: str) -> None:
        state.last_state = job_state
        await self.db.execute(
            "INSERT INTO job_state (name, last_started, last_finished, last_state, last_error,"
            " failures) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
            " last_started = excluded.last_started, last_finished = excluded.last_finished,"
            " last_state = excluded.last_state, last_error = excluded.last_error,"
            " failures = excluded.failures",
            (state.name, state.last_started, state.last_finished, job_state,
             state.last_error, state.failures),
        )
