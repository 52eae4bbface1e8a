"""Every command's args are checked strictly: JSON types, ranges, no unknown keys."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bangd.app import App
from bangd.commands import Commands
from bangd.control.args import Flag, Int, Param, Text, Texts, check_args
from bangd.control.protocol import decode_request, encode_reply, id_problem
from bangd.control.server import Peer
from bangd.errors import ControlError

PEER = Peer(1, 0, 0)
SPEC: dict[str, Param] = {
    "force": Flag(), "limit": Int(default=20, low=1, high=100), "jail": Text(),
    "sources": Texts(max_items=3),
}


async def no_reload() -> dict[str, Any]:
    raise AssertionError("a refused request reached the handler")


def handlers() -> dict[str, Any]:
    # The checks run before a handler body touches the App, so none is needed.
    return Commands(cast(App, None), reload=no_reload).handlers()


def test_defaults_fill_every_declared_key() -> None:
    assert check_args(SPEC, {}) == {"force": False, "limit": 20, "jail": None, "sources": []}


@pytest.mark.parametrize("value", ["false", "no", 0, 1, None, [], {}])
def test_a_flag_takes_only_json_booleans(value: object) -> None:
    with pytest.raises(ControlError) as err:
        check_args(SPEC, {"force": value})
    assert err.value.code == "invalid_argument"
    assert err.value.message.startswith("force must be true or false")


@pytest.mark.parametrize("value", [True, 2.0, "5", 0, 101])
def test_an_integer_is_a_json_integer_within_its_range(value: object) -> None:
    with pytest.raises(ControlError, match=r"^invalid_argument: limit must be"):
        check_args(SPEC, {"limit": value})


def test_an_unknown_key_is_named_with_the_accepted_ones() -> None:
    with pytest.raises(ControlError) as err:
        check_args(SPEC, {"forse": True})
    assert err.value.message == (
        "unknown argument 'forse'; this command accepts: force, jail, limit, sources"
    )


def test_a_list_of_strings_is_bounded() -> None:
    with pytest.raises(ControlError, match="at most 3"):
        check_args(SPEC, {"sources": ["a", "b", "c", "d"]})
    with pytest.raises(ControlError, match="a list of strings"):
        check_args(SPEC, {"sources": "a"})


def test_every_command_declares_its_arguments() -> None:
    for name, handler in handlers().items():
        assert hasattr(handler, "params"), f"{name} does not declare its arguments"


@pytest.mark.parametrize(
    ("command", "args"),
    [("import", {"sources": ["a"], "force": "no"}),
     ("import", {"sources": ["a"], "dry_run": "false"}),
     ("import", {"all": "false"}),
     ("import", {"sources": ["a"], "bogus": 1}),
     ("cache_cleanup", {"dry_run": "false"}),
     ("runs", {"limit": "5"}),
     ("reconcile", {"jail": 3}),
     ("lookup", {"ips": "1.2.3.4"}),
     ("status", {"verbose": True})],
)
async def test_commands_refuse_wrong_arguments_before_acting(
    command: str, args: dict[str, Any]
) -> None:
    with pytest.raises(ControlError) as err:
        await handlers()[command](args, PEER)
    assert err.value.code == "invalid_argument"


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*SPEC, "x", "force "]), json_values, max_size=5))
def test_check_args_either_accepts_typed_values_or_refuses_with_invalid_argument(
    args: dict[str, Any],
) -> None:
    try:
        checked = check_args(SPEC, args)
    except ControlError as exc:
        assert exc.code == "invalid_argument"
        return
    assert isinstance(checked["force"], bool)
    assert type(checked["limit"]) is int
    assert checked["jail"] is None or isinstance(checked["jail"], str)
    assert all(isinstance(s, str) for s in checked["sources"])


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200) | st.builds(
    lambda v: json.dumps({"id": v, "command": "status"}, allow_nan=True).encode(), json_values
))
def test_any_request_line_decodes_or_is_refused_with_one_line_and_any_reply_encodes(
    line: bytes,
) -> None:
    try:
        request = decode_request(line)
    except ValueError as exc:
        assert "\n" not in str(exc)
        return
    request_id = request.get("id")
    reply = {"id": request_id if id_problem(request_id) is None else None, "ok": True,
             "result": {"echo": request}}
    out = encode_reply(reply)
    assert out.endswith(b"\n") and out.count(b"\n") == 1
    json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} written"))
