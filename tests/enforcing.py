"""What the enforcement tests share: a private fail2ban-server running bangd's shipped
firewall action inside the test's own network namespaces (the `netns` fixture,
tests/netns.py), and bangd's own client to it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from bangd.fail2ban.client import Fail2banClient
from tests.fail2ban_server import PrivateFail2ban, running
from tests.netns import NetnsPair

REPO: Final = Path(__file__).resolve().parent.parent
ACTION_FILE: Final = REPO / "packaging" / "fail2ban" / "action.d" / "bangd-nftables.py"
JAIL: Final = "blocklist"
ACTION: Final = "bangd-nftables"
# A connect expected to succeed may wait longer at no cost (it returns at once when the
# path works), so a loaded machine cannot turn a slow handshake into a false "dropped".
OPEN_WAIT: Final = 5.0


@contextlib.contextmanager
def enforcing_fail2ban(
    netns: NetnsPair,
    *jails: str,
    action: str = "bangd-nftables.py",
    action_files: Sequence[Path] = (ACTION_FILE,),
    plain_jails: Sequence[str] = (),
) -> Iterator[PrivateFail2ban]:
    """A started fail2ban-server in the server namespace, `jails` (default "blocklist")
    with `action` except the `plain_jails`; stopped and its directory removed afterwards."""
    with running(PrivateFail2ban(
        jails=jails or (JAIL,), action=action, action_files=action_files,
        netns_pid=netns.server.pid, plain_jails=plain_jails,
    )) as server:  # fmt: skip
        yield server


@contextlib.asynccontextmanager
async def fail2ban_client(server: PrivateFail2ban, **options: Any) -> AsyncIterator[Fail2banClient]:
    """bangd's Fail2banClient to `server` (`options` as Fail2banClient takes them), closed
    afterwards."""
    client = Fail2banClient(server.socket, **options)
    try:
        yield client
    finally:
        await client.close()
