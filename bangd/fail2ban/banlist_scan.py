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
it is read here by position, a ban per regular-expression match, with every frame checked
to end between two instructions. Anything else (an error, a ban that is not an address's
text, a frame cut inside an instruction or short of its length, another fail2ban or
Python) is NotScannable, and the caller unpickles the reply as it came, as any reply
(`wire.decode_reply`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import BinaryIO, Final

_HEAD: Final = b"K\x00]\x94"  # code 0, the empty list, memoised as 0
_TAIL: Final = b"\x86\x94."  # (code, list), memoised; STOP
_GLOBAL_STR: Final = b"\x8c\x08builtins\x94\x8c\x03str\x94\x93\x94"  # memo 1, 2; str as 3
# One ban: its length byte, and its text (an address or network: these characters only,
# none of which is an opcode that could follow it). The length byte is checked apart.
_BAN: Final = re.compile(rb"\x8c([\x01-\x2b])([0-9A-Fa-f.:/]+)\x94\x85\x94R\x94")
_NEXT_BAN: Final = re.compile(rb"h\x03" + _BAN.pattern)
_FRAME: Final = 0x95
_NEVER: Final = 1 << 62  # past any cut


class NotScannable(Exception):
    """The reply is not a plain ban list of the one known shape: unpickle it instead."""


class Unframed:
    """A pickle read to its end with its FRAME headers taken out as they came (a frame's
    length says where the next header is), so that the bans are read off one buffer: one
    copy of a 22 MB reply, where reading and joining it held up to four. `cuts` are where
    headers were taken out; the scan accepts a reply only if each falls between two
    instructions, as the pickler puts them (a header inside an instruction would be read by
    the unpickler as that instruction's argument). `original` is the reply as it came."""

    def __init__(self, stream: BinaryIO) -> None:
        ops = bytearray(stream.read(2))  # PROTO
        self.cuts: list[tuple[int, bytes]] = []  # (where in ops, the header taken out)
        self.whole = True  # every frame as long as its header said
        while True:
            head = stream.read(9)
            if len(head) < 9 or head[0] != _FRAME:
                ops += head  # the rest is not framed: as it is
                ops += stream.read()
                break
            self.cuts.append((len(ops), head))
            size = int.from_bytes(head[1:], "little")
            body = stream.read(size)
            ops += body
            if len(body) != size:
                self.whole = False
                break
        self.ops = ops

    def original(self) -> bytes:
        """The reply as it came, headers put back: what is unpickled when it is not scanned."""
        pieces: list[bytes | bytearray | memoryview] = []
        view = memoryview(self.ops)
        done = 0
        for at, head in self.cuts:
            pieces += (view[done:at], head)
            done = at
        pieces.append(view[done:])
        return b"".join(pieces)


def scan_bans(reply: Unframed) -> Iterator[bytes]:
    """Each ban's text, in fail2ban's order. NotScannable (possibly after some bans were
    yielded) where the reply is of another shape: the caller then discards what it read."""
    ops = reply.ops
    if not reply.whole:
        raise NotScannable("a frame is shorter than its header says")
    if bytes(ops[:2]) not in (b"\x80\x04", b"\x80\x05"):
        raise NotScannable("not a protocol 4 or 5 pickle")
    if not ops.startswith(_HEAD, 2) or not ops.endswith(_TAIL):
        raise NotScannable("not a success reply holding a list")
    cuts = _Cuts(at for at, _ in reply.cuts)
    pos, end = 2 + len(_HEAD), len(ops) - len(_TAIL)
    cuts.passed(pos, (2, 4, 5))  # K 0, EMPTY_LIST, MEMOIZE
    if pos != end:
        yield from _bans(ops, pos, end, cuts)
        pos = end
    cuts.passed(len(ops) + 1, (end, end + 1, end + 2, len(ops)))  # TUPLE2, MEMOIZE, STOP


def _bans(ops: bytes | bytearray, pos: int, end: int, cuts: _Cuts) -> Iterator[bytes]:
    batched = ops[pos : pos + 1] == b"("
    if batched:
        cuts.passed(pos + 1, (pos,))
        pos += 1
    if not ops.startswith(_GLOBAL_STR, pos):
        raise NotScannable("the first ban is not str(...)")
    # SHORT_BINUNICODE, MEMOIZE, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL, MEMOIZE
    cuts.passed(pos + len(_GLOBAL_STR), (pos, pos + 10, pos + 11, pos + 16, pos + 17, pos + 18))
    pos += len(_GLOBAL_STR)
    first = _BAN.match(ops, pos)
    if first is None:
        raise NotScannable("the first ban is not an address")
    yield _checked(first, cuts, 0)
    pos = first.end()
    if not batched:
        if ops[pos:end] != b"a":
            raise NotScannable("one ban, not appended")
        cuts.passed(end, (pos,))
        return
    for match in _NEXT_BAN.finditer(ops, pos, end):
        if match.start() != pos:
            # Between two bans only the end of a batch (APPENDS) and the next (MARK).
            if match.start() != pos + 2 or not ops.startswith(b"e(", pos):
                raise NotScannable(f"no ban at offset {pos}")
            cuts.passed(pos + 2, (pos, pos + 1))
        yield _checked(match, cuts, 2)
        pos = match.end()
    if ops[pos:end] != b"e":
        raise NotScannable(f"no ban at offset {pos}")
    cuts.passed(end, (pos,))


class _Cuts:
    """Where frame headers were taken out, checked in order as the scan goes past them."""

    def __init__(self, cuts: Iterable[int]) -> None:
        self._left = sorted(cuts, reverse=True)
        self.next = self._left[-1] if self._left else _NEVER  # the first cut not yet passed

    def passed(self, upto: int, starts: tuple[int, ...]) -> None:
        """Every cut before `upto` must be at one of `starts`, instructions' first bytes."""
        left = self._left
        while left and left[-1] < upto:
            if left[-1] not in starts:
                raise NotScannable(f"a frame ends inside an instruction at offset {left[-1]}")
            left.pop()
        self.next = left[-1] if left else _NEVER


def _checked(match: re.Match[bytes], cuts: _Cuts, text_at: int) -> bytes:
    """The ban's text, its length byte checked, and any frame cut inside it checked."""
    length, text = match.group(1, 2)
    if len(text) != length[0]:
        raise NotScannable(f"a ban's length byte says {length[0]}, its text has {len(text)}")
    start, end = match.start(), match.end()
    if cuts.next < end:
        after = match.end(2)  # MEMOIZE, TUPLE1, MEMOIZE, REDUCE, MEMOIZE
        cuts.passed(end, (start, start + text_at, after, after + 1, after + 2, after + 3,
                          after + 4))
    return text
