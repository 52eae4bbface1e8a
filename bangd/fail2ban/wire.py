"""fail2ban's socket framing, and the only place pickle appears in bangd.

fail2ban speaks pickle both ways. Sending is harmless (a list of plain strings), but
unpickling a reply trusts whoever controls the socket to not run code in bangd. Replies
are therefore read with an unpickler that resolves no real globals at all: the few
container types a reply legitimately uses are rebuilt from a fixed table, and exception
classes become inert `RemoteError` values. Anything else is refused before it exists.
"""

from __future__ import annotations

import builtins
import io
import pickle
import re
import reprlib
from collections.abc import Callable, Sequence, Sized
from typing import Any, Final

from bangd.errors import Fail2banProtocolError

END: Final = b"<F2B_END_COMMAND>"
CLOSE_COMMAND: Final = b"<F2B_CLOSE_COMMAND>" + END


def _plain_str(value: object = "") -> str:
    """fail2ban's IPAddr (a str subclass) pickles as builtins.str(plain_str); allowing str()
    of anything else would let a small reply expand exponentially (shared nested lists)."""
    if type(value) is not str:
        raise Fail2banProtocolError(
            f"fail2ban's reply calls str() on {type(value).__name__}, which bangd refuses"
        )
    return value


# REDUCE calls whatever find_class returned with arguments taken from the reply, so only
# constructors whose cost is bounded by the reply's own size are listed (no bytes(10**12)).
_ALLOWED_BUILTINS: Final[dict[str, Callable[..., object]]] = {
    "str": _plain_str,
    "set": set,
    "frozenset": frozenset,
    "list": list,
    "tuple": tuple,
    "dict": dict,
}

# Without importing a module we cannot know what a name in it is; an exception-shaped
# name is safe to accept because it only ever becomes an inert RemoteError.
_EXCEPTION_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:Exception|Error|Warning)")
_MODULE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_MAX_MESSAGE: Final = 1000
_BUDGET_PER_BYTE: Final = 4  # elements container constructors may copy per reply byte
_BUDGET_BASE: Final = 1024
_SHORT_REPR: Final = reprlib.Repr()


class RemoteError:
    """Stand-in for an exception fail2ban raised: its class name and message, nothing more.

    Pickle rebuilds exceptions as `cls(*args)` then optionally BUILD(state); this class
    accepts both without running anything the reply chose.
    """

    __slots__ = ("args", "message", "name")

    def __init__(self, name: str, message: str, args: tuple[object, ...] = ()) -> None:
        self.name = name
        self.message = message
        self.args = args

    @classmethod
    def from_pickle(cls, qualified_name: str, *args: object) -> RemoteError:
        """Build from the constructor arguments a pickled exception carries."""
        message = ", ".join(_bounded_text(arg) for arg in args)
        return cls(qualified_name.rsplit(".", 1)[-1], message, tuple(args))

    def __setstate__(self, state: object) -> None:
        """Ignore pickled attribute state: nothing in it is needed, and applying it could
        overwrite attributes with arbitrary values."""

    def __repr__(self) -> str:
        return f"RemoteError({self.name!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RemoteError):
            return NotImplemented
        return (self.name, self.message) == (other.name, other.message)

    def __hash__(self) -> int:
        return hash((self.name, self.message))


def _bounded_text(value: object) -> str:
    """Text of an exception argument; reprlib caps nesting so shared structures stay small."""
    if type(value) is str:
        return value[:_MAX_MESSAGE]
    return _SHORT_REPR.repr(value)[:_MAX_MESSAGE]


def _is_builtin_exception(name: str) -> bool:
    candidate = getattr(builtins, name, None)
    return isinstance(candidate, type) and issubclass(candidate, BaseException)


def _remote_error_factory(qualified_name: str) -> Callable[..., RemoteError]:
    def build(*args: object) -> RemoteError:
        return RemoteError.from_pickle(qualified_name, *args)

    return build


class _ReplyUnpickler(pickle.Unpickler):
    """Resolves globals from a fixed table only; never imports, never looks up attributes.

    Container constructors draw on a budget proportional to the reply's size: calling
    list() again and again on one memoised list would otherwise turn a few KB of reply
    into gigabytes of copies.
    """

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self._budget = _BUDGET_PER_BYTE * len(data) + _BUDGET_BASE

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 2 pickles made by Python 3 still name the module by its Python 2 name.
        module = "builtins" if module == "__builtin__" else module
        if module == "builtins" and name in _ALLOWED_BUILTINS:
            return self._budgeted(_ALLOWED_BUILTINS[name])
        if module == "builtins" and _is_builtin_exception(name):
            return _remote_error_factory(name)
        if (
            module != "builtins"
            and _MODULE_NAME.fullmatch(module)
            and _EXCEPTION_NAME.fullmatch(name)
        ):
            return _remote_error_factory(f"{module}.{name}")
        raise Fail2banProtocolError(
            f"fail2ban's reply asks for {module}.{name}, which bangd never unpickles: "
            "check who owns the fail2ban socket"
        )

    def _budgeted(self, build: Callable[..., object]) -> Callable[..., object]:
        def charged(*args: object) -> object:
            for arg in args:
                self._budget -= len(arg) if isinstance(arg, Sized) else 1
            if self._budget < 0:
                raise Fail2banProtocolError(
                    "fail2ban's reply builds far more than its size allows; refused"
                )
            return build(*args)

        return charged

    def persistent_load(self, pid: Any) -> Any:
        raise Fail2banProtocolError("fail2ban's reply uses persistent ids, which bangd refuses")


def encode_command(cmd: Sequence[str]) -> bytes:
    """Frame one command; fail2ban splits requests on END, so it must not occur inside."""
    if isinstance(cmd, str | bytes) or not isinstance(cmd, Sequence):
        raise TypeError(f"a fail2ban command is a list of str, not {type(cmd).__name__}")
    words = list(cmd)
    if not words:
        raise ValueError("a fail2ban command needs at least one word")
    for word in words:
        if type(word) is not str:
            raise TypeError(
                f"fail2ban command words must be plain str, got {type(word).__name__}: {word!r}"
            )
    payload = pickle.dumps(words, pickle.HIGHEST_PROTOCOL)
    if END in payload:
        raise ValueError(f"fail2ban command {words[:4]!r} would contain the end-of-command marker")
    return payload + END


def decode_reply(data: bytes) -> tuple[int, object]:
    """Decode one reply (without END) into (code, result); 1 means result is a RemoteError."""
    try:
        reply = _ReplyUnpickler(data).load()
    except Fail2banProtocolError:
        raise
    except Exception as exc:
        raise Fail2banProtocolError(
            f"fail2ban's reply ({len(data)} bytes) cannot be decoded: {exc!r}; "
            "is the socket really fail2ban's?"
        ) from exc
    if isinstance(reply, str):
        raise Fail2banProtocolError(f"fail2ban could not read bangd's command: {reply[:200]}")
    if not isinstance(reply, tuple) or len(reply) != 2 or type(reply[0]) is not int:
        raise Fail2banProtocolError(
            f"fail2ban's reply is not (code, result): {type(reply).__name__}; "
            "is the socket really fail2ban's?"
        )
    return reply[0], reply[1]
