"""The scheduler: intervals, one run at a time, run now, backoff, state across restarts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bangd.control.errors import error_reply
from bangd.errors import JobBusy, UnknownJob
from bangd.scheduler import Job, Scheduler
from bangd.store.db import Database


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Counter:
    def __init__(self, fail: bool = False) -> None:
        self.runs = 0
        self.fail = fail
        self.ran = asyncio.Event()
        self.release: asyncio.Event | None = None

    async def __call__(self) -> dict[str, Any]:
        self.runs += 1
        self.ran.set()
        if self.release is not None:
            await self.release.wait()
        if self.fail:
            raise RuntimeError("list server down")
        return {"runs": self.runs}


class HeldRun:
    """A scheduler whose job "j" is in the middle of a run_now, until `release` is set."""

    def __init__(self, db: Database) -> None:
        self.sched = Scheduler(db)
        self.job = Counter()
        self.release = self.job.release = asyncio.Event()
        self.sched.add(Job("j", 3600, self.job))

    async def start(self) -> asyncio.Task[dict[str, Any]]:
        first = asyncio.create_task(self.sched.run_now("j"))
        await asyncio.wait_for(self.job.ran.wait(), 5)
        return first


class FinishWatcher(Scheduler):
    """A scheduler that says when a run's end has been handled (recorded or not)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.finished = asyncio.Event()

    async def _finish(self, entry: Any, outcome: str, *, shielded: bool = False) -> None:
        await super()._finish(entry, outcome, shielded=shielded)
        self.finished.set()


async def held_run(db: Database) -> tuple[Scheduler, HeldRun, asyncio.Task[dict[str, Any]]]:
    held = HeldRun(db)
    return held.sched, held, await held.start()


async def test_a_job_that_never_ran_runs_at_start(db: Database) -> None:
    sched = Scheduler(db, rng=lambda: 0.0)
    job = Counter()
    sched.add(Job("j", 3600, job))
    await sched.start()
    await asyncio.wait_for(job.ran.wait(), 5)
    await sched.stop()
    assert job.runs == 1


async def test_after_a_run_the_next_is_one_interval_plus_jitter_later(db: Database) -> None:
    clock = Clock()
    sched = Scheduler(db, clock=clock, rng=lambda: 0.5)
    sched.add(Job("j", 1000, Counter(), jitter=0.1))
    await sched.run_now("j")
    state = sched.state("j")
    assert state is not None
    assert state.next_run == clock.now + 1000 + 50


async def test_jitter_is_capped_at_five_minutes(db: Database) -> None:
    clock = Clock()
    sched = Scheduler(db, clock=clock, rng=lambda: 1.0)
    sched.add(Job("j", 86400, Counter(), jitter=0.5))
    await sched.run_now("j")
    state = sched.state("j")
    assert state is not None and state.next_run == clock.now + 86400 + 300


async def test_a_restart_does_not_rerun_a_job_that_is_not_due(db: Database) -> None:
    clock = Clock()
    first = Scheduler(db, clock=clock, rng=lambda: 0.0)
    first.add(Job("j", 3600, Counter()))
    await first.run_now("j")
    clock.now += 60
    second = Scheduler(db, clock=clock, rng=lambda: 0.0)
    await second.start()
    job = Counter()
    second.add(Job("j", 3600, job))
    state = second.state("j")
    assert state is not None and state.next_run == clock.now - 60 + 3600
    await second.stop()
    assert job.runs == 0


async def test_run_now_while_running_is_busy(db: Database) -> None:
    sched, held, first = await held_run(db)
    with pytest.raises(JobBusy) as info:
        await sched.run_now("j")
    assert error_reply(info.value)[0] == "busy"
    held.release.set()
    assert await first == {"runs": 1}


async def test_run_now_of_an_unknown_job_is_not_found(db: Database) -> None:
    with pytest.raises(UnknownJob) as info:
        await Scheduler(db).run_now("nope")
    assert error_reply(info.value)[0] == "not_found"


async def test_failures_back_off_exponentially_up_to_the_interval(db: Database) -> None:
    clock = Clock()
    sched = Scheduler(db, clock=clock)
    sched.add(Job("j", 200, Counter(fail=True), first_retry=30))
    delays = []
    for _ in range(4):
        with pytest.raises(RuntimeError):
            await sched.run_now("j")
        state = sched.state("j")
        assert state is not None and state.next_run is not None
        delays.append(state.next_run - clock.now)
    assert delays == [30, 60, 120, 200]


async def test_a_success_resets_the_failure_count(db: Database) -> None:
    sched = Scheduler(db, rng=lambda: 0.0)
    job = Counter(fail=True)
    sched.add(Job("j", 100, job))
    with pytest.raises(RuntimeError):
        await sched.run_now("j")
    job.fail = False
    await sched.run_now("j")
    state = sched.state("j")
    assert state is not None and (state.failures, state.last_state) == (0, "ok")


async def test_state_is_persisted(db: Database) -> None:
    sched = Scheduler(db)
    sched.add(Job("j", 100, Counter(fail=True)))
    with pytest.raises(RuntimeError):
        await sched.run_now("j")
    row = await db.fetchone("SELECT * FROM job_state WHERE name = 'j'")
    assert row is not None
    assert (row["last_state"], row["failures"], row["last_error"]) == (
        "failed", 1, "list server down",
    )


async def test_a_run_left_running_by_a_dead_bangd_is_interrupted_and_runs_again(
    db: Database,
) -> None:
    await db.execute(
        "INSERT INTO job_state (name, last_started, last_state, failures)"
        " VALUES ('j', 1, 'running', 0)"
    )
    sched = Scheduler(db)
    await sched.start()
    job = Counter()
    sched.add(Job("j", 3600, job))
    await asyncio.wait_for(job.ran.wait(), 5)
    await sched.stop()
    row = await db.fetchone("SELECT last_state FROM job_state WHERE name = 'j'")
    assert row is not None and row["last_state"] == "ok"


async def test_one_failing_job_does_not_stop_another(db: Database) -> None:
    sched = Scheduler(db)
    bad, good = Counter(fail=True), Counter()
    sched.add(Job("bad", 3600, bad))
    sched.add(Job("good", 3600, good))
    await sched.start()
    await asyncio.wait_for(asyncio.gather(bad.ran.wait(), good.ran.wait()), 5)
    await sched.stop()
    state = sched.state("good")
    assert state is not None and state.last_state == "ok"


async def test_stop_cancels_a_run_that_overstays_its_grace_and_marks_it_interrupted(
    db: Database,
) -> None:
    sched = Scheduler(db)
    job = Counter()
    job.release = asyncio.Event()  # never set: the job hangs
    sched.add(Job("j", 3600, job))
    await sched.start()
    await asyncio.wait_for(job.ran.wait(), 5)
    await sched.stop(grace=0.1)
    row = await db.fetchone("SELECT last_state FROM job_state WHERE name = 'j'")
    assert row is not None and row["last_state"] == "interrupted"


async def test_run_now_with_wait_runs_after_the_current_run_ends(db: Database) -> None:
    sched, held, first = await held_run(db)
    second = asyncio.create_task(sched.run_now("j", wait=True))
    await asyncio.sleep(0)
    assert not second.done()
    held.release.set()
    assert await first == {"runs": 1}
    assert await second == {"runs": 2}


async def test_a_job_that_came_due_while_its_slot_was_held_runs_when_released(
    db: Database,
) -> None:
    clock = Clock()
    sched = Scheduler(db, clock=clock)
    job = Counter()
    sched.add(Job("j", 3600, job))
    async with sched.exclusive("j"):  # e.g. a dry run
        await sched.start()
        await asyncio.sleep(0.05)  # the timer finds the slot taken
        assert job.runs == 0
    await asyncio.wait_for(job.ran.wait(), 5)
    await sched.stop()


async def test_backoff_does_not_overflow_after_thousands_of_failures(db: Database) -> None:
    await db.execute(
        "INSERT INTO job_state (name, last_finished, last_state, failures)"
        " VALUES ('j', 1000, 'failed', 5000)"
    )
    clock = Clock()
    sched = Scheduler(db, clock=clock)
    await sched.start()
    sched.add(Job("j", 60, Counter()))
    state = sched.state("j")
    assert state is not None and state.next_run == 1000 + 60


async def test_make_due_during_a_run_runs_the_job_again_right_after(db: Database) -> None:
    sched, held, first = await held_run(db)
    sched.make_due("j")
    held.release.set()
    await first
    state = sched.state("j")
    assert state is not None and state.next_run is not None
    assert state.next_run <= time.time()


async def test_remove_cancels_a_running_job_without_waiting_for_it(db: Database) -> None:
    sched = Scheduler(db)
    job = Counter()
    job.release = asyncio.Event()  # never set
    sched.add(Job("j", 3600, job))
    await sched.start()
    await asyncio.wait_for(job.ran.wait(), 5)
    await asyncio.wait_for(sched.remove("j"), 5)
    row = await db.fetchone("SELECT last_state FROM job_state WHERE name = 'j'")
    assert row is not None and row["last_state"] == "interrupted"


async def test_a_failure_to_record_state_does_not_make_the_job_spin(db: Database) -> None:
    sched = FinishWatcher(db)
    await sched.start()
    await db.execute("DROP TABLE job_state")  # from now on every record fails
    sched.add(Job("j", 3600, Counter()))
    await asyncio.wait_for(sched.finished.wait(), 5)
    await sched.stop()
    state = sched.state("j")
    assert state is not None
    assert (state.last_state, state.failures) == ("failed", 1)
    assert state.next_run is not None and state.next_run > time.time()


async def test_update_with_the_same_interval_keeps_a_requested_run(db: Database) -> None:
    clock = Clock()
    sched = Scheduler(db, clock=clock)
    sched.add(Job("j", 3600, Counter()))
    await sched.run_now("j")
    sched.make_due("j")
    sched.update(Job("j", 3600, Counter()))  # e.g. a reload that changed something else
    state = sched.state("j")
    assert state is not None and state.next_run == clock.now


async def test_update_with_a_new_interval_reschedules(db: Database) -> None:
    clock = Clock()
    sched = Scheduler(db, clock=clock, rng=lambda: 0.0)
    sched.add(Job("j", 3600, Counter()))
    await sched.run_now("j")
    sched.update(Job("j", 60, Counter()))
    state = sched.state("j")
    assert state is not None and state.next_run == clock.now + 60


async def test_a_job_removed_and_added_back_resumes_from_its_latest_run(db: Database) -> None:
    clock = Clock()
    sched = Scheduler(db, clock=clock, rng=lambda: 0.0)
    await sched.start()
    sched.add(Job("j", 3600, Counter()))
    await sched.run_now("j")
    await sched.remove("j")
    clock.now += 60
    sched.add(Job("j", 3600, Counter()))
    state = sched.state("j")
    assert state is not None and state.next_run == clock.now - 60 + 3600
    await sched.stop()
