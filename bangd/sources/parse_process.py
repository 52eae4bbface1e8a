"""Parse a big download in a child process, so that the daemon's event loop never waits.

In a thread, the parser still shares the daemon's GIL: every time the event loop wakes
(a control client's line, an aiosqlite answer) it waits for the parsing thread to let go,
up to the switch interval, and one `status` wakes it a dozen times. Measured during a
1M-line parse in a thread: status answers of 21-35 ms against 1.5 ms otherwise. A child
process has a GIL of its own; the daemon only turns the child's sorted entries, one line
each, back into strings, a slice at a time between other work (`slices`; ~0.1 s per 1M).

Small downloads are parsed in a thread: starting an interpreter (~0.1 s) costs more than
the few milliseconds of GIL their parse takes.

The child is this module run by the daemon's own interpreter (`python -I`, with the
daemon's copy of bangd first on its path), so both parse with the same code. What it is
sent (settings as a pickle, then the download) is trusted; what it answers is not
unpickled, only read as one JSON header line with the parse's fields and then entries,
one per line, as ASCII.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import signal
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, Final

from .. import slices
from ..config import TEXT_FORMAT, FeedFormat, IPNetwork
from ..errors import BangdError
from .entries import EntrySet
from .parse import ParsedList, parse_blocklist

PROCESS_MIN_BYTES: Final = 1 << 20  # ~70k lines: below this, a thread is cheaper
log = logging.getLogger(__name__)

_PACKAGE_ROOT: Final = str(Path(__file__).resolve().parent.parent.parent)
_BOOT: Final = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from bangd.sources.parse_process import child_main; child_main()"
)


class ParseFailed(BangdError):
    """The parser process died or answered something that is not a parse."""


async def parse_off_loop(
    data: bytes,
    *,
    allowlist: Sequence[IPNetwork] = (),
    skip_reserved: bool = True,
    feed: FeedFormat = TEXT_FORMAT,
    process_min_bytes: int | None = None,
) -> ParsedList:
    """`parse_blocklist` away from the event loop: big downloads in a child process.

    A child that cannot be started (no memory or processes left) is no reason to refuse
    the import: the parse then runs in a thread, as small ones do.
    """
    if process_min_bytes is None:
        process_min_bytes = PROCESS_MIN_BYTES
    if len(data) >= process_min_bytes and sys.executable:
        settings = {"allowlist": tuple(allowlist), "skip_reserved": skip_reserved, "feed": feed}
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-c", _BOOT, _PACKAGE_ROOT,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            log.warning("parser process not started (%s): parsing in a thread instead", exc)
        else:
            head = pickle.dumps(settings, pickle.HIGHEST_PROTOCOL)
            return await _read_answer(await _answer_of(proc, head, data))
    return await asyncio.to_thread(
        parse_blocklist, data, allowlist=allowlist, skip_reserved=skip_reserved, feed=feed
    )


async def _answer_of(proc: asyncio.subprocess.Process, head: bytes, data: bytes) -> bytes:
    """The child's answer to `head` then `data` (written apart: joining them was one 14 MiB
    copy in the loop)."""
    try:
        assert proc.stdin is not None
        proc.stdin.write(head)
        answer, errors = await proc.communicate(data)
    except BaseException:
        # Cancelled (the daemon stops) or the pipe broke: the child must not outlive us.
        if proc.returncode is None:
            proc.kill()
            await asyncio.shield(proc.wait())
        raise
    if proc.returncode != 0:
        raise ParseFailed(f"the parser process {_exit_reason(proc.returncode)}"
                          f"{_last_line(errors)}; nothing applied")
    return answer


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with status {code}"


def _last_line(errors: bytes) -> str:
    lines = errors.decode("utf-8", "replace").strip().splitlines()
    return f": {lines[-1][:200]}" if lines else ""


_HEADER_FIELDS: Final = frozenset(f.name for f in fields(ParsedList)) - {"entries"}


async def _read_answer(answer: bytes) -> ParsedList:
    end = answer.find(b"\n")
    try:
        header: dict[str, Any] = json.loads(answer[:end]) if end >= 0 else {}
        if not isinstance(header, dict) or set(header) != _HEADER_FIELDS:
            raise ValueError("no parse header")
        header["invalid_lines"] = tuple(
            (int(number), str(text)) for number, text in header["invalid_lines"]
        )
        entries = await slices.lines_of(answer, end + 1)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ParseFailed(
            f"the parser process answered garbage ({exc}); nothing applied"
        ) from None
    return ParsedList(entries=EntrySet(entries), **header)


def child_main() -> None:
    """The child: settings and download on stdin, header and sorted entries on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the daemon's to handle
    request = sys.stdin.buffer
    settings = pickle.load(request)
    parsed = parse_blocklist(request.read(), **settings)
    header = {name: getattr(parsed, name) for name in _HEADER_FIELDS}
    out = sys.stdout.buffer
    out.write(json.dumps(header).encode("ascii") + b"\n")
    ordered = parsed.entries.ordered
    for first in range(0, len(ordered), 65_536):
        out.write("".join(f"{entry}\n" for entry in ordered[first : first + 65_536])
                  .encode("ascii"))
    out.flush()
    os._exit(0)  # the entries need no freeing one by one: the process ends here
