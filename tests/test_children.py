"""A child process's end is told in one line: how it ended, and what it did wrong."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bangd import children
from bangd.children import Child, ChildFailed, exit_reason
from bangd.fail2ban import banned_child
from bangd.sources import parse_child


def test_a_real_time_signal_is_named_by_its_number() -> None:
    number = signal.SIGRTMIN + 2
    assert exit_reason(-number) == f"was killed by signal {number}"


def test_a_kill_is_named_with_its_likely_cause() -> None:
    assert exit_reason(-signal.SIGKILL) == "was killed by SIGKILL (out of memory?)"


async def test_a_child_that_ends_without_reading_its_input_is_said_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(children, "_BOOT", "pass")
    async with await Child.start("unused", "the test process") as child:
        with pytest.raises(ChildFailed) as failed:
            await child.send(bytes(4 << 20))  # more than a pipe holds
    assert str(failed.value) == "the test process ended before it had read its input"


async def test_a_child_that_hangs_is_stopped_within_the_step_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(children, "STEP_LIMIT", 0.2)
    monkeypatch.setattr(children, "_BOOT", "import time; time.sleep(600)")
    async with await Child.start("unused", "the test process") as child:
        with pytest.raises(ChildFailed) as failed:
            await child.receive()
        assert child._proc.returncode is not None  # stopped and reaped
    assert str(failed.value) == "the test process did not answer within 0.2 s and was stopped"


@pytest.mark.parametrize("module", [banned_child.__name__, parse_child.__name__])
def test_a_child_loads_none_of_the_daemons_event_loop(module: str) -> None:
    """asyncio alone is 5 MiB of a child's resident memory."""
    loaded = subprocess.run(
        [sys.executable, "-I", "-c",
         f"import sys; sys.path.insert(0, sys.argv[1]); import bangd.child, {module}; "
         "print(sorted(m for m in sys.modules if m.split('.')[0] in ('asyncio', 'aiohttp', "
         "'aiosqlite')))", str(Path(children.__file__).resolve().parent.parent)],
        capture_output=True, text=True, check=True,
    ).stdout
    assert loaded.strip() == "[]"
