"""A small blocking client for the control socket, used by `bangctl` and tests.

Blocking on purpose: bangctl does one thing and exits, and a plain socket keeps it free of
an event loop and quick to start.
"""

from __future__ import annotations

import itertools
import json
import socket
import time
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

    def call(
        self, command: str, args: dict[str, Any] | None = None, *, within: float | None = None
    ) -> dict[str, Any]:
        """Send one request and return its `result`; raise ControlError on an error reply."""
        return result_of(self.request(command, args, within=within))

    def request(
        self, command: str, args: dict[str, Any] | None = None, *, within: float | None = None
    ) -> dict[str, Any]:
        """Send one request and return the whole response object.

        The answer is waited for `within` seconds (default: the client's timeout). A
        connection whose answer is late is closed, so a late answer is never taken for the
        next request's.
        """
        wait = self.timeout if within is None else within
        self.send(command, args)
        response = self.receive(wait)
        if response is None:
            self.close()
            raise DaemonUnreachable(
                f"bangd at {self.path} did not answer {command!r} within {wait:g}s; is it "
                "overloaded, or is that another program's socket? (--timeout waits longer)"
            )
        return response

    def send(self, command: str, args: dict[str, Any] | None = None) -> None:
        """Send one request; its answer is read with `receive`."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        message = encode({"id": next(self._ids), "command": command, "args": args or {}})
        try:
            self._sock.sendall(message)
        except TimeoutError:
            self.close()
            raise DaemonUnreachable(
                f"bangd at {self.path} did not take the {command!r} request within "
                f"{self.timeout}s"
            ) from None
        except OSError as exc:
            self.close()
            raise DaemonUnreachable(f"connection to bangd at {self.path} broke: {exc}") from None

    def receive(self, wait: float | None) -> dict[str, Any] | None:
        """The next response, or None if it has not wholly arrived within `wait` seconds
        (None: wait as long as it takes). What has arrived so far is kept for the next
        call, so a caller can wait in slices and do other work in between."""
        assert self._sock is not None, "receive() before send()"
        deadline = None if wait is None else time.monotonic() + wait
        while b"\n" not in self._buffer:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                return None
            except OSError as exc:
                self.close()
                raise DaemonUnreachable(
                    f"connection to bangd at {self.path} broke: {exc}"
                ) from None
            if not chunk:
                self.close()
                raise DaemonUnreachable(f"bangd at {self.path} closed the connection")
            self._buffer += chunk
            if len(self._buffer) > MAX_RESPONSE:
                self.close()
                raise DaemonUnreachable(f"bangd at {self.path} sent an oversized response")
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            response = json.loads(line)
        except ValueError:
            response = None
        if not isinstance(response, dict):
            self.close()
            raise DaemonUnreachable(
                f"{self.path} answered with something that is not a bangd response; is it "
                "bangd's control socket?"
            )
        return response


def result_of(response: dict[str, Any]) -> dict[str, Any]:
    """A response's `result`; ControlError when the daemon answered with an error."""
    if response.get("ok"):
        result = response.get("result")
        return result if isinstance(result, dict) else {}
    error = response.get("error") or {}
    raise ControlError(str(error.get("code", "internal")), str(error.get("message", "")))
