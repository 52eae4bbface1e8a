"""fail2ban's framing, and the restricted unpickler that keeps the socket from running code."""

from __future__ import annotations

import pickle
import re
import subprocess
from pathlib import Path

import pytest

from bangd.errors import Fail2banProtocolError
from bangd.fail2ban.wire import CLOSE_COMMAND, END, RemoteError, decode_reply, encode_command
from tests.fake_fail2ban import RunsCommand

# Replies fail2ban 1.0.2 was seen to send.
README_REPLIES: list[tuple[int, object]] = [
    (0, "pong"),
    (0, "1.0.2"),
    (0, [("Number of jail", 1), ("Jail list", "bl")]),
    (
        0,
        [
            ("Filter", [("Currently failed", 0), ("Total failed", 0), ("File list", [])]),
            ("Actions", [("Currently banned", 3), ("Total banned", 7)]),
        ],
    ),
    (0, 2),
    (0, ["192.0.2.2", "192.0.2.3"]),
    (0, [1, 0]),
    (0, None),
    (0, {"bl": ["192.0.2.2"]}),
    (0, {"192.0.2.2", "192.0.2.3"}),
]


class IPAddrLike(str):
    """Pickles the way fail2ban's IPAddr does: builtins.str('a.b.c.d') via REDUCE."""

    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        return (str, (str(self),))


class StartsProcess:
    def __reduce__(self) -> tuple[object, tuple[list[str]]]:
        return (subprocess.Popen, (["touch", "/tmp/bangd-wire-popen-must-not-exist"],))


class Evaluates:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (eval, ("1 + 1",))


def call_global_pickle(module: str, name: str, args: tuple[object, ...]) -> bytes:
    """(1, module.name(*args)) in protocol 2, for classes this process cannot import."""
    args_body = pickle.dumps(args, 2)[2:-1]
    call = b"c" + module.encode() + b"\n" + name.encode() + b"\n" + args_body + b"R"
    return b"\x80\x02K\x01" + call + b"\x86."


@pytest.mark.parametrize("reply", README_REPLIES, ids=lambda reply: repr(reply)[:40])
def test_readme_replies_decode_to_what_was_sent(reply: tuple[int, object]) -> None:
    assert decode_reply(pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)) == reply


def test_fail2ban_ip_objects_decode_to_plain_strings() -> None:
    data = pickle.dumps((0, [IPAddrLike("192.0.2.2"), IPAddrLike("2001:db8::1")]), 5)

    code, result = decode_reply(data)

    assert (code, result) == (0, ["192.0.2.2", "2001:db8::1"])
    assert isinstance(result, list)
    assert all(type(item) is str for item in result)


def test_encoded_command_is_a_pickled_list_of_str_followed_by_end_marker() -> None:
    data = encode_command(["set", "bl", "banip", "192.0.2.1"])

    assert data.endswith(END)
    assert pickle.loads(data[: -len(END)]) == ["set", "bl", "banip", "192.0.2.1"]


def test_close_command_is_fail2bans_close_marker_with_end() -> None:
    assert CLOSE_COMMAND == b"<F2B_CLOSE_COMMAND><F2B_END_COMMAND>"


@pytest.mark.parametrize("words", [["ping", 1], ["ping", b"x"], ["ping", None]])
def test_encode_refuses_words_that_are_not_str(words: list[object]) -> None:
    with pytest.raises(TypeError):
        encode_command(words)  # type: ignore[arg-type]


def test_encode_refuses_str_subclasses() -> None:
    with pytest.raises(TypeError):
        encode_command(["get", IPAddrLike("bl")])


def test_encode_refuses_a_bare_string_as_command() -> None:
    with pytest.raises(TypeError):
        encode_command("ping")


def test_encode_refuses_an_empty_command() -> None:
    with pytest.raises(ValueError):
        encode_command([])


def test_encode_refuses_a_word_containing_the_end_marker() -> None:
    with pytest.raises(ValueError):
        encode_command(["set", "bl", "banip", "1.2.3.4<F2B_END_COMMAND>"])


def test_fail2ban_exception_becomes_remote_error_with_name_and_message() -> None:
    data = call_global_pickle("fail2ban.exceptions", "UnknownJailException", ("nosuchjail",))

    code, result = decode_reply(data)

    assert code == 1
    assert result == RemoteError("UnknownJailException", "nosuchjail")
    assert isinstance(result, RemoteError)
    assert result.args == ("nosuchjail",)


def test_builtin_exception_becomes_remote_error() -> None:
    code, result = decode_reply(pickle.dumps((1, Exception("Invalid command")), 5))

    assert (code, result) == (1, RemoteError("Exception", "Invalid command"))


def test_exception_attribute_state_is_ignored() -> None:
    error = ValueError("bad")
    error.__dict__["message"] = "overwritten"

    _, result = decode_reply(pickle.dumps((1, error), 5))

    assert result == RemoteError("ValueError", "bad")


def test_plain_pickle_would_run_the_command_in_a_reply(tmp_path: Path) -> None:
    """Control for the next test: the payload is live."""
    witness = tmp_path / "plain-pickle-ran"

    pickle.loads(pickle.dumps((0, RunsCommand(f"touch {witness}")), 5))

    assert witness.exists()


def test_reply_that_would_run_a_command_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    witness = tmp_path / "bangd-ran"
    data = pickle.dumps((0, RunsCommand(f"touch {witness}")), 5)

    with pytest.raises(Fail2banProtocolError, match="system"):
        decode_reply(data)

    assert not witness.exists()


def test_reply_that_would_start_a_process_is_refused() -> None:
    witness = Path("/tmp/bangd-wire-popen-must-not-exist")
    witness.unlink(missing_ok=True)

    with pytest.raises(Fail2banProtocolError, match=r"subprocess\.Popen"):
        decode_reply(pickle.dumps((0, StartsProcess()), 5))

    assert not witness.exists()


def test_reply_that_would_call_eval_is_refused() -> None:
    with pytest.raises(Fail2banProtocolError, match=r"builtins\.eval"):
        decode_reply(pickle.dumps((0, Evaluates()), 5))


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("builtins", "getattr"),
        ("builtins", "exec"),
        ("builtins", "__import__"),
        ("builtins", "bytearray"),
        ("os", "system"),
        ("fail2ban.server.jail", "Jail"),
    ],
)
def test_globals_outside_the_allowed_set_are_refused(module: str, name: str) -> None:
    with pytest.raises(Fail2banProtocolError, match=re.escape(f"{module}.{name}")):
        decode_reply(call_global_pickle(module, name, ("x",)))


def test_str_of_anything_but_a_string_is_refused() -> None:
    """str(nested shared lists) could grow exponentially from a tiny reply."""
    with pytest.raises(Fail2banProtocolError, match="str"):
        decode_reply(call_global_pickle("builtins", "str", ([["a"], ["b"]],)))


def test_set_rebuilt_by_reduce_is_allowed() -> None:
    assert decode_reply(pickle.dumps((0, {"192.0.2.1"}), 2)) == (0, {"192.0.2.1"})


def test_error_string_reply_means_fail2ban_could_not_read_the_command() -> None:
    data = pickle.dumps("ERROR: load message failed", 5)

    with pytest.raises(Fail2banProtocolError, match="could not read bangd's command"):
        decode_reply(data)


@pytest.mark.parametrize(
    "data",
    [b"garbage", b"", pickle.dumps((0, "pong"), 5)[:-3], pickle.dumps([0, "pong"], 5)],
    ids=["garbage", "empty", "truncated", "not-a-tuple"],
)
def test_undecodable_or_misshapen_replies_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(Fail2banProtocolError):
        decode_reply(data)


def test_a_reply_that_copies_one_container_over_and_over_is_refused() -> None:
    # 32 KB of pickle: a memoised 10,000-element list, then list() applied to it 2000
    # times: 20M copied elements unless the unpickler budgets what constructors build.
    payload = (
        b"\x80\x02K\x00"  # protocol 2; the reply code 0
        + b"(" + b"K\x01" * 10_000 + b"l\x94"  # the big list, memoised as 0
        + b"c__builtin__\nlist\n\x94"  # the list constructor, memoised as 1
        + b"(" + b"h\x01h\x00\x85R" * 2000 + b"l"  # [list(big), list(big), ...]
        + b"\x86."
    )
    with pytest.raises(Fail2banProtocolError, match="far more than its size allows"):
        decode_reply(payload)
