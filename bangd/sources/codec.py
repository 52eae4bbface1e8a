"""Decoding a list's body as it streams in: transport encoding, a .gz file, the size cap.

Every step works in bounded slices and the cap is checked on the decoded bytes while they
arrive, so a small hostile input (a gzip bomb) stops at max_bytes instead of filling
memory. The fetcher feeds it network chunks or file reads; nothing here does I/O.
"""

from __future__ import annotations

import zlib
from typing import Final, Protocol

INFLATE_SLICE: Final = 256 * 1024
"""Most bytes one decompress step may produce, so memory stays near the cap on a bomb."""
_GZIP_MAGIC: Final = b"\x1f\x8b"


class _Sink(Protocol):
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class BodyProblem(Exception):
    """The body broke a rule; the message is the reason and what to do, without the source."""


class _Capped:
    """Keeps the decoded body, failing as soon as it passes the cap."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._chunks: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._max_bytes:
            raise BodyProblem(too_big(self._max_bytes))
        if data:
            self._chunks.append(data)

    def close(self) -> None:
        pass

    def value(self) -> bytes:
        return b"".join(self._chunks)


class _Inflater:
    """zlib/gzip decoding in bounded slices, so one small input cannot allocate a huge output.

    Concatenated gzip members (what `cat a.gz b.gz` makes) are decoded one after another.
    """

    def __init__(self, wbits: int, out: _Sink, what: str) -> None:
        self._wbits = wbits
        self._out = out
        self._what = what
        self._z = zlib.decompressobj(wbits)

    def write(self, data: bytes) -> None:
        try:
            self._inflate(data)
        except zlib.error as exc:
            raise BodyProblem(f"{self._what} is not valid: {exc}: check the url or file") from None

    def _inflate(self, data: bytes) -> None:
        pending = True
        while pending:
            out = self._z.decompress(data, INFLATE_SLICE)
            self._out.write(out)
            data = self._z.unconsumed_tail
            if self._z.eof:
                data = self._z.unused_data.lstrip(b"\0")
                if not data:
                    return
                self._z = zlib.decompressobj(self._wbits)
            pending = bool(data) or len(out) == INFLATE_SLICE

    def close(self) -> None:
        self.write(b"")
        if not self._z.eof:
            raise BodyProblem(f"{self._what} is truncated: check the url or file")
        self._out.close()


class _GzipSniffer:
    """Decompresses the body when it is itself a gzip file, whatever its name or type says.

    The magic bytes decide, not the URL or Content-Type: a text list never starts with them,
    and servers disagree about labelling .gz files (some also decode them in transit).
    """

    def __init__(self, out: _Sink) -> None:
        self._out = out
        self._head = b""
        self._target: _Sink | None = None

    def write(self, data: bytes) -> None:
        if self._target is None:
            self._head += data
            if len(self._head) < len(_GZIP_MAGIC):
                return
            data, self._head = self._head, b""
            self._target = self._choose(data)
        self._target.write(data)

    def _choose(self, head: bytes) -> _Sink:
        if head.startswith(_GZIP_MAGIC):
            return _Inflater(16 + zlib.MAX_WBITS, self._out, "gzip body")
        return self._out

    def close(self) -> None:
        if self._target is None:
            self._target = self._out
            self._target.write(self._head)
        self._target.close()


class BodyDecoder:
    """transport decoding (if aiohttp left it to us) -> .gz decoding -> cap."""

    def __init__(self, max_bytes: int, transport_encoding: str | None = None) -> None:
        self._capped = _Capped(max_bytes)
        self._first: _Sink = _GzipSniffer(self._capped)
        self._deflate_pending = False
        if transport_encoding in ("gzip", "x-gzip"):
            self._first = _Inflater(16 + zlib.MAX_WBITS, self._first, "gzip Content-Encoding")
        elif transport_encoding == "deflate":
            self._deflate_pending = True
            self._head = b""

    def write(self, data: bytes) -> None:
        if self._deflate_pending:
            self._head += data
            if len(self._head) < 2:
                return
            data = self._start_deflate()
        self._first.write(data)

    def finish(self) -> bytes:
        if self._deflate_pending:
            self._first.write(self._start_deflate())
        self._first.close()
        return self._capped.value()

    def _start_deflate(self) -> bytes:
        head, self._head = self._head, b""
        self._first = _Inflater(_deflate_wbits(head), self._first, "deflate Content-Encoding")
        self._deflate_pending = False
        return head


def _deflate_wbits(head: bytes) -> int:
    """HTTP "deflate" should be zlib-wrapped but some servers send raw deflate; tell by header."""
    if len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0:
        return zlib.MAX_WBITS
    return -zlib.MAX_WBITS


def too_big(max_bytes: int) -> str:
    return (
        f"body exceeds max_bytes {max_bytes}: "
        "raise sources[].max_bytes if the list is really that big"
    )
