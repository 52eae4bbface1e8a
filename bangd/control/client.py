"""A small blocking client for the control socket, used by `bangctl` and tests.

Blocking on purpose: bangctl does one thing and exits, and a plain socket keeps it free of
an event loop and quick to start.
"""

from __future__ import annotations

import itertools
import json
import socket
from typing import Any

from ..errors import BangdError, ControlError
from .protocol import encode

MAX_RESPONSE = 256 * 1024 * 1024


class DaemonUnreachable(BangdError):
    """Nothing answers on the control socket."""


class ControlClient:
    def __init__(self, path: str, *, timeout: float | None = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._ids = itertools.count(1)

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except FileNotFoundError:
            sock.close()
            raise DaemonUnreachable(
                f"cannot reach bangd at {self.path}: no such socket; is the service running? "
                "(systemctl status bangd)"
            ) from None
        except PermissionError:
            sock.close()
            raise DaemonUnreachable(
                f"cannot reach bangd at {self.path}: permission denied; run as root or as a "
                "member of control.group"
            ) from None
        except OSError as exc:
            sock.close()
            raise DaemonUnreachable(
                f"cannot reach bangd at {self.path}: {exc.strerror or exc}; is the service "
                "running? (systemctl status bangd)"
            ) from None
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def call(self, command: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request and return its `result`; raise ControlError on an error reply."""
        response = self.request(command, args)
        if response.get("ok"):
            result = response.get("result")
            return result if isinstance(result, dict) else {}
        error = response.get("error") or {}
        raise ControlError(str(error.get("code", "internal")), str(error.get("message", "")))

    def request(self, command: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request and return the whole response object."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        request_id = next(self._ids)
        try:
            self._sock.sendall(
                encode({"id": request_id, "command": command, "args": args or {}})
            )
            line = self._read_line()
        except TimeoutError:
            self.close()
            raise DaemonUnreachable(
                f"bangd at {self.path} did not answer {command!r} within {self.timeout}s"
            ) from None
        except OSError as exc:
            self.close()
            raise DaemonUnreachable(f"connection to bangd at {self.path} broke: {exc}") from None
        response = json.loads(line)
        if not isinstance(response, dict):
            raise DaemonUnreachable(f"bangd at {self.path} sent a malformed response")
        return response

    def _read_line(self) -> bytes:
        assert self._sock is not None
        while b"\n" not in self._buffer:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("bangd closed the connection")
            self._buffer += chunk
            if len(self._buffer) > MAX_RESPONSE:
                raise ConnectionResetError("response too large")
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line
