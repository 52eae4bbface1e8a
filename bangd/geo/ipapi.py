"""Geolocation from ip-api.com's batch endpoint (free tier), the fallback resolver.

The free tier allows 15 batch requests a minute and bans client addresses that keep
sending past the limit, so staying inside it matters more than speed: every reply's
`X-Rl` (requests left) and `X-Ttl` (seconds until the window resets) are obeyed, one
client object serialises all its requests, and a 429 is answered by waiting, never by
retrying at once. Anything else going wrong is "try later" (`IpApiUnavailable`), carrying
the answers already received so the caller can cache them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

import aiohttp

from bangd.errors import GeoError
from bangd.geo.model import ORIGIN_IP_API, GeoInfo, geo_from_fields, negative_geo

log = logging.getLogger(__name__)

BATCH_LIMIT = 100
FIELDS = "status,message,countryCode,country,as,query"
_AS_PATTERN = re.compile(r"AS(\d+)\s*(.*)", re.DOTALL)


class IpApiUnavailable(GeoError):
    """ip-api cannot answer now; `partial` holds the answers for the leading addresses.

    `partial` answers `ips[:len(partial)]` of the failed `resolve` call, in order.
    """

    def __init__(self, message: str, partial: Sequence[GeoInfo] = ()) -> None:
        self.partial: list[GeoInfo] = list(partial)
        super().__init__(message)


class _BatchFailed(Exception):
    """One batch could not be answered; `resolve` adds the partial results."""


class IpApiClient:
    """A client for one ip-api batch URL that never sends more than the server allows.

    Keep one instance for the daemon's lifetime: the rate-limit state it learns from
    replies must survive between calls, and its lock keeps concurrent callers from
    spending the same remaining request twice.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str = "http://ip-api.com/batch",
        *,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        max_429_retries: int = 3,
        unknown_limit_interval: float = 4.0,
        max_wait: float = 120.0,
    ) -> None:
        """`timeout` bounds each request; `max_wait` is the longest rate-limit wait done
        inside one call (longer ones fail fast as "try later"); `unknown_limit_interval`
        paces requests when a reply carries no limit headers (60 s / 15 requests)."""
        if timeout <= 0 or max_wait <= 0 or unknown_limit_interval < 0:
            raise ValueError("timeout and max_wait must be > 0, unknown_limit_interval >= 0")
        if max_429_retries < 0:
            raise ValueError("max_429_retries must be >= 0")
        self._session = session
        self._url = url + ("&" if "?" in url else "?") + "fields=" + FIELDS
        self._timeout = timeout
        self._clock = clock
        self._sleep = sleep
        self._max_429_retries = max_429_retries
        self._unknown_limit_interval = unknown_limit_interval
        self._max_wait = max_wait
        self._lock = asyncio.Lock()
        # What the last reply said: requests left in the window (None: unknown) and when
        # the window resets (already +1 s: X-Ttl is rounded to whole seconds).
        self._left: int | None = None
        self._resets_at = -math.inf
        # Earliest next request for other reasons: a 429 without X-Ttl, or no headers.
        self._not_before = -math.inf

    async def resolve(self, ips: Sequence[str]) -> list[GeoInfo]:
        """Answers for `ips` in order, asking in batches of at most 100.

        May wait for the rate-limit window to reset (up to `max_wait` per wait). Raises
        IpApiUnavailable, with the answers of the batches already done, when ip-api
        cannot be reached or answers something other than a valid batch reply.
        """
        results: list[GeoInfo] = []
        async with self._lock:
            for start in range(0, len(ips), BATCH_LIMIT):
                batch = list(ips[start : start + BATCH_LIMIT])
                try:
                    results.extend(await self._resolve_batch(batch))
                except _BatchFailed as err:
                    raise IpApiUnavailable(str(err), results) from err.__cause__
        return results

    async def _resolve_batch(self, batch: list[str]) -> list[GeoInfo]:
        """One batch, retried after waiting when ip-api says 429."""
        for attempt in range(self._max_429_retries + 1):
            await self._wait_for_budget()
            status, headers, body = await self._post(batch)
            self._note_limits(headers, status, attempt)
            if status == 429:
                log.warning("ip-api answered 429 (rate limited); waiting before retry")
                continue
            if status != 200:
                raise _BatchFailed(
                    f"ip-api answered HTTP {status} to a batch of {len(batch)} addresses; try later"
                )
            return _parse_batch(batch, body)
        raise _BatchFailed(
            f"ip-api still rate-limited (429) after {self._max_429_retries} retries; try later"
        )

    async def _wait_for_budget(self) -> None:
        """Sleep until the server's window allows another request, then spend one.

        The request is charged before it is sent: if its reply never arrives (timeout),
        the server has probably counted it anyway.
        """
        target = self._not_before
        if self._left is not None and self._left <= 0:
            target = max(target, self._resets_at)
        delay = target - self._clock()
        if delay > self._max_wait:
            raise _BatchFailed(
                f"ip-api asks to wait {delay:.0f} s before the next request; try later"
            )
        if delay > 0:
            log.info("ip-api request budget used up; waiting %.1f s", delay)
            await self._sleep(delay)
        if self._clock() >= self._resets_at:
            self._left = None
        if self._left is not None:
            self._left -= 1

    async def _post(self, batch: list[str]) -> tuple[int, Mapping[str, str], bytes]:
        try:
            async with asyncio.timeout(self._timeout):
                async with self._session.post(self._url, json=batch) as response:
                    body = await response.read()
                    return response.status, response.headers, body
        except TimeoutError as err:
            raise _BatchFailed(
                f"ip-api did not answer a batch of {len(batch)} within {self._timeout:g} s; "
                "try later"
            ) from err
        except aiohttp.ClientError as err:
            raise _BatchFailed(f"cannot reach ip-api at {self._url}: {err}; try later") from err

    def _note_limits(self, headers: Mapping[str, str], status: int, attempt: int) -> None:
        """Remember what the reply's X-Rl/X-Ttl (or their absence) allow from now on."""
        left = _int_header(headers, "X-Rl")
        ttl = _int_header(headers, "X-Ttl")
        now = self._clock()
        if ttl is not None:
            self._resets_at = now + ttl + 1
            self._left = 0 if status == 429 else left
        elif status == 429:
            backoff = self._unknown_limit_interval * 2 ** (attempt + 1)
            self._not_before = max(self._not_before, now + backoff)
        if left is None or ttl is None:
            self._not_before = max(self._not_before, now + self._unknown_limit_interval)


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def _parse_batch(batch: list[str], body: bytes) -> list[GeoInfo]:
    """Pair ip-api's reply array with the request; anything unexpected fails the batch."""
    try:
        entries = json.loads(body)
    except ValueError as err:
        raise _BatchFailed(f"ip-api sent a reply that is not JSON ({err}); try later") from err
    if not isinstance(entries, list) or len(entries) != len(batch):
        raise _BatchFailed(
            f"ip-api sent a reply that is not a list of {len(batch)} answers; try later"
        )
    return [_parse_entry(ip, entry) for ip, entry in zip(batch, entries, strict=True)]


def _parse_entry(ip: str, entry: object) -> GeoInfo:
    if not isinstance(entry, dict):
        raise _BatchFailed(f"ip-api sent a non-object answer for {ip}; try later")
    status = entry.get("status")
    if status == "fail":
        # "private range", "reserved range", "invalid query": nothing to know, cache that.
        log.debug("ip-api knows nothing about %s: %s", ip, entry.get("message"))
        return negative_geo(ip, ORIGIN_IP_API)
    if status != "success":
        raise _BatchFailed(f"ip-api sent status {status!r} for {ip}; try later")
    asn, as_org = parse_as(_text(entry.get("as")))
    return geo_from_fields(
        ip, _text(entry.get("countryCode")), _text(entry.get("country")), asn, as_org, ORIGIN_IP_API
    )


def parse_as(text: str | None) -> tuple[int | None, str | None]:
    """Split ip-api's "AS15169 Google LLC" into (15169, "Google LLC"); empty parts are None."""
    if text is None:
        return None, None
    match = _AS_PATTERN.fullmatch(text)
    if match is None:
        return None, text
    return int(match.group(1)), match.group(2).strip() or None


def _text(value: object) -> str | None:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None
