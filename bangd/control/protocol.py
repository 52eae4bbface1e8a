"""The control protocol's framing: newline-delimited JSON, shared by server and client.

Kept apart from the server so `bangctl` imports no asyncio server code and both ends agree
on one definition of a request, a response and the line limit.

Strict JSON both ways: `NaN`/`Infinity` are refused in requests and never written, because
strict parsers (jq, Go, JavaScript's JSON.parse) reject them; an id is echoed only if it is
a JSON scalar that can be written back unchanged.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_LINE = 64 * 1024  # bytes of one request, its newline not counted


def encode(message: dict[str, Any]) -> bytes:
    return (
        json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
        + b"\n"
    )


def encode_reply(response: dict[str, Any]) -> bytes:
    """A response line, whatever the response holds: text UTF-8 cannot carry (a lone
    surrogate echoed from a request) or a non-finite number becomes an error answer, so the
    client is told instead of losing the connection."""
    try:
        return encode(response)
    except UnicodeEncodeError:
        code, message = "bad_request", "the answer would echo text that is not valid Unicode"
    except (ValueError, TypeError):
        code, message = "internal", "the answer held a value JSON cannot carry"
    request_id = response.get("id")
    if id_problem(request_id) is not None:
        request_id = None
    return encode(error_response(request_id, code, message))


def _no_constants(name: str) -> object:
    raise ValueError(f"not JSON: {name} is not a JSON number")


def decode_request(line: bytes) -> dict[str, Any]:
    """The request object in `line`; ValueError with a one-line reason otherwise."""
    try:
        request = json.loads(line, parse_constant=_no_constants)
    except UnicodeDecodeError as exc:
        raise ValueError(f"not JSON: not UTF-8 at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise ValueError(f"not JSON bangd accepts: {str(exc).splitlines()[0]}") from None
    if not isinstance(request, dict):
        raise ValueError("a request is a JSON object")
    return request


def id_problem(request_id: object) -> str | None:
    """Why `request_id` cannot be echoed, or None when it can."""
    if request_id is None or isinstance(request_id, bool | int):
        return None
    if isinstance(request_id, float):
        return None if math.isfinite(request_id) else "id must be a finite number"
    if isinstance(request_id, str):
        try:
            request_id.encode("utf-8")
        except UnicodeEncodeError:
            return "id is not valid Unicode (a lone surrogate)"
        return None
    return "id must be a JSON scalar: a string, a number, true, false or null"


def ok_response(request_id: object, result: dict[str, Any]) -> dict[str, Any]:
    return {"id": request_id, "ok": True, "result": result}


def error_response(request_id: object, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}
