"""An asyncio client for fail2ban's Unix socket.

One persistent connection carries every request/response pair, because fail2ban answers a
command in well under a millisecond while connecting costs more; a lock keeps pairs from
interleaving. Any failure drops the connection, so the next call starts from a clean stream
instead of reading a reply meant for an abandoned request.

`ban`/`unban` send their entries in wire calls (`set JAIL banip A B ...`), sized here from
fail2ban's measured reply times so that no call nears `fail2ban.timeout`: fail2ban runs
the jail's action for every entry inside the call, so its pace is the action's. These calls
are not the Applier's batches (services/apply.py): a batch there is the unit of crash
safety, committed to the ledger as pending before and as applied after, and it knows
nothing of reply times. Both exist because they answer different questions (what may be in
doubt after a crash; how much fail2ban answers in time), so one Applier batch may go out as
several wire calls. `batch_size` (the same `fail2ban.batch_size`) only caps a call here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Final, TypeVar

from bangd.config import JAIL_NAME
from bangd.errors import (
    Fail2banCommandFailed,
    Fail2banProtocolError,
    Fail2banTimeout,
    Fail2banUnreachable,
    UnknownJail,
)
from bangd.fail2ban.banned_process import BanListReader
from bangd.fail2ban.wire import CLOSE_COMMAND, END, RemoteError, decode_reply, encode_command
from bangd.files import FileIdentity, file_identity

log = logging.getLogger(__name__)
_Read = TypeVar("_Read")

# The largest reply read whole: `enforced` naming 10k missing entries is ~0.5 MB. The ban
# list, tens of MB at a million bans, is streamed instead (`_forward`), and this limit is
# also what the stream buffers before fail2ban is paused: twice it, not the whole list.
_REPLY_LIMIT: Final = 4 * 1024 * 1024
# Replies larger than this are decoded in a thread so the event loop keeps serving.
_DECODE_INLINE_MAX: Final = 256 * 1024
_FORWARD_PIECE: Final = 1 << 18  # bytes of a streamed reply handed on at a time
_ADDRESS_CHARS: Final = "[0-9A-Fa-f:./]+"
# One C-level scan per validation chunk: entries joined by "\n", which no valid entry
# contains.
_ADDRESS_LINES: Final = re.compile(f"{_ADDRESS_CHARS}(?:\n{_ADDRESS_CHARS})*")
_ADDRESS: Final = re.compile(_ADDRESS_CHARS)
_ACTION_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_METHOD_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# A banip/unbanip wire call may take this share of fail2ban.timeout (see the module
# docstring). No action takes ~0.07 ms per entry, Debian's nftables-allports ~5 ms (one
# `nft` process per ban), so one call size cannot fit both.
_CALL_TIME_SHARE: Final = 0.25
# Until a jail's pace is known, calls start small and grow at most this much per call, so a
# call is never far larger than one already measured: under load nftables-allports took
# over 2 s for 100 entries (its first ban also creates its table).
_FIRST_CALL: Final = 10
_GROWTH: Final = 4
_VALIDATE_CHUNK: Final = 10_000
_VALIDATE_INLINE_MAX: Final = 50_000
_PEERCRED: Final = struct.Struct("3i")
_UNREACHABLE_HINT: Final = (
    "is fail2ban running? check `systemctl status fail2ban` and fail2ban.socket in the config"
)


@dataclass(frozen=True)
class JailStatus:
    """The two counters of `status JAIL short` that bangd reports."""

    currently_banned: int
    total_banned: int


class Fail2banClient:
    """Talks to one fail2ban server; safe to share between tasks."""

    def __init__(
        self,
        socket_path: str,
        *,
        timeout: float = 10.0,
        batch_size: int = 1000,
        allowed_uids: Collection[int] | None = None,
    ) -> None:
        if not isinstance(socket_path, str) or not socket_path:
            raise ValueError("fail2ban socket path must be a non-empty string")
        if not timeout > 0:
            raise ValueError(f"fail2ban timeout must be > 0 seconds, got {timeout!r}")
        if type(batch_size) is not int or batch_size < 1:
            raise ValueError(f"fail2ban batch_size must be an integer >= 1, got {batch_size!r}")
        uids = frozenset((0, os.getuid()) if allowed_uids is None else allowed_uids)
        if not uids or not all(type(uid) is int and uid >= 0 for uid in uids):
            raise ValueError(f"allowed_uids must be non-negative integers, got {allowed_uids!r}")
        self._socket_path = socket_path
        self._timeout = float(timeout)
        self._max_call = batch_size
        self._allowed_uids = uids
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._connected_to: FileIdentity | None = None
        # Measured seconds per entry of banip/unbanip and the last wire call's size, per jail
        # (its actions set the pace).
        self._seconds_per_entry: dict[str, float] = {}
        self._last_call: dict[str, int] = {}

    @property
    def socket_path(self) -> str:
        return self._socket_path

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def ping(self) -> None:
        result = await self.command(["ping"])
        if result != "pong":
            raise Fail2banProtocolError(f"fail2ban answered ping with {result!r}, not 'pong'")

    async def version(self) -> str:
        result = await self.command(["version"])
        if not isinstance(result, str):
            raise Fail2banProtocolError(f"fail2ban's version is not a string: {result!r}")
        return result

    async def jails(self) -> list[str]:
        """Names of the running jails, parsed from `status`' comma-separated 'Jail list'."""
        result = await self.command(["status"])
        jail_list = _status_field(result, "Jail list", ["status"])
        if not isinstance(jail_list, str):
            raise Fail2banProtocolError(f"fail2ban's 'Jail list' is not a string: {jail_list!r}")
        return [name.strip() for name in jail_list.split(",") if name.strip()]

    async def jail_status(self, jail: str) -> JailStatus:
        cmd = ["status", _checked_jail(jail), "short"]
        actions = _status_field(await self.command(cmd), "Actions", cmd)
        currently = _status_field(actions, "Currently banned", cmd)
        total = _status_field(actions, "Total banned", cmd)
        if type(currently) is not int or type(total) is not int:
            raise Fail2banProtocolError(
                f"fail2ban's `{' '.join(cmd)}` counters are not integers: {currently!r}, {total!r}"
            )
        return JailStatus(currently_banned=currently, total_banned=total)

    async def ban(self, jail: str, addrs: Iterable[str]) -> int:
        """Ban in wire calls; returns how many were NEWLY banned (fail2ban skips known ones)."""
        return await self._set_in_calls(jail, "banip", addrs)

    async def unban(self, jail: str, addrs: Iterable[str]) -> int:
        """Unban in wire calls; returns how many were actually banned before."""
        return await self._set_in_calls(jail, "unbanip", addrs)

    async def banned(self, jail: str) -> list[str]:
        """The jail's whole ban list (every one a string in the daemon: for small jails)."""
        cmd = ["get", _checked_jail(jail), "banned"]
        reply = bytearray()

        async def keep(piece: bytes) -> None:
            reply.extend(piece)

        await self._exchange(encode_command(cmd), cmd, partial(_forward, feed=keep, words=cmd))
        code, result = await _decode(memoryview(reply))
        if code != 0:
            raise _remote_failure(cmd, result)
        return _checked_strings(result, cmd)

    async def banned_among(
        self, jail: str, entries: Sequence[str], *, held: bool = True
    ) -> Sequence[str]:
        """Those of `entries` that fail2ban holds in `jail` (with held=False: those it does
        not hold), in their order. fail2ban's count comes first: an empty jail (a first
        import) needs no list, and a big one is read by a child process as it arrives
        (banned_process): the daemon never holds, decodes or keeps a million bans."""
        cmd = ["get", _checked_jail(jail), "banned"]
        bans = (await self.jail_status(jail)).currently_banned
        if not bans:
            return [] if held else entries  # read only: not a copy of a million
        async with await BanListReader.start(
            " ".join(cmd), entries, held=held, bans=bans
        ) as reader:
            receive = partial(_forward, feed=reader.feed, words=cmd)
            await self._exchange(encode_command(cmd), cmd, receive)
            found = await reader.answer()
        if isinstance(found, RemoteError):
            raise _remote_failure(cmd, found)
        return found

    async def jail_actions(self, jail: str) -> list[str]:
        """Names of the jail's actions (`get JAIL actions`), e.g. ["bangd-nftables"]: tells
        whether bans in this jail are enforced by bangd's own action."""
        return await self._strings(["get", _checked_jail(jail), "actions"])

    async def _strings(self, cmd: list[str]) -> list[str]:
        return _checked_strings(await self.command(cmd), cmd)

    async def action_call(
        self,
        jail: str,
        action: str,
        method: str,
        kwargs: Mapping[str, object] | None = None,
    ) -> object:
        """Call a Python action's public method over the socket and return its result.

        fail2ban runs `set JAIL action ACT METHOD JSON` as `method(**json.loads(JSON))` and
        answers with the return value (bangd-nftables' `enforced` and `repair` return dicts
        of plain values). An unknown method name makes fail2ban *set an attribute* of that
        name instead, so only names fail2ban lists in `get JAIL actionmethods ACT` are sent.
        """
        if type(action) is not str or not _ACTION_NAME.fullmatch(action):
            raise ValueError(f"invalid fail2ban action name {action!r}")
        if type(method) is not str or not _METHOD_NAME.fullmatch(method):
            raise ValueError(f"invalid action method name {method!r}")
        jail = _checked_jail(jail)
        methods = await self.command(["get", jail, "actionmethods", action])
        if not isinstance(methods, list) or method not in methods:
            raise Fail2banCommandFailed(
                ["set", jail, "action", action, method], "NoSuchMethod",
                f"action {action!r} of jail {jail!r} has no method {method!r}",
            )
        payload = json.dumps(dict(kwargs or {}), separators=(",", ":"))
        return await self.command(["set", jail, "action", action, method, payload])

    async def command(self, cmd: Sequence[str]) -> object:
        """Send any command; returns fail2ban's result or raises its error as a typed one."""
        words = list(cmd)
        payload = encode_command(words)
        code, result = await self._round_trip(payload, words)
        if code == 0:
            return result
        raise _remote_failure(words, result)

    async def close(self) -> None:
        """Say goodbye politely and drop the connection; the next call reconnects."""
        async with self._lock:
            writer = self._writer
            if writer is None:
                return
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(self._timeout):
                    writer.write(CLOSE_COMMAND)
                    await writer.drain()
            self._drop()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(self._timeout):
                    await writer.wait_closed()

    async def _set_in_calls(self, jail: str, verb: str, addrs: Iterable[str]) -> int:
        prefix = ["set", _checked_jail(jail), verb]
        if isinstance(addrs, str | bytes):
            raise TypeError(f"addresses must be an iterable of str, not one {type(addrs).__name__}")
        entries = addrs if isinstance(addrs, list) else list(addrs)
        if len(entries) > _VALIDATE_INLINE_MAX:
            # ~0.2 s per million: in a thread, the GIL's switch interval lets the loop breathe.
            await asyncio.to_thread(check_addresses, entries)
        else:
            check_addresses(entries)
        total = 0
        start = 0
        while start < len(entries):
            call = entries[start : start + self._next_call_size(jail)]
            started = time.monotonic()
            result = await self.command(prefix + call)
            self._measured(jail, time.monotonic() - started, len(call))
            if type(result) is not int:
                raise Fail2banProtocolError(
                    f"fail2ban's `set {jail} {verb}` returned {result!r}, not a count"
                )
            total += result
            start += len(call)
        return total

    def _next_call_size(self, jail: str) -> int:
        """As many entries as fit in a share of the timeout at the jail's measured pace,
        at most _GROWTH times the last call, never more than the configured batch_size."""
        per_entry = self._seconds_per_entry.get(jail)
        if per_entry is None:
            return min(self._max_call, _FIRST_CALL)
        fitting = int(self._timeout * _CALL_TIME_SHARE / max(per_entry, 1e-7))
        grown = self._last_call.get(jail, _FIRST_CALL) * _GROWTH
        return max(1, min(self._max_call, fitting, grown))

    def _measured(self, jail: str, seconds: float, entries: int) -> None:
        """A slower call counts at once (the next must not time out); a faster one is
        averaged in, so one lucky call does not make the next one too big."""
        if entries < 1:
            return
        self._last_call[jail] = entries
        current = seconds / entries
        known = self._seconds_per_entry.get(jail)
        self._seconds_per_entry[jail] = (
            current if known is None or current > known else (known + current) / 2
        )
        if known is not None and current > 2 * known:
            log.info(
                "jail=%s fail2ban slowed down: %.2f ms per entry, wire calls now %d entries",
                jail, current * 1000, self._next_call_size(jail),
            )

    async def _round_trip(self, payload: bytes, words: list[str]) -> tuple[int, object]:
        return await self._exchange(payload, words, _decoded_reply)

    async def _exchange(
        self, payload: bytes, words: list[str],
        receive: Callable[[asyncio.StreamReader], Awaitable[_Read]],
    ) -> _Read:
        """One request, and its reply read from the stream by `receive`."""
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout):
                    reader, writer = await self._connection()
                    writer.write(payload)
                    await writer.drain()
                    return await receive(reader)
            except TimeoutError as exc:
                self._drop()
                raise Fail2banTimeout(
                    f"fail2ban did not answer {_shown(words)} within {self._timeout:g} s "
                    f"on {self._socket_path}: is it overloaded? raise fail2ban.timeout"
                ) from exc
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                self._drop()
                raise Fail2banUnreachable(
                    f"connection to fail2ban at {self._socket_path} broke during "
                    f"{_shown(words)} ({exc!r}): {_UNREACHABLE_HINT}"
                ) from exc
            except BaseException:
                # After a bad reply or a cancelled request the stream position is unknown:
                # a reused connection could hand this reply to the next command.
                self._drop()
                raise

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is not None and self._writer is not None:
            if (
                not self._reader.at_eof()
                and not self._writer.is_closing()
                and self._socket_identity() == self._connected_to
            ):
                return self._reader, self._writer
            # fail2ban closed this idle connection, or a new fail2ban made a new socket
            # file: nothing was sent on the old connection, so opening a new one is safe
            # and the caller never sees the stale one.
            log.debug("fail2ban's idle connection is stale; reconnecting")
            self._drop()
        self._check_socket_owner()
        try:
            reader, writer = await asyncio.open_unix_connection(
                self._socket_path, limit=_REPLY_LIMIT
            )
        except OSError as exc:
            raise Fail2banUnreachable(
                f"cannot connect to fail2ban at {self._socket_path} ({exc.strerror or exc!r}): "
                f"{_UNREACHABLE_HINT}"
            ) from exc
        self._reader, self._writer = reader, writer
        self._connected_to = self._socket_identity()
        self._check_peer(writer)
        log.debug("connected to fail2ban at %s", self._socket_path)
        return reader, writer

    def _socket_identity(self) -> FileIdentity | None:
        return file_identity(self._socket_path)

    def _check_socket_owner(self) -> None:
        """Whoever owns the socket decides what bangd unpickles and bans: trust only root/us."""
        try:
            owner = os.stat(self._socket_path).st_uid
        except FileNotFoundError as exc:
            raise Fail2banUnreachable(
                f"no fail2ban socket at {self._socket_path}: {_UNREACHABLE_HINT}"
            ) from exc
        except OSError as exc:
            raise Fail2banUnreachable(
                f"cannot inspect fail2ban socket {self._socket_path} ({exc.strerror}): "
                f"{_UNREACHABLE_HINT}"
            ) from exc
        if owner not in self._allowed_uids:
            raise Fail2banUnreachable(
                _owner_refusal(self._socket_path, "owned by", owner, self._allowed_uids)
            )

    def _check_peer(self, writer: asyncio.StreamWriter) -> None:
        """Same rule for the process actually listening, which a stat() cannot swap."""
        sock = writer.get_extra_info("socket")
        if sock is None:
            return
        _, uid, _ = _PEERCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        )
        if uid not in self._allowed_uids:
            raise Fail2banUnreachable(
                _owner_refusal(self._socket_path, "served by", uid, self._allowed_uids)
            )

    def _drop(self) -> None:
        """Forget the connection; synchronous so it also runs while being cancelled."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()


def check_addresses(entries: Sequence[str]) -> None:
    """Refuse anything that is not shaped like an IP/CIDR literal, naming the first culprit.

    fail2ban resolves host names on unbanip, which can hang; this is a cheap shape check
    (charset only), not a parser: callers normalise addresses before they get here.
    """
    for start in range(0, len(entries), _VALIDATE_CHUNK):
        chunk = entries[start : start + _VALIDATE_CHUNK]
        try:
            joined = "\n".join(chunk)
        except TypeError:
            joined = ""
        if (
            _ADDRESS_LINES.fullmatch(joined)
            and joined.count("\n") == len(chunk) - 1
            and set(map(type, chunk)) == {str}  # str subclasses would not encode
        ):
            continue
        for entry in chunk:
            if type(entry) is not str or not _ADDRESS.fullmatch(entry):
                raise ValueError(
                    f"not an IP address or network: {entry!r}; "
                    "only IP/CIDR literals may be sent to fail2ban"
                )


def _checked_jail(jail: str) -> str:
    if type(jail) is not str or not JAIL_NAME.fullmatch(jail):
        raise ValueError(
            f"invalid fail2ban jail name {jail!r}: use letters, digits, '_', '.', '-' "
            "and do not start with '-'"
        )
    return jail


async def _decoded_reply(reader: asyncio.StreamReader) -> tuple[int, object]:
    data = await reader.readuntil(END)
    return await _decode(memoryview(data)[: -len(END)])


async def _forward(
    reader: asyncio.StreamReader, feed: Callable[[bytes], Awaitable[None]], words: list[str]
) -> None:
    """Hand the reply to `words` on a piece at a time as it arrives, END left out."""
    keep = len(END) - 1  # what may be the start of END, held back until the next piece
    pending = b""
    while True:
        piece = await reader.read(_FORWARD_PIECE)
        if not piece:
            raise asyncio.IncompleteReadError(pending, None)
        data = pending + piece
        at = data.find(END)
        if at >= 0:
            if at + len(END) != len(data):
                raise Fail2banProtocolError(
                    f"fail2ban answered {_shown(words)} with more than one reply"
                )
            await feed(data[:at])
            return
        await feed(data[:-keep])
        pending = data[-keep:]


async def _decode(data: memoryview) -> tuple[int, object]:
    if len(data) <= _DECODE_INLINE_MAX:
        return decode_reply(data.tobytes())
    return await asyncio.to_thread(decode_reply, data.tobytes())


def _checked_strings(result: object, cmd: Sequence[str]) -> list[str]:
    if not isinstance(result, list) or not all(type(item) is str for item in result):
        raise Fail2banProtocolError(
            f"fail2ban's `{' '.join(cmd)}` is not a list of strings: {type(result).__name__}"
        )
    return result


def _status_field(result: object, name: str, cmd: Sequence[str]) -> object:
    """Find `name` in fail2ban's status replies, which are lists of (name, value) pairs."""
    if isinstance(result, list | tuple):
        for item in result:
            if isinstance(item, tuple | list) and len(item) == 2 and item[0] == name:
                return item[1]
    raise Fail2banProtocolError(
        f"fail2ban's `{' '.join(cmd)}` reply has no {name!r}: {str(result)[:200]}"
    )


def _remote_failure(words: list[str], result: object) -> Exception:
    if not isinstance(result, RemoteError):
        return Fail2banCommandFailed(words, "unknown", f"unexpected error reply {result!r:.200}")
    if result.name == "UnknownJailException":
        jail = result.args[0] if result.args and type(result.args[0]) is str else result.message
        return UnknownJail(jail)
    return Fail2banCommandFailed(words, result.name, result.message)


def _owner_refusal(path: str, relation: str, uid: int, allowed: Collection[int]) -> str:
    return (
        f"refusing fail2ban socket {path}: {relation} uid {uid}, not one of "
        f"{sorted(allowed)} (root or bangd's own user); whoever owns it controls what bangd "
        "bans, so fix its ownership or fail2ban.socket in the config"
    )


def _shown(words: list[str]) -> str:
    return repr(" ".join(words[:4]) + (" ..." if len(words) > 4 else ""))
