"""A real local HTTP server that serves blocklists to tests, with the faults real servers have.

Each path is configured with `serve()`: the bytes, validators (ETag / Last-Modified, with
real 304 handling), gzip Content-Encoding, chunked streaming, a status sequence such as
500-then-200, delays before the headers or before the body, or a generated body of any size
that is never held in memory. Every request is recorded (headers included) per path, and the
bytes actually written are counted, so a test can prove a client stopped early.

    async with ListServer() as lists:
        url = lists.serve("/drop.txt", b"192.0.2.1\\n", etag='"v1"')
        ...
        assert lists.request_count("/drop.txt") == 1

Delays wait on the server's closing event, so `close()` never waits for a sleeping handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Final

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

HOST: Final = "127.0.0.1"
DEFAULT_CHUNK: Final = 64 * 1024
GENERATED_LINE: Final = b"192.0.2.1\n"


@dataclass(frozen=True)
class RecordedRequest:
    """What the client sent; headers compare case-insensitively like HTTP's."""

    method: str
    path: str
    headers: CIMultiDictProxy[str]


@dataclass
class ListRoute:
    """How one path answers; replaced wholesale by the next `serve()` of the same path."""

    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    etag: str | None = None
    last_modified: str | None = None
    content_encoding: str | None = None
    chunked: bool = False
    statuses: tuple[int, ...] = (200,)
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body_delay: float = 0.0
    size: int | None = None
    chunk_size: int = DEFAULT_CHUNK


@dataclass
class _PathLog:
    requests: list[RecordedRequest] = field(default_factory=list)
    bytes_sent: int = 0


class ListServer:
    """An aiohttp server on 127.0.0.1, port chosen by the kernel; an async context manager."""

    def __init__(self, host: str = HOST) -> None:
        self._host = host
        self._routes: dict[str, ListRoute] = {}
        self._logs: dict[str, _PathLog] = {}
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    async def __aenter__(self) -> ListServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("ListServer already started")
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, self._host, 0)
        await site.start()
        self._port = int(runner.addresses[0][1])

    async def close(self) -> None:
        """Wake every delayed handler, then stop; calling it twice is harmless."""
        self._closing.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("ListServer not started")
        return f"http://{self._host}:{self._port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def serve(
        self,
        path: str,
        body: bytes = b"",
        *,
        content_type: str = "text/plain; charset=utf-8",
        etag: str | None = None,
        last_modified: str | None = None,
        content_encoding: str | None = None,
        chunked: bool = False,
        statuses: Sequence[int] = (200,),
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        body_delay: float = 0.0,
        size: int | None = None,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> str:
        """Configure `path` and return its URL; the request log of `path` is kept.

        content_encoding="gzip"/"deflate" compresses `body` on the way out; to send bytes
        already encoded (a gzip bomb), pass them with headers={"Content-Encoding": "gzip"}.
        `statuses[i]` answers the i-th request to this path, the last one repeating; only
        200 sends the body (or 304 when the request's validators match). `size` streams a
        generated body of that many bytes instead of `body`. `delay` holds back the headers,
        `body_delay` the body after the headers.
        """
        if not path.startswith("/"):
            raise ValueError(f"path must start with /, got {path!r}")
        if not statuses:
            raise ValueError("statuses must not be empty")
        self._routes[path] = ListRoute(
            body=body,
            content_type=content_type,
            etag=etag,
            last_modified=last_modified,
            content_encoding=content_encoding,
            chunked=chunked,
            statuses=tuple(statuses),
            headers=dict(headers or {}),
            delay=delay,
            body_delay=body_delay,
            size=size,
            chunk_size=chunk_size,
        )
        self._logs.setdefault(path, _PathLog())
        return self.url(path)

    def requests(self, path: str) -> list[RecordedRequest]:
        return list(self._log(path).requests)

    def request_count(self, path: str) -> int:
        return len(self._log(path).requests)

    def bytes_sent(self, path: str) -> int:
        """Body bytes handed to the transport for `path` (encoded), over all requests."""
        return self._log(path).bytes_sent

    def _log(self, path: str) -> _PathLog:
        return self._logs.setdefault(path, _PathLog())

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        log = self._log(request.path)
        index = len(log.requests)
        headers = CIMultiDictProxy(CIMultiDict(request.headers))
        log.requests.append(RecordedRequest(request.method, request.path, headers))
        route = self._routes.get(request.path)
        if route is None:
            return web.Response(status=404, text="no such list\n")
        await self._wait(route.delay)
        status = route.statuses[min(index, len(route.statuses) - 1)]
        if status != 200:
            return _status_reply(route, status)
        reply_headers = self._headers(route)
        if _not_modified(route, request):
            return web.Response(status=304, headers=_validators(route))
        if route.size is not None:
            return await self._stream(request, route, reply_headers, log, _generated(route))
        body = _encode(route.body, route.content_encoding)
        if route.chunked or route.body_delay:
            pieces = (body[i : i + route.chunk_size] for i in range(0, len(body), route.chunk_size))
            return await self._stream(request, route, reply_headers, log, pieces, len(body))
        log.bytes_sent += len(body)
        return web.Response(status=200, headers=reply_headers, body=body)

    async def _stream(
        self,
        request: web.Request,
        route: ListRoute,
        headers: CIMultiDict[str],
        log: _PathLog,
        pieces: Iterable[bytes],
        length: int | None = None,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers=headers)
        if route.chunked:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = length if length is not None else route.size
        await resp.prepare(request)
        await self._wait(route.body_delay)
        with contextlib.suppress(ConnectionError):
            for piece in pieces:
                if self._closing.is_set():
                    break
                await resp.write(piece)
                log.bytes_sent += len(piece)
            await resp.write_eof()
        return resp

    def _headers(self, route: ListRoute) -> CIMultiDict[str]:
        headers = CIMultiDict(_validators(route))
        headers["Content-Type"] = route.content_type
        if route.content_encoding is not None:
            headers["Content-Encoding"] = route.content_encoding
        headers.update(route.headers)
        return headers

    async def _wait(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)


def _status_reply(route: ListRoute, status: int) -> web.Response:
    """A short plain reply carrying the route's extra headers (Retry-After...), not its encoding."""
    headers = {k: v for k, v in route.headers.items() if k.lower() != "content-encoding"}
    return web.Response(status=status, headers=headers, text=f"status {status}\n")


def _validators(route: ListRoute) -> dict[str, str]:
    headers = {}
    if route.etag is not None:
        headers["ETag"] = route.etag
    if route.last_modified is not None:
        headers["Last-Modified"] = route.last_modified
    return headers


def _not_modified(route: ListRoute, request: web.Request) -> bool:
    """RFC 9110 order: If-None-Match decides when present, else If-Modified-Since."""
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        if route.etag is None:
            return False
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in tags or route.etag.removeprefix("W/") in tags
    since = request.headers.get("If-Modified-Since")
    if since is None or route.last_modified is None:
        return False
    try:
        return parsedate_to_datetime(route.last_modified) <= parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False


def _encode(body: bytes, encoding: str | None) -> bytes:
    if encoding is None:
        return body
    if encoding in ("gzip", "x-gzip"):
        return gzip.compress(body)
    if encoding == "deflate":
        return zlib.compress(body)
    raise ValueError(f"ListServer cannot encode {encoding!r}; pass encoded bytes and headers")


def _generated(route: ListRoute) -> Iterator[bytes]:
    """`route.size` bytes of repeated address lines, one chunk at a time."""
    assert route.size is not None
    block = GENERATED_LINE * (route.chunk_size // len(GENERATED_LINE) + 1)
    block = block[: route.chunk_size]
    left = route.size
    while left > 0:
        piece = block[:left]
        left -= len(piece)
        yield piece


def gzip_bomb(decoded_size: int) -> bytes:
    """gzip of `decoded_size` zero bytes (about 1000:1), built without holding the output."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(min(decoded_size, 1024 * 1024))
    parts: list[bytes] = []
    left = decoded_size
    while left > 0:
        piece = zeros[:left]
        left -= len(piece)
        parts.append(compressor.compress(piece))
    parts.append(compressor.flush())
    return b"".join(parts)


def closed_port(host: str = HOST) -> int:
    """A port nothing listens on (just released by the kernel), for connection-refused tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port
