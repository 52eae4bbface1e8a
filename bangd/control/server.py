"""The control socket: frames requests, enforces limits and dispatches to handlers.

Shaped like aiosmtpd: this class only reads lines, checks them and calls a handler from a
`{command: handler}` table; what a command does lives in commands.py. Every guard answers
with a response instead of dropping the peer silently, and one misbehaving client can never
take the daemon down.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import BangdError
from .errors import error_reply
from .protocol import (
    MAX_LINE,
    decode_request,
    encode_reply,
    error_response,
    id_problem,
    ok_response,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Peer:
    """Who is on the other end, from SO_PEERCRED (the kernel's word, not the client's)."""

    pid: int
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"pid={self.pid} uid={self.uid} gid={self.gid}"


Handler = Callable[[dict[str, Any], Peer], Awaitable[dict[str, Any]]]

# Pending connections the kernel queues before accept(): a burst of 200 `bangctl` calls
# (a monitoring fan-out, a shell loop) overflowed the default 100 and clients got EAGAIN.
LISTEN_BACKLOG = 1024

READ_ONLY_COMMANDS = frozenset(
    {"status", "version", "sources", "runs", "lookup", "cache_stats", "metrics"}
)


class SocketInUse(BangdError):
    """Another live process already answers on the control socket."""


def control_group_id(group: str | None) -> int | None:
    """The gid `control.group` names (None: root only); a BangdError saying what to do
    when the system has no such group. --check-config asks the same question."""
    if group is None:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise BangdError(
            f"control.group: no group {group!r} on this system; create it (groupadd) or "
            "set control.group: null"
        ) from None


def peer_of(sock: socket.socket) -> Peer:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return Peer(pid, uid, gid)


def claim_socket_path(path: str) -> None:
    """Remove a stale socket left by a dead bangd; refuse if a live one answers there.

    Called before anything else at start-up, so a second bangd exits before it touches the
    database the first one is using.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketInUse(
            f"{path} exists and is not a socket: move it away or set control.socket elsewhere"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("control socket %s is stale (nobody listens); replacing it", path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError:
        pass
    else:
        raise SocketInUse(
            f"another bangd is already running on {path}: stop it first "
            "(systemctl stop bangd) or use another control.socket"
        )
    finally:
        probe.close()


class ControlServer:
    def __init__(
        self,
        path: str,
        handlers: Mapping[str, Handler],
        *,
        mode: int = 0o660,
        group: str | None = None,
        idle_timeout: float = 300.0,
        max_line: int = MAX_LINE,
    ) -> None:
        if idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        if not 0 <= mode <= 0o777:
            raise ValueError("mode must be a permission mode such as 0o660")
        self.path = path
        self.handlers = dict(handlers)
        self.mode = mode
        self.group = group
        self.idle_timeout = idle_timeout
        self.max_line = max_line
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._inode: int | None = None

    async def start(self) -> None:
        gid = self._group_id()
        claim_socket_path(self.path)
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o755, exist_ok=True)
        # The socket is created under a tight umask so no one can connect before chmod.
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._on_connect, path=self.path, limit=self.max_line,
                backlog=LISTEN_BACKLOG,
            )
        finally:
            os.umask(old_umask)
        if gid is not None:
            os.chown(self.path, -1, gid)
        os.chmod(self.path, self.mode)
        self._inode = os.stat(self.path).st_ino
        log.info("control socket listening path=%s mode=%04o group=%s",
                 self.path, self.mode, self.group or "-")

    def _group_id(self) -> int | None:
        return control_group_id(self.group)

    async def stop(self) -> None:
        """Stop listening, drop clients and remove our socket file. Safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        if self._inode is not None:
            # Only remove the file if it is still the one we created.
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == self._inode:
                    os.unlink(self.path)
            self._inode = None

    async def _on_connect(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve_client(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        sock = writer.get_extra_info("socket")
        peer = peer_of(sock) if sock is not None else Peer(-1, -1, -1)
        log.debug("control client connected %s", peer)
        while True:
            try:
                async with asyncio.timeout(self.idle_timeout):
                    line = await reader.readuntil(b"\n")
            except TimeoutError:
                log.debug("control client idle for %ss, dropped %s", self.idle_timeout, peer)
                return
            except asyncio.IncompleteReadError:
                return
            except (asyncio.LimitOverrunError, ValueError):
                writer.write(encode_reply(error_response(
                    None, "bad_request", f"request line longer than {self.max_line} bytes"
                )))
                await writer.drain()
                return
            response = await self._respond(line, peer)
            writer.write(encode_reply(response))
            try:
                async with asyncio.timeout(self.idle_timeout):
                    await writer.drain()  # a client that never reads is dropped
            except TimeoutError:
                log.debug("control client stopped reading, dropped %s", peer)
                return

    async def _respond(self, line: bytes, peer: Peer) -> dict[str, Any]:
        try:
            request = decode_request(line)
        except ValueError as exc:
            return error_response(None, "bad_request", str(exc))
        request_id = request.get("id")
        problem = id_problem(request_id)
        if problem is not None:
            return error_response(None, "bad_request", problem)
        command = request.get("command")
        if not isinstance(command, str):
            return error_response(
                request_id, "bad_request",
                'expected {"id": ..., "command": "<name>", "args": {...}}',
            )
        args = request.get("args", {})
        if not isinstance(args, dict):
            return error_response(
                request_id, "invalid_argument", "args must be an object of named arguments"
            )
        handler = self.handlers.get(command)
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return error_response(
                request_id, "unknown_command", f"unknown command {command!r}; known: {known}"
            )
        # Commands that change something are worth an info line; reads (a metrics timer
        # polls every minute) only at debug.
        level = logging.DEBUG if command in READ_ONLY_COMMANDS else logging.INFO
        log.log(level, "control command=%s %s", command, peer)
        try:
            result = await handler(args, peer)
        except asyncio.CancelledError:
            raise
        except BangdError as exc:
            return error_response(request_id, *error_reply(exc))
        except Exception as exc:
            log.exception("control command=%s failed", command)
            return error_response(request_id, "internal", f"{type(exc).__name__}: {exc}")
        return ok_response(request_id, result)
