"""The control socket's protocol: framing, errors, limits, peers, socket file handling."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bangd.control.client import ControlClient, DaemonUnreachable
from bangd.control.server import ControlServer, Peer, SocketInUse
from bangd.errors import ControlError
from tests.shortdir import short_tmpdir

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
def sock_path() -> Iterator[str]:
    with short_tmpdir() as d:
        yield os.path.join(d, "ctl.sock")


class Recorder:
    def __init__(self) -> None:
        self.peers: list[Peer] = []

    async def echo(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        self.peers.append(peer)
        return {"echo": args}

    async def refuse(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        raise ControlError("busy", "come back later")

    async def crash(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        raise RuntimeError("boom")


@pytest.fixture
async def server(sock_path: str) -> AsyncIterator[tuple[ControlServer, Recorder]]:
    rec = Recorder()
    srv = ControlServer(
        sock_path,
        {"echo": rec.echo, "refuse": rec.refuse, "crash": rec.crash},
        mode=0o640,
        idle_timeout=0.5,
    )
    await srv.start()
    yield srv, rec
    await srv.stop()


async def connect(path: str) -> Conn:
    return await asyncio.open_unix_connection(path, limit=1 << 20)


async def ask(conn: Conn, raw: bytes) -> dict[str, Any]:
    reader, writer = conn
    writer.write(raw)
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 5)
    reply = json.loads(line)
    assert isinstance(reply, dict)
    return reply


async def test_requests_on_one_connection_are_answered_in_order(
    server: tuple[ControlServer, Recorder],
) -> None:
    conn = await connect(server[0].path)
    reader, writer = conn
    writer.write(b"".join(
        json.dumps({"id": i, "command": "echo", "args": {"n": i}}).encode() + b"\n"
        for i in range(5)
    ))
    await writer.drain()
    replies = [json.loads(await asyncio.wait_for(reader.readline(), 5)) for _ in range(5)]
    assert replies == [{"id": i, "ok": True, "result": {"echo": {"n": i}}} for i in range(5)]
    writer.close()


async def test_not_json_is_bad_request_and_the_connection_stays_usable(
    server: tuple[ControlServer, Recorder],
) -> None:
    conn = await connect(server[0].path)
    reply = await ask(conn, b"{nope\n")
    assert reply["ok"] is False
    assert reply["error"]["code"] == "bad_request"
    assert (await ask(conn, b'{"id": 2, "command": "echo"}\n'))["ok"] is True


@pytest.mark.parametrize(
    "raw",
    [b"[1, 2]\n", b'{"id": 1}\n', b'{"id": 1, "command": 5}\n'],
)
async def test_wrong_shape_is_bad_request(
    server: tuple[ControlServer, Recorder], raw: bytes
) -> None:
    reply = await ask(await connect(server[0].path), raw)
    assert reply["error"]["code"] == "bad_request"


async def test_unknown_command_names_the_known_ones(
    server: tuple[ControlServer, Recorder],
) -> None:
    reply = await ask(await connect(server[0].path), b'{"id": 7, "command": "frob"}\n')
    assert reply == {
        "id": 7,
        "ok": False,
        "error": {"code": "unknown_command",
                  "message": "unknown command 'frob'; known: crash, echo, refuse"},
    }


async def test_handler_error_keeps_its_code(server: tuple[ControlServer, Recorder]) -> None:
    reply = await ask(await connect(server[0].path), b'{"id": 1, "command": "refuse"}\n')
    assert reply["error"] == {"code": "busy", "message": "come back later"}


async def test_handler_crash_is_internal_and_the_server_keeps_serving(
    server: tuple[ControlServer, Recorder],
) -> None:
    conn = await connect(server[0].path)
    reply = await ask(conn, b'{"id": 1, "command": "crash"}\n')
    assert reply["error"]["code"] == "internal"
    assert "boom" in reply["error"]["message"]
    assert (await ask(conn, b'{"id": 2, "command": "echo"}\n'))["ok"] is True


async def test_line_over_64k_is_bad_request_and_the_connection_is_closed(
    server: tuple[ControlServer, Recorder],
) -> None:
    reader, writer = await connect(server[0].path)
    writer.write(b'{"id": 1, "command": "echo", "args": {"x": "' + b"a" * 70000 + b'"}}\n')
    await writer.drain()
    reply = json.loads(await asyncio.wait_for(reader.readline(), 5))
    assert reply["error"]["code"] == "bad_request"
    assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_idle_client_is_dropped(server: tuple[ControlServer, Recorder]) -> None:
    reader, _ = await connect(server[0].path)
    assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_peer_is_identified_by_the_kernel(server: tuple[ControlServer, Recorder]) -> None:
    await ask(await connect(server[0].path), b'{"id": 1, "command": "echo"}\n')
    assert server[1].peers == [Peer(os.getpid(), os.getuid(), os.getgid())]


async def test_socket_file_gets_the_configured_mode(
    server: tuple[ControlServer, Recorder],
) -> None:
    st = os.stat(server[0].path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o640


async def test_stale_socket_file_is_replaced(sock_path: str) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(sock_path)
    dead.close()  # the file stays, nobody listens: what a killed bangd leaves
    srv = ControlServer(sock_path, {"echo": Recorder().echo})
    await srv.start()
    try:
        assert (await ask(await connect(sock_path), b'{"id":1,"command":"echo"}\n'))["ok"]
    finally:
        await srv.stop()


async def test_second_server_on_a_live_socket_is_refused(
    server: tuple[ControlServer, Recorder],
) -> None:
    second = ControlServer(server[0].path, {})
    with pytest.raises(SocketInUse, match="another bangd is already running"):
        await second.start()
    assert (await ask(await connect(server[0].path), b'{"id":1,"command":"echo"}\n'))["ok"]


async def test_stop_removes_the_socket_and_can_be_called_twice(sock_path: str) -> None:
    srv = ControlServer(sock_path, {})
    await srv.start()
    await srv.stop()
    await srv.stop()
    assert not os.path.exists(sock_path)


async def test_blocking_client_returns_results_and_raises_errors(
    server: tuple[ControlServer, Recorder],
) -> None:
    def talk() -> tuple[dict[str, Any], str]:
        with ControlClient(server[0].path) as client:
            result = client.call("echo", {"a": 1})
            try:
                client.call("refuse")
            except ControlError as exc:
                return result, exc.code
        raise AssertionError("refuse did not raise")

    result, code = await asyncio.to_thread(talk)
    assert result == {"echo": {"a": 1}}
    assert code == "busy"


def test_blocking_client_says_how_to_check_the_service_when_nothing_listens(
    sock_path: str,
) -> None:
    with pytest.raises(DaemonUnreachable, match=r"is the service running\? \(systemctl status"):
        ControlClient(sock_path).call("status")


async def test_deeply_nested_json_is_bad_request(server: tuple[ControlServer, Recorder]) -> None:
    conn = await connect(server[0].path)
    reply = await ask(conn, b"[" * 30000 + b"]" * 30000 + b"\n")
    assert reply["error"] == {"code": "bad_request", "message": "JSON nested too deeply"}
    assert (await ask(conn, b'{"id": 2, "command": "echo"}\n'))["ok"] is True


@pytest.mark.parametrize("args", [b"[1]", b"null", b'"x"', b"3"])
async def test_args_that_are_not_an_object_are_invalid_argument(
    server: tuple[ControlServer, Recorder], args: bytes
) -> None:
    reply = await ask(await connect(server[0].path),
                      b'{"id": 1, "command": "echo", "args": ' + args + b"}\n")
    assert reply["id"] == 1
    assert reply["error"]["code"] == "invalid_argument"


@pytest.mark.parametrize("raw_id", [b"1", b"-2.5", b'"a\\u00e9"', b"true", b"null",
                                    b"1" * 4000])
async def test_any_json_scalar_id_is_echoed(
    server: tuple[ControlServer, Recorder], raw_id: bytes
) -> None:
    line = b'{"id": ' + raw_id + b', "command": "echo"}\n'
    reader, writer = await connect(server[0].path)
    writer.write(line)
    await writer.drain()
    reply_line = await asyncio.wait_for(reader.readline(), 5)
    assert json.loads(reply_line)["id"] == json.loads(raw_id)
    assert b"NaN" not in reply_line


@pytest.mark.parametrize(
    "raw_id",
    [b'"\\ud800"', b"NaN", b"Infinity", b"-Infinity", b"1e400", b"[1]", b'{"a": 1}',
     b"1" * 4400],
)
async def test_an_id_that_cannot_be_echoed_gets_bad_request_and_the_connection_stays(
    server: tuple[ControlServer, Recorder], raw_id: bytes
) -> None:
    conn = await connect(server[0].path)
    reader, writer = conn
    writer.write(b'{"id": ' + raw_id + b', "command": "echo"}\n')
    await writer.drain()
    reply_line = await asyncio.wait_for(reader.readline(), 5)
    reply = json.loads(reply_line, parse_constant=lambda c: pytest.fail(f"{c} in reply"))
    assert reply["ok"] is False
    assert reply["error"]["code"] == "bad_request"
    assert reply["id"] is None
    assert (await ask(conn, b'{"id": 2, "command": "echo"}\n'))["ok"] is True


async def test_a_lone_surrogate_in_args_is_answered_not_dropped(
    server: tuple[ControlServer, Recorder],
) -> None:
    conn = await connect(server[0].path)
    reply = await ask(conn, b'{"id": 1, "command": "echo", "args": {"s": "\\udc80"}}\n')
    assert reply == {"id": 1, "ok": False, "error": {
        "code": "bad_request",
        "message": "the answer would echo text that is not valid Unicode"}}


async def test_line_limit_is_exact(server: tuple[ControlServer, Recorder]) -> None:
    def line_of(size: int) -> bytes:
        head, tail = b'{"id": 1, "command": "echo", "args": {"x": "', b'"}}'
        return head + b"a" * (size - len(head) - len(tail)) + tail

    limit = server[0].max_line
    assert len(line_of(limit)) == limit
    at_limit = await ask(await connect(server[0].path), line_of(limit) + b"\n")
    assert at_limit["ok"] is True
    over = await ask(await connect(server[0].path), line_of(limit + 1) + b"\n")
    assert over["error"]["code"] == "bad_request"


async def test_a_burst_of_300_clients_connecting_at_once_is_served(
    server: tuple[ControlServer, Recorder],
) -> None:
    async def one(n: int) -> dict[str, Any]:
        conn = await connect(server[0].path)
        try:
            return await ask(conn, json.dumps({"id": n, "command": "echo"}).encode() + b"\n")
        finally:
            conn[1].close()

    replies = await asyncio.gather(*(one(n) for n in range(300)))
    assert sorted(r["id"] for r in replies) == list(range(300))
