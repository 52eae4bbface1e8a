"""Stand-ins for bangd's control socket, for what the real daemon cannot be made to do on
cue: never answer, answer `import` only after being polled, or send hostile strings.

Each connection is served by its own thread, so an `import` held back on one connection
does not stop `sources` polls on another, as with the real daemon.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from typing import Any

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class Refused(Exception):
    """Raised by a handler: the fake answers with this error instead of a result."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    block_on_close = False


class FakeBangd:
    """Answers each request with `handlers[command](args)` as an ok result, or the error a
    handler raises as Refused; a command without a handler gets `unknown_command`."""

    def __init__(self, path: str, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Connection(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for line in self.rfile:
                    request = json.loads(line)
                    fake.requests.append(request)
                    handler = fake.handlers.get(request["command"])
                    try:
                        if handler is None:
                            raise Refused("unknown_command", request["command"])
                        reply = {"id": request["id"], "ok": True,
                                 "result": handler(request["args"])}
                    except Refused as exc:
                        reply = {"id": request["id"], "ok": False,
                                 "error": {"code": exc.code, "message": exc.message}}
                    self.wfile.write(json.dumps(reply).encode() + b"\n")

        self.server = _Server(path, Connection)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeBangd:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


@contextlib.contextmanager
def silent_socket(path: str) -> Iterator[list[socket.socket]]:
    """A socket that accepts connections and reads nothing, answers nothing: another
    program's socket, or a wedged daemon. Yields the accepted connections."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield accepted
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


class ImportAfterPolls:
    """An import that bangd reports `running` (with `progress`) for `polls` `sources`
    polls, then answers. `running=False` makes it report nothing running meanwhile."""

    def __init__(self, polls: int, *, running: bool = True, progress: bool = True) -> None:
        self.polls = polls
        self.running = running
        self.progress = progress
        self.seen = 0
        self.changed = threading.Condition()

    def handlers(self) -> dict[str, Handler]:
        return {"sources": self.sources, "import": self.import_}

    def sources(self, args: dict[str, Any]) -> dict[str, Any]:
        with self.changed:
            self.seen += 1
            done = self.seen
            self.changed.notify_all()
        row: dict[str, Any] = {"name": "a", "jail": "bl", "interval": 3600, "entries": 0,
                               "last_state": "running" if self.running else "completed"}
        if self.progress:
            row["progress"] = {"phase": "applying", "done": done, "total": self.polls}
        return {"sources": [row, {"name": "b", "jail": "bl", "interval": 3600,
                                  "last_state": "completed"}]}

    def import_(self, args: dict[str, Any]) -> dict[str, Any]:
        with self.changed:
            self.changed.wait_for(lambda: self.seen >= self.polls, timeout=30)
        return {"imports": [{"source": "a", "state": "completed", "added": 2, "removed": 0,
                             "invalid": 0, "skipped": 0, "took": 1.5}]}
