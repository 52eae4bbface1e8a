"""Strict checking of a command's `args`, declared once per handler.

A request's `args` come from any client that can reach the socket, and truthiness is a trap:
`bool("false")` is True, so `{"dry_run": "false"}` once ran a real import and
`{"all": "no"}` imported every source. Each handler therefore declares what it accepts with
`@accepts(name=Param, ...)`; the wrapper refuses unknown keys and wrong JSON types with
`invalid_argument` naming the key, fills in defaults, and only then calls the handler.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import ControlError

_JSON_TYPE_NAMES = {
    bool: "a boolean", int: "an integer", float: "a number", str: "a string",
    list: "a list", dict: "an object", type(None): "null",
}


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _refuse(key: str, expected: str, value: object) -> ControlError:
    return ControlError("invalid_argument", f"{key} must be {expected}, got {_json_type(value)}")


@dataclass(frozen=True)
class Flag:
    """A JSON boolean; only `true` and `false` are accepted."""

    default: bool = False

    def check(self, key: str, value: object) -> bool:
        if not isinstance(value, bool):
            raise _refuse(key, "true or false", value)
        return value


@dataclass(frozen=True)
class Int:
    """A JSON integer within [low, high] (booleans and floats are not integers here)."""

    default: int
    low: int
    high: int

    def check(self, key: str, value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _refuse(key, f"an integer from {self.low} to {self.high}", value)
        if not self.low <= value <= self.high:
            raise ControlError(
                "invalid_argument", f"{key} must be from {self.low} to {self.high}, got {value}"
            )
        return value


@dataclass(frozen=True)
class Text:
    """A JSON string (a name, an address); optional unless `required`."""

    required: bool = False
    max_length: int = 1024

    @property
    def default(self) -> str | None:
        return None

    def check(self, key: str, value: object) -> str | None:
        if value is None and not self.required:
            return None
        if not isinstance(value, str):
            raise _refuse(key, "a string", value)
        if len(value) > self.max_length:
            raise ControlError(
                "invalid_argument", f"{key} is longer than {self.max_length} characters"
            )
        return value


@dataclass(frozen=True)
class Texts:
    """A JSON list of strings."""

    max_items: int = 1024
    max_length: int = 1024

    @property
    def default(self) -> list[str]:
        return []

    def check(self, key: str, value: object) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _refuse(key, "a list of strings", value)
        if len(value) > self.max_items:
            raise ControlError(
                "invalid_argument", f"{key} has {len(value)} items; at most {self.max_items}"
            )
        if any(len(v) > self.max_length for v in value):
            raise ControlError(
                "invalid_argument", f"{key} has an item longer than {self.max_length} characters"
            )
        return list(value)


Param = Flag | Int | Text | Texts


def check_args(spec: Mapping[str, Param], args: object) -> dict[str, Any]:
    """`args` checked against `spec`, with every declared key present (defaults filled)."""
    if not isinstance(args, dict):
        raise ControlError("invalid_argument", f"args must be an object, got {_json_type(args)}")
    unknown = sorted(set(args) - set(spec))
    if unknown:
        accepted = ", ".join(sorted(spec)) or "none"
        raise ControlError(
            "invalid_argument",
            f"unknown argument {unknown[0]!r}; this command accepts: {accepted}",
        )
    checked: dict[str, Any] = {}
    for key, param in spec.items():
        if key not in args and getattr(param, "required", False):
            raise ControlError("invalid_argument", f"{key} is required")
        checked[key] = param.check(key, args[key]) if key in args else param.default
    return checked


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[dict[str, Any]]])


def accepts(**spec: Param) -> Callable[[Handler], Handler]:
    """Declare a handler's arguments; the handler then sees only checked ones."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def checked(*call: Any) -> dict[str, Any]:
            *head, args, peer = call  # bound methods carry `self` first
            return await handler(*head, check_args(spec, args), peer)

        checked.params = dict(spec)  # type: ignore[attr-defined]
        return checked  # type: ignore[return-value]

    return decorate
