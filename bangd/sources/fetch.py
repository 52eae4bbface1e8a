"""Fetching a blocklist's raw bytes from an HTTP(S) URL or a local file.

The fetcher's job is to hand the importer either the bytes of a list or a clear "nothing
changed", and never to let a hostile or broken server cost unbounded time or memory:
every attempt is bounded by the source's timeout, the decoded body by its max_bytes
(checked while streaming, so a gzip bomb stops at the cap instead of filling memory), and
retries by a fixed count with exponential backoff through an injected sleep.

Unchanged lists are recognised before a byte is parsed: HTTP validators (ETag,
Last-Modified) give a 304, and files get a cheap stat-based validator of the same shape.

A source's own `headers:` (API keys) are sent with every request and appear nowhere else:
not in errors, not in logs; a 401/403 says the credentials were refused, naming only the
config keys to check.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import aiohttp

from ..config import SourceConfig
from ..errors import FetchError
from ..files import FileIdentity
from .codec import BodyDecoder, BodyProblem, too_big

log = logging.getLogger(__name__)

CONNECT_TIMEOUT: Final = 30.0
"""Upper bound on opening a socket, inside the source's total timeout."""
TIMEOUT_GRACE: Final = 5.0
"""An outer asyncio bound a little above aiohttp's own, in case aiohttp's timer misses."""
MAX_RETRY_AFTER: Final = 300.0
"""A server asking to wait longer than this is waited for this long, not more."""
FILE_CHUNK: Final = 1024 * 1024
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
_TRANSPORT_ENCODINGS: Final = ("gzip", "x-gzip", "deflate")


@dataclass(frozen=True)
class Fetched:
    """One fetch's outcome; the validators are what to pass to the next fetch."""

    body: bytes | None
    not_modified: bool
    etag: str | None
    last_modified: str | None
    status: int | None
    took: float


class _Retryable(Exception):
    """An attempt failed in a way the next attempt may not; carries the final message parts."""

    def __init__(self, reason: str, hint: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint
        self.retry_after = retry_after


def _refused(source: SourceConfig) -> str:
    """What a 401/403 means for this source; header names only, never their values."""
    if source.headers:
        return (
            "the server refused the credentials: check headers/headers_file "
            f"({', '.join(source.headers.names())})"
        )
    return "the server refused the request: it may need a key; set headers or headers_file"


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _retry_after(value: str | None) -> float | None:
    """Seconds from a numeric Retry-After; the HTTP-date form falls back to our backoff."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def make_session(*, connections: int = 8) -> aiohttp.ClientSession:
    """The session to fetch lists with; create it inside the running event loop.

    auto_decompress=False leaves Content-Encoding to the fetcher, which inflates in bounded
    slices: aiohttp decodes each network chunk in one go (a 250 KiB gzip bomb costs about
    300 MB with aiohttp 3.8 before the cap can see it). Other clients (ip-api) that want
    aiohttp to decode for them need their own session.
    """
    return aiohttp.ClientSession(
        auto_decompress=False,
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=300.0, sock_connect=CONNECT_TIMEOUT),
    )


class Fetcher:
    """Fetches sources with bounded time, memory and retries; one per HTTP session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        user_agent: str,
        retries: int = 3,
        backoff: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if backoff < 0:
            raise ValueError(f"backoff must be >= 0, got {backoff}")
        self._session = session
        self._user_agent = user_agent
        self._retries = retries
        self._backoff = backoff
        self._sleep = sleep
        self._clock = clock
        # File reads get threads of their own: a read stuck on a hung NFS/FUSE mount
        # outlives its timeout (a thread cannot be interrupted) and must not use up the
        # default executor that parsing and MMDB lookups share. With two, another list
        # still reads while one hangs; once both hang, reads time out and say so.
        self._file_readers = concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="bangd-file-read"
        )

    def close(self) -> None:
        """Release the file-reading threads; a read still stuck is abandoned."""
        self._file_readers.shutdown(wait=False, cancel_futures=True)

    async def fetch(
        self, source: SourceConfig, *, etag: str | None = None, last_modified: str | None = None
    ) -> Fetched:
        """The list's decoded bytes, or not_modified when the validators still match.

        Raises FetchError with a one-line message naming the source and what to do.
        """
        started = self._clock()
        if source.url is not None:
            status, body, etag, last_modified = await self._fetch_url(
                source, source.url, etag, last_modified
            )
        elif source.path is not None:
            status = None
            body, etag = await self._fetch_file(source, source.path, etag)
        else:
            raise FetchError(f"source {source.name}: has neither url nor path: set one of them")
        took = self._clock() - started
        log.debug(
            "source=%s status=%s bytes=%s took=%.3f",
            source.name,
            status if status is not None else ("file" if body is not None else "file-unchanged"),
            len(body) if body is not None else 0,
            took,
        )
        return Fetched(
            body=body,
            not_modified=body is None,
            etag=etag,
            last_modified=last_modified,
            status=status,
            took=took,
        )

    # --- HTTP ---------------------------------------------------------------------------

    async def _fetch_url(
        self, source: SourceConfig, url: str, etag: str | None, last_modified: str | None
    ) -> tuple[int, bytes | None, str | None, str | None]:
        headers = {"User-Agent": self._user_agent, "Accept-Encoding": "gzip, deflate"}
        headers.update(source.headers.items())
        if etag is not None:
            headers["If-None-Match"] = etag
        if last_modified is not None:
            headers["If-Modified-Since"] = last_modified
        attempts = self._retries + 1
        for attempt in range(attempts):
            try:
                return await self._attempt(source, url, headers, etag, last_modified)
            except _Retryable as exc:
                if attempt + 1 == attempts:
                    shown = f" ({attempts} attempts)" if attempts > 1 else ""
                    raise FetchError(
                        f"source {source.name}: {exc.reason}{shown}: {exc.hint}"
                    ) from None
                if exc.retry_after is not None and exc.retry_after > MAX_RETRY_AFTER:
                    # Retrying sooner than asked gets clients banned by list providers:
                    # give up now and let the next scheduled run (or backoff) come back.
                    raise FetchError(
                        f"source {source.name}: {exc.reason}, asked to come back in "
                        f"{exc.retry_after:g}s: not retried now; the next run tries again"
                    ) from None
                delay = self._backoff * 2**attempt
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                log.debug("source=%s retry in %.1fs after: %s", source.name, delay, exc.reason)
                await self._sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    async def _attempt(
        self,
        source: SourceConfig,
        url: str,
        headers: dict[str, str],
        etag: str | None,
        last_modified: str | None,
    ) -> tuple[int, bytes | None, str | None, str | None]:
        timeout = aiohttp.ClientTimeout(
            total=source.timeout, sock_connect=min(source.timeout, CONNECT_TIMEOUT)
        )
        try:
            async with asyncio.timeout(source.timeout + TIMEOUT_GRACE):
                async with self._session.get(url, headers=headers, timeout=timeout) as resp:
                    return await self._read_response(source, url, resp, etag, last_modified)
        except BodyProblem as exc:
            raise FetchError(f"source {source.name}: {url}: {exc}") from None
        except TimeoutError:
            raise _Retryable(
                f"timed out after {_seconds(source.timeout)} fetching {url}",
                "check that the server answers, or raise sources[].timeout",
            ) from None
        except aiohttp.ClientSSLError as exc:
            raise FetchError(
                f"source {source.name}: TLS failed for {url}: {exc}: check the url and the "
                "server's certificate"
            ) from None
        except aiohttp.ClientConnectionError as exc:
            raise _Retryable(
                f"connection to {url} failed: {exc or type(exc).__name__}",
                "check the url and the network",
            ) from None
        except aiohttp.ClientPayloadError as exc:
            raise _Retryable(
                f"broken response body from {url}: {exc}", "the server or network is failing"
            ) from None
        except aiohttp.ClientError as exc:
            raise FetchError(
                f"source {source.name}: request to {url} failed: "
                f"{type(exc).__name__}: {exc}: check the url"
            ) from None

    async def _read_response(
        self,
        source: SourceConfig,
        url: str,
        resp: aiohttp.ClientResponse,
        etag: str | None,
        last_modified: str | None,
    ) -> tuple[int, bytes | None, str | None, str | None]:
        status = resp.status
        new_etag = resp.headers.get("ETag")
        new_last_modified = resp.headers.get("Last-Modified")
        if status == 304 and (etag is not None or last_modified is not None):
            return status, None, new_etag or etag, new_last_modified or last_modified
        if status in RETRY_STATUSES:
            raise _Retryable(
                f"HTTP {status} from {url}",
                "the server is failing or rate-limiting; the next run will try again",
                _retry_after(resp.headers.get("Retry-After")),
            )
        if status in (401, 403):
            raise FetchError(f"source {source.name}: HTTP {status} from {url}: {_refused(source)}")
        if status != 200:
            raise FetchError(f"source {source.name}: HTTP {status} from {url}: check the url")
        length = resp.content_length
        if length is not None and length > source.max_bytes:
            resp.close()
            raise BodyProblem(too_big(source.max_bytes))
        decoder = BodyDecoder(source.max_bytes, self._encoding_left_to_us(resp))
        try:
            async for chunk in resp.content.iter_any():
                decoder.write(chunk)
            body = decoder.finish()
        except BodyProblem:
            resp.close()
            raise
        return status, body, new_etag, new_last_modified

    def _encoding_left_to_us(self, resp: aiohttp.ClientResponse) -> str | None:
        """The Content-Encoding we must decode ourselves: only when the session does not.

        A session made with auto_decompress=False lets this fetcher decode gzip in bounded
        slices; aiohttp decodes each network chunk in one go.
        """
        encoding = resp.headers.get("Content-Encoding", "").strip().lower()
        if self._session.auto_decompress or encoding in ("", "identity"):
            return None
        if encoding not in _TRANSPORT_ENCODINGS:
            raise BodyProblem(
                f"unsupported Content-Encoding {encoding!r}: the server ignored "
                "Accept-Encoding: gzip, deflate; report it to the list's maintainer"
            )
        return encoding

    # --- files --------------------------------------------------------------------------

    async def _fetch_file(
        self, source: SourceConfig, path: str, etag: str | None
    ) -> tuple[bytes | None, str]:
        try:
            async with asyncio.timeout(source.timeout):
                return await asyncio.get_running_loop().run_in_executor(
                    self._file_readers, _read_file, path, etag, source.max_bytes
                )
        except TimeoutError:
            raise FetchError(
                f"source {source.name}: timed out after {_seconds(source.timeout)} reading "
                f"{path}: check the disk, or raise sources[].timeout"
            ) from None
        except BodyProblem as exc:
            raise FetchError(f"source {source.name}: {path}: {exc}") from None
        except OSError as exc:
            raise FetchError(
                f"source {source.name}: cannot read {path}: {exc.strerror or exc}: "
                "check the path and its permissions"
            ) from None


def _read_file(path: str, etag: str | None, max_bytes: int) -> tuple[bytes | None, str]:
    """Blocking read for a worker thread; the validator comes from the opened file itself."""
    # O_NONBLOCK: opening a FIFO must not hang the worker thread before the type check.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise BodyProblem("not a regular file: point sources[].path at a file")
        validator = FileIdentity.of(st).validator()
        if etag == validator:
            return None, validator
        if st.st_size > max_bytes:
            raise BodyProblem(too_big(max_bytes))
        decoder = BodyDecoder(max_bytes)
        while chunk := fh.read(FILE_CHUNK):
            decoder.write(chunk)
        return decoder.finish(), validator
