"""The control protocol's framing: newline-delimited JSON, shared by server and client.

Kept apart from the server so `bangctl` imports no asyncio server code and both ends agree
on one definition of a request, a response and the line limit.
"""

from __future__ import annotations

import json
from typing import Any

MAX_LINE = 64 * 1024


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def ok_response(request_id: object, result: dict[str, Any]) -> dict[str, Any]:
    return {"id": request_id, "ok": True, "result": result}


def error_response(request_id: object, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}
