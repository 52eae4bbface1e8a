"""Network namespaces the test makes itself, so packets prove what the firewall does.

`NetnsPair` makes two fresh network namespaces with `unshare -n`: "server" (where a private
fail2ban-server and its firewall action run, and a TCP listener answers) and "client" (the
internet: it owns every source address the test connects from). A veth pair joins them.
Only documentation ranges are used (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
2001:db8::/32), and only inside these namespaces: nothing leaves the machine, and the
machine's own ruleset is never touched.

Each namespace is held by an agent process (this module run as `python -m tests.netns
agent` under `unshare -n`) that answers JSON lines on stdin: `listen` in the server, and
`connect` from a chosen source address in the client, so a connection attempt costs no new
process. A connect timeout is the measurement itself: a dropped SYN shows as "timeout".
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parent.parent
SERVER_V4: Final = "192.0.2.1"
CLIENT_V4: Final = "192.0.2.2"
SERVER_V6: Final = "2001:db8:1::1"
CLIENT_V6: Final = "2001:db8:1::2"
# Routed from the server to the client's end, so the client may use any source in them.
CLIENT_ROUTES: Final = ("198.51.100.0/24", "203.0.113.0/24", "2001:db8:2::/48")
PORT: Final = 8080
CONNECT_TIMEOUT: Final = 1.0
REQUIRED_TOOLS: Final = ("unshare", "nsenter", "ip", "nft")


class NetnsError(RuntimeError):
    """A namespace, its agent or a command inside it failed."""


def require_tools() -> None:
    """Fail loudly (never skip): CI runs as root with iproute2 and nftables installed."""
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise NetnsError(f"missing {', '.join(missing)}: run scripts/setup --test")
    if os.geteuid() != 0:
        raise NetnsError("network namespaces need root: run the tests as root (CI does)")


class Agent:
    """One process holding a fresh network namespace and answering requests in it."""

    def __init__(self, name: str) -> None:
        self.name = name
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self._proc = subprocess.Popen(
            ["unshare", "-n", "--", sys.executable, "-m", "tests.netns", "agent"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=REPO, env=env, text=True, bufsize=1,
        )  # fmt: skip
        self._lock = threading.Lock()
        self._read_reply(timeout=20.0)  # {"ready": true} once the namespace exists

    @property
    def pid(self) -> int:
        return self._proc.pid

    def request(self, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        with self._lock:
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps(fields) + "\n")
            self._proc.stdin.flush()
            return self._read_reply(timeout)

    def _read_reply(self, timeout: float) -> dict[str, Any]:
        assert self._proc.stdout is not None
        reply: list[str] = []
        reader = threading.Thread(target=lambda: reply.append(self._proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not reply or not reply[0]:
            raise NetnsError(f"{self.name} agent did not answer within {timeout:g} s: "
                             f"{self._stderr()}")
        result = json.loads(reply[0])
        assert isinstance(result, dict)
        if "error" in result:
            raise NetnsError(f"{self.name} agent: {result['error']}")
        return result

    def _stderr(self) -> str:
        if self._proc.poll() is None:
            return "(still running)"
        assert self._proc.stderr is not None
        return f"exited {self._proc.returncode}: {self._proc.stderr.read()[-2000:]}"

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside this namespace."""
        done = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-n", "--", *argv],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise NetnsError(
                f"in {self.name}: {' '.join(argv)} exited {done.returncode}: "
                f"{done.stdout[-1000:]}{done.stderr[-1000:]}"
            )
        return done

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()


class NetnsPair:
    """A server namespace and a client namespace joined by a veth pair; see the module doc."""

    def __init__(self) -> None:
        require_tools()
        self._sources: set[str] = set()
        self.server = Agent("server")
        try:
            self.client = Agent("client")
            try:
                self._link()
                self.server.request(op="listen", port=PORT)
            except BaseException:
                self.client.close()
                raise
        except BaseException:
            self.server.close()
            raise

    def _link(self) -> None:
        s, c = self.server, self.client
        for agent in (s, c):
            agent.run("ip", "link", "set", "lo", "up")
            # No duplicate address detection on the new link: its link-local address would
            # stay tentative for about a second, and the first IPv6 handshake with it.
            for scope in ("all", "default"):
                agent.run("sysctl", "-qw", f"net.ipv6.conf.{scope}.accept_dad=0")
        s.run("ip", "link", "add", "veth-s", "type", "veth", "peer", "name", "veth-c",
              "netns", str(c.pid))
        s.run("ip", "addr", "add", f"{SERVER_V4}/24", "dev", "veth-s")
        s.run("ip", "-6", "addr", "add", f"{SERVER_V6}/64", "dev", "veth-s", "nodad")
        s.run("ip", "link", "set", "veth-s", "up")
        c.run("ip", "addr", "add", f"{CLIENT_V4}/24", "dev", "veth-c")
        c.run("ip", "-6", "addr", "add", f"{CLIENT_V6}/64", "dev", "veth-c", "nodad")
        c.run("ip", "link", "set", "veth-c", "up")
        for route in CLIENT_ROUTES:
            s.run("ip", "-6" if ":" in route else "-4", "route", "add", route, "dev", "veth-s")
        # Permanent neighbours, no ARP/NDP: a client NS sent from a banned IPv6 source is
        # dropped by the very rules under test, which would leave the server unresolvable
        # for the next, clean connect ("unreachable").
        self._server_mac = _mac(s, "veth-s")
        self._client_mac = _mac(c, "veth-c")
        for address in (SERVER_V4, SERVER_V6):
            c.run("ip", "neigh", "replace", address, "lladdr", self._server_mac, "dev", "veth-c",
                  "nud", "permanent")
        for address in (CLIENT_V4, CLIENT_V6):
            self._pin_client(address)

    def _pin_client(self, address: str) -> None:
        self.server.run("ip", "neigh", "replace", address, "lladdr", self._client_mac,
                        "dev", "veth-s", "nud", "permanent")

    def add_source(self, address: str) -> None:
        """Give the client `address` (inside CLIENT_ROUTES) to connect from."""
        if address in self._sources or address in (CLIENT_V4, CLIENT_V6):
            return
        family = "-6" if ":" in address else "-4"
        extra = ["nodad"] if ":" in address else []
        self.client.run("ip", family, "addr", "add", f"{address}/{128 if ':' in address else 32}",
                        "dev", "veth-c", *extra)
        self._pin_client(address)
        self._sources.add(address)

    def connect(self, source: str, timeout: float = CONNECT_TIMEOUT) -> str:
        """A TCP connect from `source` to the server's listener: "open", "timeout" (the SYN
        was dropped), "refused" or "unreachable" (rejected)."""
        self.add_source(source)
        server = SERVER_V6 if ":" in source else SERVER_V4
        reply = self.client.request(op="connect", src=source, dst=server, port=PORT,
                                    wait=timeout, timeout=timeout + 10.0)
        result = reply["result"]
        assert isinstance(result, str)
        return result

    def nft(self, *args: str) -> str:
        """Run `nft` in the server namespace; its output."""
        return self.server.run("nft", *args).stdout

    def close(self) -> None:
        self.client.close()
        self.server.close()


def _mac(agent: Agent, device: str) -> str:
    (link,) = json.loads(agent.run("ip", "-j", "link", "show", device).stdout)
    address = link["address"]
    assert isinstance(address, str)
    return address


# ---- the agent, run inside a namespace ------------------------------------------------------


def _listen(port: int) -> dict[str, Any]:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::", port))
    sock.listen(128)

    def serve() -> None:
        while True:
            conn, _ = sock.accept()
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return {"ok": True}


def _connect(src: str, dst: str, port: int, wait: float) -> dict[str, Any]:
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(wait)
        sock.bind((src, 0))
        try:
            sock.connect((dst, port))
        except TimeoutError:
            return {"result": "timeout"}
        except ConnectionRefusedError:
            return {"result": "refused"}
        except OSError as exc:
            return {"result": "unreachable" if exc.errno in (101, 113) else f"error {exc!r}"}
    return {"result": "open"}


def agent(stdin: Any = sys.stdin, stdout: Any = sys.stdout) -> int:
    stdout.write(json.dumps({"ready": True}) + "\n")
    stdout.flush()
    for line in stdin:
        request = json.loads(line)
        try:
            if request["op"] == "listen":
                reply = _listen(int(request["port"]))
            elif request["op"] == "connect":
                reply = _connect(request["src"], request["dst"], int(request["port"]),
                                 float(request["wait"]))
            else:
                reply = {"error": f"unknown op {request['op']!r}"}
        except Exception as exc:
            reply = {"error": repr(exc)}
        stdout.write(json.dumps(reply) + "\n")
        stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["agent"]:
        print("usage: python -m tests.netns agent  (run inside `unshare -n`)", file=sys.stderr)
        return 2
    return agent()


if __name__ == "__main__":
    sys.exit(main())
