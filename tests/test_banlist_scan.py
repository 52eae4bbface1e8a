"""fail2ban's ban list read off the reply's bytes (`banlist_scan`): exactly what unpickling
it gives, for every reply of the shape fail2ban sends, and refused for any other shape, which
the ban list reader process then unpickles as before."""

from __future__ import annotations

import io
import json
import pickle
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bangd.entries import SortedText
from bangd.fail2ban import banned_child
from bangd.fail2ban.banlist_scan import NotScannable, Unframed, scan_bans
from bangd.fail2ban.client import Fail2banClient
from tests.fail2ban_server import PrivateFail2ban, raw_reply


class IPAddr:
    """Pickles as fail2ban's own IPAddr does (fail2ban.server.ipdns): as str(address)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        return (str, (self.text,))


def fail2ban_reply(bans: list[str], protocol: int = pickle.HIGHEST_PROTOCOL) -> bytes:
    return pickle.dumps((0, [IPAddr(ban) for ban in bans]), protocol)


def scanned(reply: bytes) -> list[str]:
    return [ban.decode() for ban in scan_bans(Unframed(io.BytesIO(reply)))]


def framed(ops: bytes, cuts: list[int]) -> bytes:
    """`ops` (PROTO first, no frames) in frames that end at `cuts`, each header exact."""
    out, done = [ops[:2]], 2
    for at in [*cuts, len(ops)]:
        out += [b"\x95" + (at - done).to_bytes(8, "little"), ops[done:at]]
        done = at
    return b"".join(out)


def addresses(count: int) -> list[str]:
    return [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" if i % 3 else f"2001:db8::{i:x}/64"
            for i in range(count)]


@pytest.mark.parametrize("count", [0, 1, 2, 999, 1000, 1001, 2001, 40_000])
def test_a_ban_list_as_fail2ban_pickles_it_is_read_by_the_scan(count: int) -> None:
    """Across pickle's batches of 1000 and its 64 KiB frames (40k bans: a dozen frames)."""
    bans = addresses(count)
    assert scanned(fail2ban_reply(bans)) == bans
    assert scanned(fail2ban_reply(bans, protocol=4)) == bans


@given(st.lists(st.ip_addresses().map(str), max_size=300))
def test_the_scan_reads_what_unpickling_reads(bans: list[str]) -> None:
    reply = fail2ban_reply(bans)
    assert scanned(reply) == pickle.loads(reply)[1]


async def test_fail2bans_own_reply_is_read_by_the_scan(
    fail2ban_server: PrivateFail2ban, fail2ban_jail: str
) -> None:
    """The real fail2ban-server's reply: were its shape ever to change, this fails (the
    reader process would still answer, through the unpickler, with more memory)."""
    bans = ["192.0.2.1", "198.51.100.0/24", "2001:db8::1"]
    f2b = Fail2banClient(fail2ban_server.socket, timeout=5.0)
    try:
        await f2b.ban(fail2ban_jail, bans)
    finally:
        await f2b.close()
    reply = raw_reply(fail2ban_server.socket, ["get", fail2ban_jail, "banned"])
    assert sorted(scanned(reply)) == sorted(bans)


LYING_LENGTH = fail2ban_reply(["192.0.2.1", "192.0.2.2"]).replace(b"\x8c\x091", b"\x8c\x0a1", 1)
SAME_BAN_TWICE = pickle.dumps((0, [IPAddr("192.0.2.1")] * 2), pickle.HIGHEST_PROTOCOL)


@pytest.mark.parametrize("reply", [
    pickle.dumps((0, ["192.0.2.1", "192.0.2.2"]), pickle.HIGHEST_PROTOCOL),  # plain strings
    pickle.dumps((1, ValueError("no")), pickle.HIGHEST_PROTOCOL),  # an error
    fail2ban_reply(["192.0.2.1", "user name"]),  # a ban that is no address's text
    fail2ban_reply(["192.0.2.1"], protocol=2),  # no frames, another protocol
    fail2ban_reply(["192.0.2.1", "192.0.2.2"])[:-5],  # cut short
    LYING_LENGTH, SAME_BAN_TWICE,
], ids=["plain-strings", "error", "not-an-address", "protocol-2", "cut-short",
        "lying-length", "same-ban-twice"])
def test_a_reply_of_any_other_shape_is_not_scanned(reply: bytes) -> None:
    with pytest.raises(NotScannable):
        scanned(reply)


def test_a_pickle_without_its_frames_is_the_same_pickle() -> None:
    reply = fail2ban_reply(addresses(40_000))
    unframed = Unframed(io.BytesIO(reply))
    assert len(unframed.ops) < len(reply)
    assert pickle.loads(unframed.ops) == pickle.loads(reply)


@pytest.mark.parametrize("reply", [fail2ban_reply(addresses(40_000)),
                                   fail2ban_reply(["192.0.2.1"], protocol=2)],
                         ids=["framed", "no-frames"])
def test_the_reply_as_it_came_is_what_is_unpickled_when_not_scanned(reply: bytes) -> None:
    assert Unframed(io.BytesIO(reply)).original() == reply


def test_a_frame_cut_anywhere_is_scanned_only_where_unpickling_reads_the_same() -> None:
    """A frame may end only between two instructions: inside one, the unpickler reads the
    next header as that instruction's argument, and the scan must refuse it."""
    bans = ["192.0.2.1", "198.51.100.0/24", "2001:db8::1"]
    ops = bytes(Unframed(io.BytesIO(fail2ban_reply(bans))).ops)
    accepted = 0
    for cut in range(3, len(ops)):
        reply = framed(ops, [cut])
        try:
            got = scanned(reply)
        except NotScannable:
            continue
        accepted += 1
        assert pickle.loads(reply) == (0, got), cut
    assert accepted >= 3 * 6  # every instruction start of every ban, at least


def test_a_frame_shorter_than_its_header_says_is_not_scanned() -> None:
    ops = bytes(Unframed(io.BytesIO(fail2ban_reply(["192.0.2.1", "192.0.2.2"]))).ops)
    reply = ops[:2] + b"\x95" + (10**6).to_bytes(8, "little") + ops[2:]
    with pytest.raises(NotScannable, match="shorter"):
        scanned(reply)


def reader_answer(
    reply: bytes, asked: list[str], *, held: bool = True, bans: int = 2
) -> list[str]:
    """The ban list reader process's answer, its `child_main` run here on the same bytes
    (`bans`: fail2ban's count of them)."""
    settings = json.dumps({"held": held, "what": "get bl banned", "bans": bans}).encode()
    entries = "".join(entry + "\n" for entry in asked).encode()
    request = io.BytesIO(b"%d\n%s%d\n%s%s" % (len(settings), settings, len(entries), entries,
                                             reply))
    answer = io.BytesIO()
    banned_child.child_main(request, answer)
    head, _, rest = answer.getvalue().partition(b"\n")
    outcome, lines = rest[: int(head)], rest[int(head):].partition(b"\n")[2]
    assert outcome == b"null"
    return lines.decode().splitlines()


@pytest.mark.parametrize("asked", [["192.0.2.2"], ["192.0.2.9", "192.0.2.1", "192.0.2.2"]],
                         ids=["fewer-asked", "more-asked"])
def test_the_reader_answers_alike_for_a_reply_it_scans_and_one_it_unpickles(
    asked: list[str]
) -> None:
    bans = ["192.0.2.1", "192.0.2.2"]
    plain = pickle.dumps((0, bans), pickle.HIGHEST_PROTOCOL)
    for held in (True, False):
        assert reader_answer(fail2ban_reply(bans), asked, held=held) == reader_answer(
            plain, asked, held=held
        )
    assert reader_answer(fail2ban_reply(bans), asked) == [a for a in asked if a in bans]


BANS = addresses(20_000)  # over two of the reader's windows of 8192
NOT_BANNED = [f"172.16.{i >> 8 & 255}.{i & 255}" for i in range(15_000)]


@pytest.mark.parametrize("asked", [
    pytest.param(BANS[::7] + NOT_BANNED[:500], id="fewer-asked-than-banned"),
    pytest.param(sorted(BANS[::2] + NOT_BANNED), id="as-many-asked-in-key-order"),
    pytest.param(random.Random(4).sample(BANS[::2] + NOT_BANNED, 25_000),
                 id="as-many-asked-out-of-order"),
])
def test_the_reader_answers_the_same_however_it_compares(asked: list[str]) -> None:
    """The smaller side is the one kept whole: a set of the entries asked about, or the
    bans sorted as text and compared window by window with entries in key order."""
    banned = set(BANS)
    for reply in (fail2ban_reply(BANS), pickle.dumps((0, BANS), pickle.HIGHEST_PROTOCOL)):
        for held in (True, False):
            assert reader_answer(reply, asked, held=held, bans=len(BANS)) == [
                a for a in asked if (a in banned) is held
            ]


@pytest.mark.parametrize(("asked", "sorted_bans"), [
    pytest.param(BANS[:3000], False, id="a small share asked: a set of them"),
    pytest.param(sorted(BANS[:5000]), True, id="a quarter asked: the bans sorted"),
    pytest.param(sorted(BANS[::2] + NOT_BANNED), True, id="as many asked: the bans sorted"),
])
def test_the_reader_keeps_whole_whichever_side_costs_less_memory(
    asked: list[str], sorted_bans: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A set of the entries asked about costs ~100 bytes each, the bans as sorted text ~18."""
    made: list[SortedText] = []

    class Recorded(SortedText):
        def __init__(self) -> None:
            super().__init__()
            made.append(self)

    monkeypatch.setattr(banned_child, "SortedText", Recorded)
    banned = set(BANS)
    assert reader_answer(fail2ban_reply(BANS), asked, bans=len(BANS)) == [
        a for a in asked if a in banned
    ]
    assert bool(made) is sorted_bans


def test_bans_that_are_no_address_are_never_found_among_the_sorted_bans() -> None:
    """Unpickled, a ban may be any text: one with a newline would be two lines of the
    sorted bans, out of their order; one not ASCII could not be written out."""
    odd = ["zzz\n0.0.0.1", "josé", "", "1.2.3.4\n"]
    bans = BANS + odd
    reply = pickle.dumps((0, bans), pickle.HIGHEST_PROTOCOL)
    asked = sorted(BANS[::2] + NOT_BANNED + ["0.0.0.1", "1.2.3.4"])
    banned = set(BANS)
    for held in (True, False):
        assert reader_answer(reply, asked, held=held, bans=len(bans)) == [
            a for a in asked if (a in banned) is held
        ]
