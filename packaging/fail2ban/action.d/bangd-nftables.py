"""bangd-nftables: a fail2ban action that makes every ban of its jail a kernel drop.

fail2ban loads this file in-process (``action = bangd-nftables.py[opt=value, ...]``) and calls
``ban()``/``unban()`` once per address or network. Every call only queues the change; a
flusher thread applies the queue to an in-memory model and writes the changes to nftables a
moment later, in one transaction per burst (every 0.25 s while a long burst lasts), because a
``banip`` of 1,000 entries or a restart restoring 100k bans calls ``ban()`` that many times in
a row and one kernel write per ban would be the bottleneck. The table, its chain, sets and
rules are written and read through libnftables (Debian's ``python3-nftables``); elements go to
and come from the kernel as netlink messages of this module's own, which saves libnftables'
~2 us of parsing per element.

Kernel layout, one table per jail (``inet bangd_<jail>``): a set per prefix length in use
(``v4_32`` for IPv4 addresses, ``v4_24`` for IPv4 /24 networks, ``v6_128``, ``v6_48``, ...),
each a plain hash set of network addresses, and one drop rule per set in an input-hook chain
(``ip saddr & 255.255.255.0 @v4_24 drop``). Measured with nftables 1.0.6: interval sets,
the usual way to hold networks, load the whole set into libnftables for every write (one
element into a 30,000-element interval set took 0.95 s, into 100,000 7.8 s), while a hash
set takes one element in 0.4 ms at any size and 100,000 in a transaction in ~0.8 s. Hash
sets per prefix length also make overlap a non-issue: 91.208.184.0/23 and 91.208.184.0/24
are two elements of two sets, both enforced, and removing one leaves the other in force.

Methods callable over fail2ban's socket (``set JAIL action bangd-nftables METHOD JSON``):
``enforced(entries=None, limit=20)`` compares the model (or the given entries) with what the
kernel holds; ``repair()`` re-applies the whole model, e.g. after ``nft flush ruleset``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import socket
import struct
import sys
import threading
import time
from array import array
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import nftables
from fail2ban.server.actions import ActionBase
from fail2ban.server.ipdns import IPAddr

# A ban is one int: the network address in the low 128 bits, above them its tail: 8 bits of
# prefix length, then 1 bit set for IPv6, XORed with an IPv4 address's tail so that the key of
# an IPv4 address, the usual ban, is the address itself (see _key). An int hashes fast and is
# not tracked by the garbage collector; a tuple per ban was, and with 100k bans restored in a
# row the collections it set off in fail2ban's large heap cost more than the ban itself. The
# address sits in the low bits because an int's hash is its value and a set picks the slot
# from the low bits: with the tail there (the layout before), every IPv4 key shared its low 9
# bits and adding 1M of them to the model took 372 ns a key instead of 190.
Key = int
# (family 4|6, prefix length): one set and its rule
Shape = tuple[int, int]
_ADDR_BITS = 128
_ADDR = (1 << _ADDR_BITS) - 1
_V4_ADDRESS_TAIL = 32 << 1

_FAMILIES = {socket.AF_INET: 4, socket.AF_INET6: 6}
_BITS = {4: 32, 6: 128}
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_BYTES = {4: 4, 6: 16}
_PROTO = {4: "ip", 6: "ip6"}
_SET_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
_SET_NAME = re.compile(r"v([46])_(\d{1,3})")
_PLAIN_JAIL = re.compile(r"[A-Za-z0-9_]{1,48}")
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_NOTICE = getattr(logging, "NOTICE", logging.INFO)
_MAX_LIMIT = 10_000
_BURST_INTERVAL = 0.25  # seconds between the flusher's writes while bans keep coming
_RELISTS = 3
_RELIST_DELAY = 0.2
# A set for addresses of each family always exists, so the table's shape is predictable.
_ALWAYS = ((4, 32), (6, 128))
_MASKS = {family: [((1 << plen) - 1) << (bits - plen) for plen in range(bits + 1)]
          for family, bits in _BITS.items()}


def table_for_jail(jail: str) -> str:
    """A table name of its own for each jail.

    A plain jail name is used as is (``bangd_blocklist``). Anything else is reduced to safe
    characters plus a digest of the real name after a ``-``, which plain names never contain,
    so ``a-b`` and ``a_b`` (or ``a_b`` and a name that merely looks like a digest) never
    share a table.
    """
    if _PLAIN_JAIL.fullmatch(jail):
        return f"bangd_{jail}"
    safe = re.sub(r"[^A-Za-z0-9_]", "_", jail)[:32]
    digest = hashlib.sha256(jail.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"bangd_{safe}-{digest}"


def _ntop(family: int, addr: int) -> str:
    return socket.inet_ntop(_AF[family], addr.to_bytes(_BYTES[family], "big"))


def _mask(family: int, plen: int) -> int:
    return _MASKS[family][plen]


def _key(family: int, plen: int, addr: int) -> Key:
    return ((plen << 1 | (family == 6)) ^ _V4_ADDRESS_TAIL) << _ADDR_BITS | addr


def _shape(tail: int) -> Shape:
    """The shape of a key's tail (key >> _ADDR_BITS)."""
    tail ^= _V4_ADDRESS_TAIL
    return (6 if tail & 1 else 4, tail >> 1 & 0xFF)


def _set_name(family: int, plen: int) -> str:
    return f"v{family}_{plen}"


def _format_key(key: Key) -> str:
    family, plen = _shape(key >> _ADDR_BITS)
    text = _ntop(family, key & _ADDR)
    return text if plen == _BITS[family] else f"{text}/{plen}"


def key_of(ip: Any) -> Key | None:
    """fail2ban's normalised address (IPAddr) as a model key; None for a non-address.
    Called once per ban, so it reads each attribute once (an invalid address has a family
    that is not in _FAMILIES)."""
    if not isinstance(ip, IPAddr):
        ip = IPAddr(str(ip))
    af, plen = ip.family, ip.plen
    if af == socket.AF_INET and plen == 32:  # the usual ban: a plain IPv4 address
        return int(ip.addr)
    family = _FAMILIES.get(af)
    if family is None:
        return None
    plen = int(plen)
    if not 0 <= plen <= _BITS[family]:
        return None
    return _key(family, plen, int(ip.addr) & _MASKS[family][plen])


# libnftables refused a command; the message carries nft's own error text. A builtin class,
# not a subclass: errors travel pickled over fail2ban's socket, and a class from this
# module (named "bangd-nftables", not an importable name) is one no client can map.
NftError = RuntimeError


class Action(ActionBase):  # type: ignore[misc]
    """One jail's bans as nftables drops; see the module docstring for the layout."""

    def __init__(
        self,
        jail: Any,
        name: str,
        table: str = "",
        priority: str = "-1",
        blocktype: str = "drop",
        flush_delay: str = "0.05",
    ) -> None:
        super().__init__(jail, name)
        self._table, self._priority, self._blocktype, self._flush_delay = _options(
            jail.name, table, priority, blocktype, flush_delay
        )
        self._nft = nftables.Nftables()
        self._nft_json = nftables.Nftables()
        self._nft_json.set_json_output(True)
        self._nft_json.set_terse_output(True)  # the elements are read with _dump_set()
        self._lock = threading.Lock()  # _not_addresses
        # The kernel, one writer at a time, in order; and the model, which only a holder of
        # this lock changes (_drain), so the model is what the kernel was last brought up to.
        self._write_lock = threading.Lock()
        self._model: set[Key] = set()
        # ban() and unban() only append here (a key, or ~key for an unban: negative), in the
        # order fail2ban called them; _write() drains it into the model. A deque's append and
        # popleft are atomic, so the hot path takes no lock: ban() ran 3.5 us of fail2ban's
        # ~8 us per ban at loglevel WARNING with a lock, a set lookup and a dict update per
        # call (py-spy, 300k bans in one process). A bangd import of 1M addresses at WARNING,
        # alternating with the same import and no action (2 rounds each): 0.66x the no-action
        # time before, 0.79x now; at NOTICE (3 rounds) 0.95x before, 1.03x now.
        self._events: deque[Key] = deque()
        self._woken = False  # a ban has set _wake since the flusher last cleared it
        self._not_addresses: set[str] = set()
        self._kernel_sets: set[Shape] = set()
        self._stale = True  # the table must be rebuilt from the model before any delta
        self._netlink_writes = True  # element deltas go straight to netlink (_send_batch)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._flusher: threading.Thread | None = None

    # fail2ban reads `banEpoch` of every action when it re-bans after a consistency check.
    banEpoch = 0

    @property
    def table(self) -> str:
        """Read-only: fail2ban's `set ... action ACT KEY VALUE` would otherwise overwrite it."""
        return self._table

    # ---- fail2ban's hooks -----------------------------------------------------------------

    def start(self) -> None:
        """Create the table from scratch (a crash may have left an old one) and start
        flushing. Bans restored from fail2ban's database arrive through ban() afterwards."""
        self._stopping.clear()
        self._woken = False
        if self._flusher is None or not self._flusher.is_alive():
            self._flusher = threading.Thread(
                target=self._run_flusher, name=f"bangd-nftables[{self._table}]", daemon=True
            )
            self._flusher.start()
        with self._write_lock:
            self._stale = True
            self._write()
        if self._stale:
            raise NftError(f"bangd-nftables: table={self._table} could not be created")
        self._logSys.log(
            _NOTICE, "bangd-nftables: table=%s started priority=%s blocktype=%s",
            self._table, self._priority, self._blocktype,
        )

    def stop(self) -> None:
        """Stop flushing and delete the table: no rule of this jail is left behind."""
        self._stopping.set()
        self._wake.set()
        if self._flusher is not None:
            self._flusher.join(30)
            self._flusher = None
        with self._write_lock, self._lock:
            self._events.clear()
            self._model.clear()
            self._not_addresses.clear()
            self._kernel_sets.clear()
            self._stale = True
        with self._write_lock:
            self._run(f"add table inet {self._table}\ndelete table inet {self._table}", "stop")
        self._logSys.log(_NOTICE, "bangd-nftables: table=%s stopped, table deleted", self._table)

    def ban(self, aInfo: Mapping[str, Any]) -> None:
        """Queue the ban; the flusher writes it. Banning a banned entry changes nothing."""
        ip = aInfo["ip"]
        key = key_of(ip)
        if key is None:
            with self._lock:
                self._not_addresses.add(str(ip))
            self._logSys.warning(
                "bangd-nftables: table=%s not an address, not enforced: %r", self._table, str(ip)
            )
            return
        self._events.append(key)
        if not self._woken:  # Event.set() takes a lock: 100k bans in a row, one wake
            self._woken = True
            self._wake.set()

    def reban(self, aInfo: Mapping[str, Any]) -> None:
        self.ban(aInfo)

    def unban(self, aInfo: Mapping[str, Any]) -> None:
        """Forget the entry; other entries, even overlapping ones, stay in force."""
        ip = aInfo["ip"]
        key = key_of(ip)
        if key is None:
            with self._lock:
                self._not_addresses.discard(str(ip))
            return
        self._events.append(~key)
        if not self._woken:
            self._woken = True
            self._wake.set()

    def flush(self) -> bool:
        """fail2ban's unban-everything (``unban --all``, jail stop): empty the sets at once
        instead of one unban() per ticket."""
        with self._write_lock:
            with self._lock:
                self._events.clear()
                self._model.clear()
                self._not_addresses.clear()
                self._stale = True
            self._write()
        if self._stale:
            self._wake.set()  # the flusher retries
        return True

    def clearAllParams(self) -> None:
        """With reload(), tells fail2ban to keep this object (and its bans) on a reload."""

    def reload(self, **options: str) -> None:
        """`fail2ban-client reload`: keep the bans, apply changed options."""
        table, priority, blocktype, flush_delay = _options(
            self._jail.name, options.get("table", ""), options.get("priority", "-1"),
            options.get("blocktype", "drop"), options.get("flush_delay", "0.05"),
        )
        with self._write_lock:
            if table != self._table:
                self._run(f"add table inet {self._table}\ndelete table inet {self._table}",
                          "reload")
            changed = (table, priority, blocktype) != (
                self._table, self._priority, self._blocktype)
            self._table, self._priority, self._blocktype = table, priority, blocktype
            self._flush_delay = flush_delay
            if changed:
                self._stale = True
                self._write()

    # ---- methods for bangd, over fail2ban's socket -----------------------------------------

    def enforced(self, entries: list[str] | None = None, limit: int = 20) -> dict[str, Any]:
        """What the kernel enforces, checked element by element.

        Without `entries`, every ban this action holds is checked; with `entries` (addresses
        or networks as strings), those are. An entry counts as enforced when its own element
        is in its prefix length's set and that set's drop rule is in the input chain (an
        entry merely covered by a wider one is not: the wider one may be lifted). Pending
        bans are written first, so the answer covers everything banned before the call.
        The reply stays small for 100k bans: counts, and at most `limit` missing entries.
        """
        if entries is not None and (
            not isinstance(entries, list) or not all(isinstance(e, str) for e in entries)
        ):
            raise ValueError("enforced(): entries must be a list of strings")
        if type(limit) is not int or not 0 <= limit <= _MAX_LIMIT:
            raise ValueError(f"enforced(): limit must be an integer 0..{_MAX_LIMIT}")
        started = time.monotonic()
        with self._write_lock:
            self._write()
            banned = len(self._model)
            model = list(self._model) if entries is None else []
            with self._lock:
                not_addresses = len(self._not_addresses)
            kernel = self._kernel_state()
            wanted = model if entries is None else [key_of(entry) for entry in entries]
            missing_keys = _missing(wanted, kernel)
            for _ in range(_RELISTS):
                if kernel is None or not self._written(missing_keys):
                    break
                # A dump of a hash set the kernel is still resizing (right after a large
                # write) can skip elements that were written: list again and count what
                # either dump showed. Entries that were never banned need no second look.
                time.sleep(_RELIST_DELAY)
                again = self._kernel_state()
                if again is None:
                    kernel = None
                    break
                for shape, keys in again[0].items():
                    kernel[0].setdefault(shape, set()).update(keys)
                kernel[1].update(again[1])
                missing_keys = _missing(missing_keys, kernel)
        checked = len(wanted)
        elements = kernel[0] if kernel is not None else {}
        missing = [
            "(not an address)" if key is None else _format_key(key) for key in missing_keys[:limit]
        ]
        return {
            "table": self._table,
            "table_present": kernel is not None,
            "banned": banned,
            "checked": checked,
            "enforced": checked - len(missing_keys),
            "missing_count": len(missing_keys),
            "missing": sorted(missing),
            "kernel_elements": sum(len(keys) for keys in elements.values()),
            "not_addresses": not_addresses,
            "took": round(time.monotonic() - started, 3),
        }

    def _written(self, keys: list[Key | None]) -> bool:
        """Whether any of the keys is banned; caller holds _write_lock."""
        return any(key in self._model for key in keys if key is not None)

    def repair(self) -> dict[str, Any]:
        """Rebuild the table from the model in one transaction (there is no moment without
        the old rules), e.g. after `nft flush ruleset` emptied the kernel."""
        started = time.monotonic()
        with self._write_lock:
            self._stale = True
            self._write()
            if self._stale:
                raise NftError(f"bangd-nftables: table={self._table} repair failed; see the log")
            elements = len(self._model)
        took = time.monotonic() - started
        self._logSys.log(
            _NOTICE, "bangd-nftables: table=%s repaired elements=%d took=%.3fs",
            self._table, elements, took,
        )
        return {"table": self._table, "elements": elements, "took": round(took, 3)}

    # ---- the kernel side ---------------------------------------------------------------

    def _run_flusher(self) -> None:
        """Write pending changes `flush_delay` after the first one of a burst arrives, and
        while the burst goes on (a restart restoring 100k bans, a large import), at most
        every _BURST_INTERVAL: each write wakes this thread and takes the GIL from fail2ban's
        own ban loop, and 0.25 s instead of 0.05 s between writes halved what the writes
        cost that loop (100k bans in a row: +0.26 s -> +0.13 s, measured in one process)."""
        written = 0.0
        while not self._stopping.is_set():
            self._wake.wait()
            delay = max(self._flush_delay, _BURST_INTERVAL - (time.monotonic() - written))
            if self._stopping.wait(delay):
                return
            # Clear the event, then the flag, both before draining: a ban between the two
            # finds the flag set and is drained now; any later ban either sets the event
            # itself or follows one that did. (Flag first, then clear, could lose a wake:
            # a ban in between would set the event just to have it cleared, and every ban
            # after the drain would find the flag set and stay queued.)
            self._wake.clear()
            self._woken = False
            try:
                with self._write_lock:
                    self._write()
            except Exception as exc:  # the thread must survive anything to keep enforcing
                self._logSys.error("bangd-nftables: table=%s flush failed: %r", self._table, exc)
            written = time.monotonic()

    def _write(self) -> None:
        """Bring the kernel up to the model; caller holds _write_lock. A failed delta marks
        the table stale, and a stale table is rebuilt whole (after `nft flush ruleset` the
        table is simply gone and every delta fails)."""
        added, deleted = self._drain()
        if not self._stale:
            adds = _by_shape(added)
            deletes = _by_shape(deleted)
            if not adds and not deletes:
                return
            started = time.monotonic()
            try:
                if self._netlink_writes and adds.keys() <= self._kernel_sets:
                    self._write_elements(adds, deletes)
                else:  # a set to create first, or netlink writes failed before
                    self._run(self._delta_text(adds, deletes), "write")
            except NftError as exc:
                self._logSys.error(
                    "bangd-nftables: table=%s write failed, rebuilding the table: %s",
                    self._table, exc,
                )
                self._stale = True
            else:
                self._kernel_sets.update(adds)
                self._logSys.debug(
                    "bangd-nftables: table=%s wrote added=%d removed=%d took=%.3fs", self._table,
                    sum(map(len, adds.values())), sum(map(len, deletes.values())),
                    time.monotonic() - started,
                )
                return
        self._rebuild()

    def _drain(self) -> tuple[set[Key], set[Key]]:
        """Apply the queued bans and unbans to the model, in order; the keys that are now in
        it and were not (added), and the reverse (deleted). Caller holds _write_lock."""
        events, model = self._events, self._model
        batch = [events.popleft() for _ in range(len(events))]
        if not batch:
            return set(), set()
        if min(batch) >= 0:  # bans only, the usual burst: set operations, no loop in Python
            added = set(batch) - model  # iterates the batch, not the model
            model |= added
            return added, set()
        added, deleted = set(), set()
        for key in batch:
            if key >= 0:
                if key not in model:
                    model.add(key)
                    if key in deleted:
                        deleted.discard(key)
                    else:
                        added.add(key)
            else:
                key = ~key
                if key in model:
                    model.discard(key)
                    if key in added:
                        added.discard(key)
                    else:
                        deleted.add(key)
        return added, deleted

    def _rebuild(self) -> None:
        started = time.monotonic()
        groups: dict[Shape, list[int]] = {shape: [] for shape in _ALWAYS}
        groups.update(_by_shape(self._model))
        lines = [
            f"add table inet {self._table}",
            f"delete table inet {self._table}",
            f"add table inet {self._table}",
            f"add chain inet {self._table} input {{ type filter hook input priority "
            f"{self._priority}; policy accept; }}",
        ]
        for (family, plen), addrs in sorted(groups.items()):
            lines.extend(self._set_lines(family, plen))
            if addrs:
                lines.append(self._element_line("add", family, plen, addrs))
        try:
            self._run("\n".join(lines), "rebuild")
        except NftError as exc:
            self._logSys.error("bangd-nftables: table=%s rebuild failed: %s", self._table, exc)
            return
        self._kernel_sets = set(groups)
        self._stale = False
        self._logSys.info(
            "bangd-nftables: table=%s rebuilt elements=%d sets=%d took=%.3fs", self._table,
            sum(map(len, groups.values())), len(groups), time.monotonic() - started,
        )

    def _delta_text(
        self, adds: dict[Shape, list[int]], deletes: dict[Shape, list[int]]
    ) -> str:
        lines = []
        for family, plen in sorted(adds.keys() - self._kernel_sets):
            lines.extend(self._set_lines(family, plen))
        for (family, plen), addrs in sorted(deletes.items()):
            lines.append(self._element_line("delete", family, plen, addrs))
        for (family, plen), addrs in sorted(adds.items()):
            lines.append(self._element_line("add", family, plen, addrs))
        return "\n".join(lines)

    def _set_lines(self, family: int, plen: int) -> list[str]:
        name = _set_name(family, plen)
        match = f"{_PROTO[family]} saddr"
        if plen != _BITS[family]:
            match += f" & {_ntop(family, _mask(family, plen))}"
        return [
            f"add set inet {self._table} {name} {{ type {_SET_TYPE[family]}; }}",
            f"add rule inet {self._table} input {match} @{name} {self._blocktype}",
        ]

    def _element_line(self, verb: str, family: int, plen: int, addrs: list[int]) -> str:
        af, width, ntop = _AF[family], _BYTES[family], socket.inet_ntop
        elements = ", ".join([ntop(af, addr.to_bytes(width, "big")) for addr in addrs])
        return f"{verb} element inet {self._table} {_set_name(family, plen)} {{ {elements} }}"

    def _write_elements(
        self, adds: dict[Shape, list[int]], deletes: dict[Shape, list[int]]
    ) -> None:
        """Element deltas in one netlink transaction, deletes first, as _delta_text would
        write them: libnftables spends ~2 us of CPU per element parsing and checking the
        text (100k elements: 0.2 s user + 0.1 s kernel), this ~0.1 us (0.01 s + 0.1 s), and
        on a busy machine every CPU second the flusher takes is one fail2ban's restore waits
        for. The kernel's refusals (a table or set gone) raise NftError like nft's; a socket
        that cannot be used at all sends this action back to libnftables for good."""
        messages = [
            message
            for verb, groups in ((_NFT_MSG_DELSETELEM, deletes), (_NFT_MSG_NEWSETELEM, adds))
            for (family, plen), addrs in sorted(groups.items())
            for message in _element_messages(verb, self._table, _set_name(family, plen),
                                             _BYTES[family], addrs)
        ]
        try:
            _send_batch(messages)
        except OSError as exc:
            self._netlink_writes = False
            self._logSys.warning(
                "bangd-nftables: table=%s netlink writes failed (%r); writing through "
                "libnftables from now on", self._table, exc,
            )
            self._run(self._delta_text(adds, deletes), "write")

    def _run(self, text: str, what: str) -> None:
        rc, _, error = self._nft.cmd(text)
        if rc != 0:
            raise NftError(f"nft {what} failed (rc={rc}): {error.strip()[:500]}")

    def _kernel_state(self) -> KernelState | None:
        """The table as the kernel holds it: elements per set, and the sets whose drop rule
        (right match, right verdict) is in an input-hook chain. None: no such table.

        The table's sets, chains and rules come from libnftables, the elements straight from
        netlink (_dump_set). nft 1.0.6 reads every element even for a terse `list table`
        (0.45 s at 100k) but not for a terse `list ruleset`, so the ruleset it is, and only
        this table's items count."""
        rc, out, error = self._nft_json.cmd("list ruleset")
        if rc != 0:
            raise NftError(f"nft list ruleset failed (rc={rc}): {error.strip()[:500]}")
        present = False
        shapes: list[Shape] = []
        input_chains: set[str] = set()
        rules: list[dict[str, Any]] = []
        for item in json.loads(out).get("nftables", []):
            kind, body = next(iter(item.items()))
            if not isinstance(body, dict) or body.get("family") != "inet":
                continue
            if kind == "table":
                present = present or body.get("name") == self._table
            elif body.get("table") != self._table:
                continue
            elif kind == "set":
                shape = _shape_of(body.get("name", ""))
                if shape is not None:
                    shapes.append(shape)
            elif kind == "chain":
                if body.get("hook") == "input" and body.get("type") == "filter":
                    input_chains.add(str(body.get("name", "")))
            elif kind == "rule":
                rules.append(body)
        if not present:
            return None
        elements: dict[Shape, set[Key]] = {}
        for shape in shapes:
            keys = _dump_set(self._table, _set_name(*shape), shape)
            if keys is not None:  # else the set went away since the listing
                elements[shape] = keys
        enforcing = set()
        for rule in rules:
            if rule.get("chain") in input_chains:
                shape = self._rule_shape(rule.get("expr", []))
                if shape is not None:
                    enforcing.add(shape)
        return elements, enforcing

    def _rule_shape(self, expr: list[dict[str, Any]]) -> Shape | None:
        """The (family, prefix length) a rule enforces, if it is exactly one of ours."""
        if len(expr) != 2 or self._blocktype not in expr[1] or "match" not in expr[0]:
            return None
        match = expr[0]["match"]
        right = match.get("right")
        if match.get("op") != "==" or not isinstance(right, str) or not right.startswith("@"):
            return None
        shape = _shape_of(right[1:])
        if shape is None:
            return None
        family, plen = shape
        left = match.get("left")
        payload = {"payload": {"protocol": _PROTO[family], "field": "saddr"}}
        if plen == _BITS[family]:
            expected: object = payload
        else:
            expected = {"&": [payload, _ntop(family, _mask(family, plen))]}
        return shape if left == expected else None


def _by_shape(keys: set[Key]) -> dict[Shape, list[int]]:
    """The keys' addresses, by the set they belong in."""
    if not keys:
        return {}
    if max(keys) <= _ADDR:  # IPv4 addresses only (tail 0), a usual burst: no loop in Python
        return {(4, 32): list(keys)}
    by_tail: dict[int, list[int]] = {}
    for key in keys:
        tail = key >> _ADDR_BITS
        addrs = by_tail.get(tail)
        if addrs is None:
            addrs = by_tail[tail] = []
        addrs.append(key & _ADDR)
    return {_shape(tail): addrs for tail, addrs in by_tail.items()}


# the keys in each of the table's sets; the shapes whose drop rule is in place
KernelState = tuple[dict[Shape, set[Key]], set[Shape]]


def _missing(wanted: Iterable[Key | None], kernel: KernelState | None) -> list[Key | None]:
    """The wanted keys whose element is not in its set, or whose set has no drop rule."""
    if kernel is None:
        return list(wanted)
    elements, enforcing = kernel
    present: set[Key] = set().union(*(elements.get(shape, ()) for shape in enforcing))
    return [key for key in wanted if key not in present]  # None is never present


def _shape_of(name: str) -> Shape | None:
    match = _SET_NAME.fullmatch(name)
    if match is None:
        return None
    family, plen = int(match[1]), int(match[2])
    return (family, plen) if plen <= _BITS[family] else None


# ---- a set's elements, read from the kernel over netlink ---------------------------------
# libnftables lists a table of 100k elements in ~0.45 s, about half of it spent turning each
# element into an expression and printing it; the same netlink dump read here takes ~0.3 s,
# most of it the kernel's own walk of the hash set. Only elements are read this way: the
# table's sets, chains and rules still come from libnftables (terse, without elements).
_NETLINK_NETFILTER = 12
_NFT_MSG_NEWSETELEM = 10 << 8 | 12  # NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM
_NFT_MSG_GETSETELEM = 10 << 8 | 13
_NFT_MSG_DELSETELEM = 10 << 8 | 14
_NFNL_MSG_BATCH_BEGIN = 0x10
_NFNL_MSG_BATCH_END = 0x11
_NFNL_SUBSYS_NFTABLES = 10
_NLM_F_ACK = 0x4
_NLM_F_CREATE = 0x400
_NLA_F_NESTED = 0x8000
_SOL_NETLINK = 270
_NETLINK_CAP_ACK = 10  # acks carry the request's header only, not the whole request
_SO_SNDBUFFORCE = 32
_NLA_MAX = 0xFFFF  # an attribute's length is 16 bits: this many bytes of elements at most
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_NFPROTO_INET = 1
_NLA_TYPE = 0x3FFF  # an attribute's type without the NESTED and NET_BYTEORDER flags
_NFTA_SET_ELEM_LIST_TABLE = 1
_NFTA_SET_ELEM_LIST_SET = 2
_NFTA_SET_ELEM_LIST_ELEMENTS = 3
_NFTA_LIST_ELEM = 1
_NFTA_SET_ELEM_KEY = 1
_NFTA_SET_ELEM_FLAGS = 3
_NFTA_DATA_VALUE = 1
_NFT_SET_ELEM_INTERVAL_END = 1
_DUMP_TIMEOUT = 30.0
_RECV_SIZE = 1 << 17  # the kernel fills at most 32 KiB per message batch


_WORD_IS_4_BYTES = array("I").itemsize == 4


def _nlattr(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + bytes(-length % 4)


def _element_messages(
    verb: int, table: str, name: str, width: int, addrs: list[int]
) -> list[tuple[int, int, bytes]]:
    """NEWSETELEM/DELSETELEM requests (kind, flags, payload) for a set's elements, as many
    as the 16-bit length of the ELEMENTS attribute needs: each element is LIST_ELEM { KEY {
    DATA_VALUE: the address } }."""
    size = 12 + width
    prefix = struct.pack("=HHHHHH", size, _NFTA_LIST_ELEM | _NLA_F_NESTED, 8 + width,
                         _NFTA_SET_ELEM_KEY | _NLA_F_NESTED, 4 + width, _NFTA_DATA_VALUE)
    head = struct.pack("=BBH", _NFPROTO_INET, 0, 0) + _nlattr(
        _NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0"
    ) + _nlattr(_NFTA_SET_ELEM_LIST_SET, name.encode() + b"\0")
    flags = _NLM_F_REQUEST | _NLM_F_ACK | (_NLM_F_CREATE if verb == _NFT_MSG_NEWSETELEM else 0)
    per = (_NLA_MAX - 4) // size
    messages = []
    for start in range(0, len(addrs), per):
        chunk = addrs[start:start + per]
        if width == 4 and _WORD_IS_4_BYTES:
            # IPv4: the elements as 32-bit words, each address in the last word of its
            # element; 12 ns an element instead of 80 for the join below (5,000 addresses)
            words = array("I", prefix + bytes(4)) * len(chunk)
            packed = array("I", chunk)
            if sys.byteorder == "little":
                packed.byteswap()
            words[3::4] = packed
            body = words.tobytes()
        else:
            body = b"".join([prefix + addr.to_bytes(width, "big") for addr in chunk])
        elements = struct.pack("=HH", 4 + len(body),
                               _NFTA_SET_ELEM_LIST_ELEMENTS | _NLA_F_NESTED) + body
        messages.append((verb, flags, head + elements))
    return messages


def _send_batch(messages: list[tuple[int, int, bytes]]) -> None:
    """Send the requests as one nftables transaction (all or nothing) and wait for the
    kernel's ack of each. NftError: the kernel refused one (and so all); OSError: the socket
    itself failed."""
    if not messages:
        return
    batch = struct.pack("=BBH", 0, 0, socket.htons(_NFNL_SUBSYS_NFTABLES))
    parts = [struct.pack("=IHHII", 20, _NFNL_MSG_BATCH_BEGIN, _NLM_F_REQUEST, 1, 0) + batch]
    for seq, (kind, flags, payload) in enumerate(messages, start=2):
        parts.append(struct.pack("=IHHII", 16 + len(payload), kind, flags, seq, 0) + payload)
    parts.append(struct.pack("=IHHII", 20, _NFNL_MSG_BATCH_END, _NLM_F_REQUEST,
                             len(messages) + 2, 0) + batch)
    data = b"".join(parts)
    buf = bytearray(_RECV_SIZE)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER) as sock:
        sock.settimeout(_DUMP_TIMEOUT)
        sock.bind((0, 0))
        sock.setsockopt(_SOL_NETLINK, _NETLINK_CAP_ACK, 1)
        # the whole batch goes in one send (the kernel takes one message as one transaction)
        sock.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, len(data) + 65536)
        sock.send(data)
        waiting = set(range(2, len(messages) + 2))
        while waiting:
            size = sock.recv_into(buf, 0, socket.MSG_TRUNC)
            at = 0
            while at + 16 <= min(size, len(buf)):
                length, kind, _, seq = struct.unpack_from("=IHHI", buf, at)
                if length < 16:
                    raise NftError("netlink write: a malformed reply")
                if kind == _NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", buf, at + 16)
                    if code:
                        raise NftError(f"netlink write refused: {os.strerror(-code)}")
                    waiting.discard(seq)
                at += (length + 3) & ~3


def _dump_set(table: str, name: str, shape: Shape) -> set[Key] | None:
    """The keys in one of the table's sets; None when the kernel has no such set."""
    family, plen = shape
    width, tail = _BYTES[family], _key(family, plen, 0)
    request = struct.pack("=BBH", _NFPROTO_INET, 0, 0) + _nlattr(
        _NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0"
    ) + _nlattr(_NFTA_SET_ELEM_LIST_SET, name.encode() + b"\0")
    found: set[Key] = set()
    buf = bytearray(_RECV_SIZE)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER) as sock:
        sock.settimeout(_DUMP_TIMEOUT)
        sock.bind((0, 0))
        sock.send(struct.pack("=IHHII", 16 + len(request), _NFT_MSG_GETSETELEM,
                              _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0) + request)
        while True:
            size = sock.recv_into(buf, 0, socket.MSG_TRUNC)
            if size > len(buf):
                raise NftError(f"netlink dump of set {name}: a message of {size} bytes")
            at = 0
            while at + 16 <= size:
                length, kind = struct.unpack_from("=IH", buf, at)
                if length < 16 or at + length > size:
                    raise NftError(f"netlink dump of set {name}: a malformed message")
                if kind == _NLMSG_DONE:
                    return found
                if kind == _NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", buf, at + 16)
                    if code == -errno.ENOENT:
                        return None
                    raise NftError(f"netlink dump of set {name} failed: {os.strerror(-code)}")
                if kind == _NFT_MSG_NEWSETELEM:  # its attributes follow the 4-byte nfgenmsg
                    _collect(buf, at + 20, at + length, width, tail, found)
                at += (length + 3) & ~3


def _collect(buf: bytearray, at: int, end: int, width: int, tail: int, found: set[Key]) -> None:
    """Add the key of each element in one NEWSETELEM message's attributes to `found`:
    ELEMENTS { LIST_ELEM { KEY { DATA_VALUE: address }, FLAGS, ... }, ... }."""
    unpack = struct.unpack_from
    while at + 4 <= end:
        length, kind = unpack("=HH", buf, at)
        if length < 4:
            return
        if kind & _NLA_TYPE == _NFTA_SET_ELEM_LIST_ELEMENTS:
            elem, elems_end = at + 4, at + length
            while elem + 4 <= elems_end:
                elem_length = unpack("=H", buf, elem)[0]
                if elem_length < 4:
                    break
                value: bytes | None = None
                flags = 0
                attr, attrs_end = elem + 4, elem + elem_length
                while attr + 4 <= attrs_end:
                    attr_length, attr_kind = unpack("=HH", buf, attr)
                    if attr_length < 4:
                        break
                    attr_kind &= _NLA_TYPE
                    if attr_kind == _NFTA_SET_ELEM_KEY and attr_length == 8 + width:
                        inner_length, inner_kind = unpack("=HH", buf, attr + 4)
                        if inner_kind & _NLA_TYPE == _NFTA_DATA_VALUE and inner_length == 4 + width:
                            value = bytes(buf[attr + 8:attr + 8 + width])
                    elif attr_kind == _NFTA_SET_ELEM_FLAGS and attr_length == 8:
                        flags = unpack("!I", buf, attr + 4)[0]
                    attr += (attr_length + 3) & ~3
                if value is not None and not flags & _NFT_SET_ELEM_INTERVAL_END:
                    found.add(int.from_bytes(value, "big") | tail)
                elem += (elem_length + 3) & ~3
        at += (length + 3) & ~3


def _options(
    jail: str, table: str, priority: str, blocktype: str, flush_delay: str
) -> tuple[str, int, str, float]:
    """Check the jail's options at load time, so a typo fails the jail's start loudly."""
    table = str(table).strip() or table_for_jail(jail)
    if not _TABLE.fullmatch(table):
        raise ValueError(f"bangd-nftables: table={table!r}: use letters, digits, '_', '-'")
    try:
        prio = int(str(priority).strip())
    except ValueError:
        raise ValueError(f"bangd-nftables: priority={priority!r} is not an integer") from None
    if not -1000 <= prio <= 1000:
        raise ValueError(f"bangd-nftables: priority={prio} is outside -1000..1000")
    if blocktype not in ("drop", "reject"):
        raise ValueError(f"bangd-nftables: blocktype={blocktype!r}: use drop or reject")
    try:
        delay = float(str(flush_delay).strip())
    except ValueError:
        raise ValueError(f"bangd-nftables: flush_delay={flush_delay!r} is not a number") from None
    if not 0 <= delay <= 5:
        raise ValueError(f"bangd-nftables: flush_delay={delay} is outside 0..5 seconds")
    return table, prio, blocktype, delay
