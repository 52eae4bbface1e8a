"""Hostile and heavy use of the real daemon's control socket: it answers every request,
with the right code, and keeps serving."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.daemon_process import DaemonProcess
from tests.fail2ban_server import PrivateFail2ban
from tests.shortdir import short_tmpdir

COMMANDS = ["status", "version", "sources", "import", "runs", "reconcile", "lookup",
            "cache_stats", "cache_cleanup", "metrics", "frobnicate", "", "STATUS"]


def malformed(rng: random.Random) -> bytes:
    """One request line that is wrong in some way: bytes, shape, types, keys or values."""
    kind = rng.randrange(6)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80))).replace(b"\n", b"")
    if kind == 1:
        return json.dumps(rng.choice([[], 1, "x", None, [1, {"a": 2}]])).encode()
    values: list[object] = [None, True, "false", "no", 0, -1, 10**30, 1.5, [], {}, ["a"],
                            "\u202e", "' OR 1=1 --", "../../etc/passwd", "1.2.3.4", "x" * 300]
    args = {rng.choice(["sources", "all", "force", "dry_run", "limit", "source", "jail",
                        "ips", "bogus", ""]): rng.choice(values)
            for _ in range(rng.randrange(1, 4))}
    request: dict[str, object] = {"id": rng.choice([1, "a", None, 2.5, -7]),
                                  "command": rng.choice(COMMANDS), "args": args}
    if kind == 2:
        request["args"] = rng.choice(values)
    if kind == 3:
        request["id"] = rng.choice([[1], {"x": 1}])
    if kind == 4:
        del request["command"]
    return json.dumps(request).encode()


@pytest.fixture
def daemon(fail2ban_server: PrivateFail2ban, fail2ban_jail: str) -> Iterator[DaemonProcess]:
    with short_tmpdir("bangd-faults-") as d:
        proc = DaemonProcess(d, {"log_level": "warning",
                                 "fail2ban": {"socket": fail2ban_server.socket,
                                              "jail": fail2ban_jail}})
        proc.start()
        proc.wait_for("READY=1")
        try:
            yield proc
        finally:
            proc.close()


async def test_5000_malformed_requests_all_get_an_answer_and_none_is_internal(
    daemon: DaemonProcess,
) -> None:
    rng = random.Random(8)
    reader, writer = await asyncio.open_unix_connection(daemon.socket, limit=1 << 22)
    codes: Counter[str] = Counter()
    for _ in range(50):
        batch = [malformed(rng) for _ in range(100)]
        writer.write(b"".join(line + b"\n" for line in batch))
        await writer.drain()
        for _ in batch:
            reply = json.loads(await asyncio.wait_for(reader.readline(), 30))
            codes["ok" if reply["ok"] else reply["error"]["code"]] += 1
    writer.close()
    assert sum(codes.values()) == 5000
    assert codes["internal"] == 0, codes
    assert "Traceback" not in daemon.log_text()


async def test_200_concurrent_clients_asking_status_20_times_are_all_answered(
    daemon: DaemonProcess,
) -> None:
    async def client(n: int) -> int:
        reader, writer = await asyncio.open_unix_connection(daemon.socket, limit=1 << 22)
        answered = 0
        for i in range(20):
            writer.write(json.dumps({"id": i, "command": "status"}).encode() + b"\n")
            await writer.drain()
            reply = json.loads(await asyncio.wait_for(reader.readline(), 60))
            answered += reply["ok"] is True and reply["id"] == i
        writer.close()
        return answered

    assert sum(await asyncio.gather(*(client(n) for n in range(200)))) == 4000
