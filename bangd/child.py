"""The child's side of a child process (`children`): its main, and its frames in and out.

A child imports only what its work needs: never asyncio or anything of the daemon's event
loop (asyncio alone is 5 MiB of a child's resident memory, a tenth of its start time).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import traceback
from collections.abc import Iterable
from typing import BinaryIO, Final

HEAD_MAX: Final = 20  # digits of a frame's length, and its newline


def read_frame(stream: BinaryIO) -> bytes | None:
    """The next frame, or None where the daemon ended its input."""
    head = stream.readline(HEAD_MAX)
    if not head:
        return None
    payload = stream.read(int(head))
    if len(payload) != int(head):
        raise EOFError("the daemon's frame ended early")
    return payload


def write_frame(stream: BinaryIO, payload: bytes) -> None:
    write_pieces(stream, (payload,))


def write_pieces(stream: BinaryIO, pieces: Iterable[bytes]) -> None:
    """One frame, made of these pieces (never joined into one copy)."""
    pieces = list(pieces)
    stream.write(b"%d\n" % sum(map(len, pieces)))
    for piece in pieces:
        stream.write(piece)
    stream.flush()


def serve(module: str) -> None:
    """The child's main: run `module.child_main` on stdin and stdout, then end at once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the daemon's to handle
    try:
        importlib.import_module(module).child_main(sys.stdin.buffer, sys.stdout.buffer)
        sys.stdout.flush()
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    os._exit(0)  # a million strings need no freeing one by one: the process ends here
