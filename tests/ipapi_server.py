"""A local imitation of ip-api.com's batch endpoint, strict about its limits.

It enforces what the real service does (at most 100 queries per request, a request budget
per window announced in X-Rl/X-Ttl, 429 past it, `fail` answers for private, reserved
and invalid addresses) and records every request, so tests can assert on batching,
waiting and, above all, that the client never kept sending after being told to stop.

Time comes from an injectable clock; `FakeClock` lets the client's injected sleep move
that same clock, so waiting out a 60 s window takes no real time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

MAX_BATCH = 100
ALL_FIELDS = ("status", "message", "countryCode", "country", "as", "query")
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


@dataclass
class FakeClock:
    """A clock whose `sleep` only moves time forward and records how long was asked for."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += max(delay, 0.0)
        await asyncio.sleep(0)


@dataclass(frozen=True)
class Answer:
    """What the imitation knows about one address."""

    country_code: str
    country: str
    as_text: str


@dataclass(frozen=True)
class Received:
    """One request as the server saw it."""

    at: float
    queries: list[Any]
    status: int


class IpApiImitation:
    """`async with IpApiImitation(answers) as server:` then point a client at `server.url`.

    `overruns` counts requests that arrived after this server had already answered
    X-Rl: 0 or 429 in the same window: the behaviour that gets clients banned. A first
    429 caused by budget spent elsewhere (`spend`) is not the client's fault.
    """

    def __init__(
        self,
        answers: Mapping[str, Answer] | None = None,
        *,
        budget: int = 15,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.answers = dict(answers or {})
        self.budget = budget
        self.window = window
        self.clock = clock
        self.received: list[Received] = []
        self.overruns = 0
        self._faults: dict[int, str | int] = {}
        self._arrivals = 0
        self._window_end = -math.inf
        self._used = 0
        self._told_exhausted = False
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> IpApiImitation:
        app = web.Application()
        app.router.add_post("/batch", self._batch)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/batch"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def fault_on(self, request_number: int, fault: str | int) -> None:
        """Answer the `request_number`-th request (1-based) badly: an HTTP status (500;
        429 comes with X-Rl: 0), "stall" (no answer until the server stops) or
        "not-json". Faults use no budget and are never counted as overruns."""
        self._faults[request_number] = fault

    def spend(self, requests: int) -> None:
        """Use budget in the current window as another client on the same address would."""
        self._roll_window()
        self._used += requests

    @property
    def batch_sizes(self) -> list[int]:
        return [len(r.queries) for r in self.received]

    async def _batch(self, request: web.Request) -> web.StreamResponse:
        try:
            queries = json.loads(await request.read())
        except ValueError:
            queries = None
        listed = queries if isinstance(queries, list) else []
        self._arrivals += 1
        fault = self._faults.pop(self._arrivals, None)
        if fault is not None:
            response = await self._fault_response(fault)
        else:
            response = self._limited_response(queries, request.query.get("fields"))
        self.received.append(Received(self.clock(), listed, response.status))
        return response

    async def _fault_response(self, fault: str | int) -> web.Response:
        if fault == "stall":
            await self._release.wait()
            return web.Response(status=503)
        if fault == "not-json":
            return web.Response(text="<html>oops</html>", headers=self._limit_headers())
        assert isinstance(fault, int)
        headers = self._limit_headers(left=0) if fault == 429 else self._limit_headers()
        return web.Response(status=fault, text="fault", headers=headers)

    def _limited_response(self, queries: object, fields: str | None) -> web.Response:
        self._roll_window()
        if self._told_exhausted:
            self.overruns += 1
        if self._used >= self.budget:
            self._told_exhausted = True
            return web.Response(status=429, text="rate limited", headers=self._limit_headers())
        self._used += 1
        headers = self._limit_headers()
        if self._used >= self.budget:
            self._told_exhausted = True
        if not isinstance(queries, list):
            return web.Response(status=400, text="invalid JSON", headers=headers)
        if len(queries) > MAX_BATCH:
            return web.Response(status=422, text="too many queries", headers=headers)
        wanted = tuple(fields.split(",")) if fields else ALL_FIELDS
        body = [self._answer(query, wanted) for query in queries]
        return web.json_response(body, headers=headers)

    def _roll_window(self) -> None:
        """Start a new window if none is running; the first request after a reset opens it."""
        now = self.clock()
        if now >= self._window_end:
            self._window_end = now + self.window
            self._used = 0
            self._told_exhausted = False

    def _limit_headers(self, left: int | None = None) -> dict[str, str]:
        self._roll_window()
        if left is None:
            left = max(self.budget - self._used, 0)
        ttl = max(math.ceil(self._window_end - self.clock()), 0)
        return {"X-Rl": str(left), "X-Ttl": str(ttl)}

    def _answer(self, query: object, wanted: tuple[str, ...]) -> dict[str, Any]:
        full = self._full_answer(query)
        return {key: value for key, value in full.items() if key in wanted}

    def _full_answer(self, query: object) -> dict[str, Any]:
        try:
            address = ipaddress.ip_address(query)  # type: ignore[arg-type]
        except ValueError:
            return {"status": "fail", "message": "invalid query", "query": str(query)}
        if any(address in net for net in _PRIVATE_NETWORKS):
            return {"status": "fail", "message": "private range", "query": query}
        if not address.is_global:
            return {"status": "fail", "message": "reserved range", "query": query}
        known = self.answers.get(str(address), Answer("", "", ""))
        return {
            "status": "success",
            "countryCode": known.country_code,
            "country": known.country,
            "as": known.as_text,
            "query": query,
        }
