"""A fake fail2ban socket for fault injection only; real behaviour is tested against the
real server (tests/fail2ban_server.py). It answers every request the same scripted way."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
from collections.abc import Callable
from types import TracebackType

from bangd.fail2ban.wire import CLOSE_COMMAND, END

# Given the decoded request, returns the raw reply (without END), or None to never answer.
Answer = Callable[[list[str]], bytes | None]


def reply_with(raw: bytes) -> Answer:
    """Always answer with these exact bytes."""
    return lambda _cmd: raw


def count_of_addresses(cmd: list[str]) -> bytes:
    """Answer `set JAIL banip A B ...` as if every address were new."""
    return pickle.dumps((0, len(cmd) - 3), pickle.HIGHEST_PROTOCOL)


class RunsCommand:
    """A reply payload that plain pickle.loads would turn into os.system(command)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


def silent(_cmd: list[str]) -> None:
    return None


class FakeFail2ban:
    """Unix socket server; `truncate_to` sends only that many reply bytes, then hangs up;
    `chunk` sends the reply that many bytes at a time, each written and drained apart."""

    def __init__(
        self, socket_path: str, answer: Answer, *, truncate_to: int | None = None,
        chunk: int | None = None,
    ):
        self.socket_path = socket_path
        self.requests: list[list[str]] = []
        self.connections = 0
        self.request_seen = asyncio.Event()
        self._answer = answer
        self._truncate_to = truncate_to
        self._chunk = chunk
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    async def __aenter__(self) -> FakeFail2ban:
        self._server = await asyncio.start_unix_server(self._serve, path=self.socket_path)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            await self._answer_requests(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)
            self._handlers.discard(task)

    async def _answer_requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while not self._stopping.is_set():
            request = await reader.readuntil(END)
            if request == CLOSE_COMMAND:
                return
            # Only bangd's own client writes here: unpickling its request is safe.
            cmd: list[str] = pickle.loads(request[: -len(END)])
            self.requests.append(cmd)
            self.request_seen.set()
            reply = self._answer(cmd)
            if reply is None:
                await self._stopping.wait()
                return
            if self._truncate_to is not None:
                writer.write(reply[: self._truncate_to])
                await writer.drain()
                return
            whole = reply + END
            step = self._chunk or len(whole)
            for start in range(0, len(whole), step):
                writer.write(whole[start : start + step])
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
                if self._chunk:
                    await asyncio.sleep(0)  # a separate read on the other side, most likely
