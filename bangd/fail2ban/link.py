"""bangd's one handle on fail2ban, kept for the daemon's whole life.

The importer, the reconciler, the health monitor and the commands all hold this object.
A reload that changes `fail2ban:` swaps the client inside it, so none of them ever holds a
client for the old socket, and nobody has to be told which client is current.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence

from ..config import Fail2banConfig
from .client import Fail2banClient, JailStatus


class Fail2banLink:
    def __init__(self, settings: Fail2banConfig) -> None:
        self._settings = settings
        self._client = _client_for(settings)

    @property
    def settings(self) -> Fail2banConfig:
        return self._settings

    @property
    def socket_path(self) -> str:
        return self._client.socket_path

    async def reconfigure(self, settings: Fail2banConfig) -> bool:
        """Use `settings` from now on; True if they differ (the old client is closed).

        A request already in flight finishes on the old client: it holds that client's
        lock, and close() waits for it.
        """
        if settings == self._settings:
            return False
        old, self._client, self._settings = self._client, _client_for(settings), settings
        with contextlib.suppress(Exception):
            await old.close()
        return True

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.close()

    async def version(self) -> str:
        return await self._client.version()

    async def jail_status(self, jail: str) -> JailStatus:
        return await self._client.jail_status(jail)

    async def ban(self, jail: str, addrs: Iterable[str]) -> int:
        return await self._client.ban(jail, addrs)

    async def unban(self, jail: str, addrs: Iterable[str]) -> int:
        return await self._client.unban(jail, addrs)

    async def banned_among(
        self, jail: str, entries: Sequence[str], *, held: bool = True
    ) -> Sequence[str]:
        return await self._client.banned_among(jail, entries, held=held)

    async def command(self, cmd: Sequence[str]) -> object:
        return await self._client.command(cmd)

    async def jail_actions(self, jail: str) -> list[str]:
        return await self._client.jail_actions(jail)

    async def action_call(
        self, jail: str, action: str, method: str, kwargs: Mapping[str, object] | None = None
    ) -> object:
        return await self._client.action_call(jail, action, method, kwargs)


def _client_for(settings: Fail2banConfig) -> Fail2banClient:
    return Fail2banClient(
        settings.socket, timeout=settings.timeout, batch_size=settings.batch_size
    )
