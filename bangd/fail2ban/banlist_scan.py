"""fail2ban's reply to `get JAIL banned`, read as the bytes of each ban, without unpickling.

Unpickled, a million bans are a million strings, and the unpickler's memo keeps as many
one-item tuples alive until it is done: fail2ban pickles each ban as `str(address)`
(IPAddr.__reduce__). The ban list reader process peaked at 214 MiB to read 1M of them.
Yet the reply has one exact shape, the one Python's pickler gives that list:

    PROTO 4|5, FRAMEs (each one's length leads to the next), and in them:
    BININT1 0, EMPTY_LIST, MEMOIZE,
      (no bans)      TUPLE2 MEMOIZE STOP
      (one ban)      GLOBAL_STR BAN APPEND TUPLE2 MEMOIZE STOP
      (more)         MARK GLOBAL_STR BAN (BINGET 3 BAN)* APPENDS
                     (MARK (BINGET 3 BAN)+ APPENDS)* TUPLE2 MEMOIZE STOP
    GLOBAL_STR:      "builtins" MEMOIZE "str" MEMOIZE STACK_GLOBAL MEMOIZE (memo 3: str)
    BAN:             SHORT_BINUNICODE address MEMOIZE TUPLE1 MEMOIZE REDUCE MEMOIZE

A reply of exactly that shape means (0, [str(a) for each address a]) and nothing else, so
it is read here by position, a ban per regular-expression match. Anything else (an error,
a ban that is not an address's text, another fail2ban or Python) is NotScannable, and the
caller unpickles it as any reply (`wire.decode_reply`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO, Final

_HEAD: Final = b"K\x00]\x94"  # code 0, the empty list, memoised as 0
_TAIL: Final = b"\x86\x94."  # (code, list), memoised; STOP
_GLOBAL_STR: Final = b"\x8c\x08builtins\x94\x8c\x03str\x94\x93\x94"  # memo 1, 2; str as 3
# One ban: its length byte, and its text (an address or network: these characters only,
# none of which is an opcode that could follow it). The length byte is checked apart.
_BAN: Final = re.compile(rb"\x8c([\x01-\x2b])([0-9A-Fa-f.:/]+)\x94\x85\x94R\x94")
_NEXT_BAN: Final = re.compile(rb"h\x03" + _BAN.pattern)
_FRAME: Final = 0x95


class NotScannable(Exception):
    """The reply is not a plain ban list of the one known shape: unpickle it instead."""


def read_unframed(stream: BinaryIO) -> bytearray:
    """A pickle read to the end of `stream`, its FRAME headers taken out as they come (a
    frame's length says where the next header is): the same pickle, without frames, and
    one copy of it only (a 22 MB reply was in memory up to four times, read and joined)."""
    ops = bytearray(stream.read(2))  # PROTO
    while True:
        head = stream.read(9)
        if len(head) < 9 or head[0] != _FRAME:
            ops += head  # the rest is not framed: as it is
            ops += stream.read()
            return ops
        ops += stream.read(int.from_bytes(head[1:], "little"))


def scan_bans(ops: bytes | bytearray) -> Iterator[bytes]:
    """Each ban's text in a reply without frames (`read_unframed`), in fail2ban's order.
    NotScannable (possibly after some bans were yielded) where the reply is of another
    shape: the caller then discards what it read."""
    if ops[:2] not in (b"\x80\x04", b"\x80\x05"):
        raise NotScannable("not a protocol 4 or 5 pickle")
    if not ops.startswith(_HEAD, 2) or not ops.endswith(_TAIL):
        raise NotScannable("not a success reply holding a list")
    pos, end = 2 + len(_HEAD), len(ops) - len(_TAIL)
    if pos == end:
        return
    batched = ops[pos : pos + 1] == b"("
    pos += batched
    if not ops.startswith(_GLOBAL_STR, pos):
        raise NotScannable("the first ban is not str(...)")
    pos += len(_GLOBAL_STR)
    first = _BAN.match(ops, pos)
    if first is None:
        raise NotScannable("the first ban is not an address")
    yield _checked(first)
    pos = first.end()
    if not batched:
        if ops[pos : end] != b"a":
            raise NotScannable("one ban, not appended")
        return
    for match in _NEXT_BAN.finditer(ops, pos, end):
        # Between two bans only the end of a batch (APPENDS) and the next (MARK).
        if match.start() != pos and not (match.start() == pos + 2
                                         and ops.startswith(b"e(", pos)):
            raise NotScannable(f"no ban at offset {pos}")
        yield _checked(match)
        pos = match.end()
    if ops[pos:end] != b"e":
        raise NotScannable(f"no ban at offset {pos}")


def _checked(match: re.Match[bytes]) -> bytes:
    length, text = match.group(1, 2)
    if len(text) != length[0]:
        raise NotScannable(f"a ban's length byte says {length[0]}, its text has {len(text)}")
    return text
