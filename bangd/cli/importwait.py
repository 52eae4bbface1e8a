"""`bangctl import`: wait for the answer as long as the daemon shows the import progressing.

An import may rightly take minutes, so one fixed timeout would either cut a big import short
or let a dead daemon (or another program's socket) hang bangctl forever. Instead the import
request waits on its own connection while a second connection asks for `sources` about once
a second: every answer that shows a watched source `running` grants another `--timeout`
seconds. When the daemon neither answers the import nor shows progress for that long,
bangctl gives up (DaemonUnreachable, exit 3).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from ..control.client import ControlClient, DaemonUnreachable, result_of
from ..errors import ControlError
from .tables import duration, safe

POLL_INTERVAL = 1.0  # seconds between `sources` polls while an import runs


class ProgressLine:
    """One line on a terminal, rewritten in place; silent on anything but a terminal, so
    pipes, logs and cron mail get exactly the summary and nothing else."""

    def __init__(self, stream: TextIO, *, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled and stream.isatty()
        self._shown = False

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        width = max(20, shutil.get_terminal_size().columns - 1)
        self.stream.write("\r" + text[:width] + "\x1b[K")
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False


def stderr_progress(*, enabled: bool) -> ProgressLine:
    return ProgressLine(sys.stderr, enabled=enabled)


def describe(rows: Sequence[dict[str, Any]], elapsed: float) -> str:
    """The progress line: each running source, with its `progress` object when the daemon
    sends one (`{"phase": "applying", "done": N, "total": M}`), else just `running`."""
    parts = [f"{safe(row.get('name'))} {_progress(row.get('progress'))}" for row in rows]
    return f"importing {', '.join(parts)} ({duration(elapsed)})"


def _progress(progress: object) -> str:
    if not isinstance(progress, dict):
        return "running"
    phase = safe(progress.get("phase") or "running")
    done, total = progress.get("done"), progress.get("total")
    if isinstance(done, int) and isinstance(total, int) and total > 0:
        return f"{phase} {done:,}/{total:,} ({100 * done // total}%)"
    if isinstance(done, int):
        return f"{phase} {done:,}"
    return phase


def call_import(
    path: str,
    args: dict[str, Any],
    *,
    timeout: float,
    progress: ProgressLine,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Send `import` and return its result, waiting while the daemon shows progress."""
    watched = set(args.get("sources") or [])  # empty: --all, any source counts
    interval = min(POLL_INTERVAL, timeout / 3)
    started = clock()
    deadline = started + timeout
    with ControlClient(path, timeout=timeout) as main, \
            ControlClient(path, timeout=timeout) as poller:
        main.send("import", args)
        try:
            while True:
                response = main.receive(interval)
                if response is not None:
                    return result_of(response)
                running = _running(poller, watched, within=max(0.05, deadline - clock()))
                if running is not None:
                    deadline = clock() + timeout
                    progress.show(describe(running, clock() - started))
                if clock() >= deadline:
                    raise DaemonUnreachable(
                        f"bangd at {path} neither answered 'import' nor showed it running "
                        f"for {timeout:g}s; giving up (it may still finish: see bangctl "
                        "runs; --timeout waits longer)"
                    )
        finally:
            progress.clear()


def _running(
    poller: ControlClient, watched: set[str], *, within: float
) -> list[dict[str, Any]] | None:
    """The watched sources the daemon reports `running`; None when it reports none of them
    running, or does not answer in time (both mean: no sign of progress)."""
    try:
        rows = poller.call("sources", within=within).get("sources")
    except (DaemonUnreachable, ControlError):
        return None
    if not isinstance(rows, list):
        return None
    running = [
        row for row in rows
        if isinstance(row, dict) and row.get("last_state") == "running"
        and (not watched or row.get("name") in watched)
    ]
    return running or None
