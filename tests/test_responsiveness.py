"""A 1M-line list is parsed and compared without holding the event loop."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import aiohttp
import pytest

from bangd.config import SourceConfig
from bangd.services.importer import FilterSettings, Importer
from bangd.sources.fetch import Fetcher, make_session
from bangd.store.db import Database
from bangd.store.imports import ImportStore

LINES = 1_000_000


class Unused:
    """fail2ban is not reached by a dry run; any call would be a bug."""

    async def ban(self, jail: str, addrs: object) -> int:
        raise AssertionError("dry run sent a ban")

    async def unban(self, jail: str, addrs: object) -> int:
        raise AssertionError("dry run sent an unban")

    async def banned_among(
        self, jail: str, entries: object, *, held: bool = True
    ) -> list[str]:
        raise AssertionError("dry run asked fail2ban")


async def max_loop_gap(stop: asyncio.Event) -> float:
    """Longest time the loop took to come back to a 10 ms sleep."""
    worst = 0.0
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.01)
        worst = max(worst, time.perf_counter() - t0 - 0.01)
    return worst


@pytest.mark.slow
async def test_a_million_line_import_keeps_the_event_loop_responsive(tmp_path: Path) -> None:
    rng = random.Random(3)
    path = tmp_path / "big.txt"
    path.write_text("\n".join(
        f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        for _ in range(LINES)
    ))
    db = await Database.open(str(tmp_path / "bangd.db"))
    session: aiohttp.ClientSession = make_session()
    try:
        importer = Importer(ImportStore(db), Unused(), Fetcher(session, user_agent="t"))
        source = SourceConfig(name="big", jail="bl", interval=3600, path=str(path))
        stop = asyncio.Event()
        watcher = asyncio.create_task(max_loop_gap(stop))
        summary = await importer.run(
            source, FilterSettings((), skip_reserved=True), dry_run=True
        )
        stop.set()
        gap = await watcher
    finally:
        await session.close()
        await db.close()
    assert summary.state == "would-change", summary.error
    assert summary.added > 900_000
    assert gap < 0.5, f"the event loop was held for {gap:.2f} s"
