"""The daemon's lifecycle: start, serve, stop; signals; reload; systemd notifications.

`run()` is `start()`, `serve()`, `stop()`. Everything started is registered on one
AsyncExitStack, so teardown runs in reverse order and every step runs even if an earlier
one fails. Signal handlers only set events; the main loop acts on them. What bangd does
lives in the App (its services), the jobs and the commands; this only runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from . import __version__, jobs
from .app import App
from .commands import Commands
from .config import Config, load_config
from .control.server import ControlServer, claim_socket_path
from .errors import BangdError, ConfigError, ReloadRefused
from .logs import set_level
from .notify import Notifier, SystemdNotifier, watchdog_interval

log = logging.getLogger(__name__)

STOP_GRACE = 7.0  # running work gets this long to reach a safe point; the unit allows 10 s


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.notifier: Notifier = notifier if notifier is not None else SystemdNotifier()
        self.clock = clock
        self.stopping = asyncio.Event()
        self.hurry = asyncio.Event()  # a second stop signal: cut the grace period short
        self.reload_requested = asyncio.Event()
        self.failure: BangdError | None = None  # why the daemon stopped itself
        self.app: App | None = None
        self._stack = contextlib.AsyncExitStack()
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        """start, serve, stop. The signal handlers stay for the whole run, teardown
        included, so a second Ctrl-C hurries the stop instead of interrupting it; a reason
        the daemon stopped itself (a damaged database) is raised at the end."""
        self._install_signal_handlers()
        try:
            try:
                await self.start()
                await self.serve()
            finally:
                await self.stop()
        finally:
            self._remove_signal_handlers()
        if self.failure is not None:
            raise self.failure

    async def start(self) -> None:
        config = self.config
        stack = self._stack
        # Refuse early if another bangd is live, before touching its database.
        claim_socket_path(config.control.socket)
        self.notifier.notify("STATUS=opening database")
        app = self.app = await App.open(config, stack, clock=self.clock)
        app.on_status_change.append(self.update_status)
        app.on_failure.append(self._fail)

        await app.scheduler.start()
        stack.push_async_callback(functools.partial(app.scheduler.stop, STOP_GRACE,
                                                    hurry=self.hurry))
        jobs.schedule(app)
        app.monitor.start()
        stack.push_async_callback(app.monitor.stop)

        control = ControlServer(
            config.control.socket,
            Commands(app, reload=self.reload).handlers(),
            mode=config.control.mode,
            group=config.control.group,
            idle_timeout=config.control.idle_timeout,
        )
        await control.start()
        stack.push_async_callback(control.stop)

        watchdog = watchdog_interval()
        if watchdog is not None:
            self._spawn(self._watchdog(watchdog), "watchdog")
        stack.push_async_callback(self._cancel_tasks)

        self.notifier.notify("READY=1")
        self.update_status()
        log.info("bangd %s ready pid=%d sources=%d control=%s",
                 __version__, os.getpid(), len(config.sources), config.control.socket)

    async def serve(self) -> None:
        while not self.stopping.is_set():
            stop_wait = asyncio.ensure_future(self.stopping.wait())
            reload_wait = asyncio.ensure_future(self.reload_requested.wait())
            try:
                await asyncio.wait(
                    {stop_wait, reload_wait}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stop_wait.cancel()
                reload_wait.cancel()
            if self.reload_requested.is_set() and not self.stopping.is_set():
                self.reload_requested.clear()
                with contextlib.suppress(ConfigError):
                    await self.reload()

    async def stop(self) -> None:
        """Undo start() in reverse; safe to call twice."""
        self.stopping.set()
        self.notifier.notify("STOPPING=1")
        self.notifier.notify("STATUS=stopping")
        started = time.monotonic()
        await self._stack.aclose()
        log.info("bangd stopped took=%.2fs", time.monotonic() - started)

    # -- reload ---------------------------------------------------------------------------

    async def reload(self) -> dict[str, Any]:
        """Swap in a new config if it is valid (ReloadRefused otherwise, old one kept)."""
        async with self._reload_lock:  # SIGHUP and `bangctl reload` may arrive together
            return await self._reload()

    async def _reload(self) -> dict[str, Any]:
        assert self.app is not None, "reload before start"
        try:
            new = load_config(self.config.path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused, keeping the running config: %s", problem)
            self.update_status()
            raise ReloadRefused(exc.problems) from None
        old, self.config = self.config, new
        restart_needed = [
            key
            for key, before, after in (
                ("database", old.database, new.database),
                ("control", old.control, new.control),
            )
            if before != after
        ]
        set_level(new.log_level)
        await self.app.reconfigure(new)
        await jobs.reschedule(self.app, old, new)
        for key in restart_needed:
            log.warning("reload: %s changed; it takes effect at the next restart", key)
        log.info("reload done config=%s sources=%d", new.path, len(new.sources))
        self.update_status()
        return {"reloaded": True, "config": new.path, "restart_needed": restart_needed}

    # -- systemd --------------------------------------------------------------------------

    def update_status(self) -> None:
        app = self.app
        reachable = app.monitor.health.reachable if app is not None else None
        f2b = {True: "up", False: "DOWN", None: "not checked"}[reachable]
        text = f"fail2ban {f2b}; {len(self.config.sources)} sources"
        if app is not None and app.last_import is not None:
            text += f"; last import {app.last_import}"
        self.notifier.notify(f"STATUS={text}")

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- signals --------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def _fail(self, failure: BangdError) -> None:
        """Stop the daemon for `failure` (exit status 1): running on would lose writes."""
        if self.failure is None:
            self.failure = failure  # logged once, by the command line, at exit
            self.notifier.notify(f"STATUS=stopping: {failure}"[:400])
        self.stopping.set()

    def _on_stop_signal(self, name: str) -> None:
        if self.stopping.is_set():
            if not self.hurry.is_set():
                log.warning("second %s: cutting the grace period short; running work is "
                            "cancelled at a safe point", name)
            self.hurry.set()
            return
        log.info("%s received: stopping", name)
        self.stopping.set()

    def _on_hup(self) -> None:
        log.info("SIGHUP received: reloading %s", self.config.path)
        self.reload_requested.set()
