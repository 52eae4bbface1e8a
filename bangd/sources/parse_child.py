"""The parser process (`parse_process`): a big download parsed, and compared with what is
applied, away from the daemon.

To it: a frame with the settings (pickled: the daemon's own), a frame with the download.
From it: the findings (JSON). Then, if the import goes ahead, what is applied in frames of
pieces (each in key order, after the one before), ended by an empty frame; and from it
what to add and what to remove, each a frame of lines.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import BinaryIO

from .. import windows
from ..child import read_frame, write_frame, write_pieces
from ..lines import TextLines
from .parse import parse_blocklist


def child_main(request: BinaryIO, answer: BinaryIO) -> None:
    """The child: settings and download in, findings out; then, if the import goes ahead,
    what is applied in, and what to add and to remove out."""
    settings = pickle.loads(_frame(request))
    parsed = parse_blocklist(_frame(request), **settings)
    write_frame(answer, json.dumps(asdict(parsed.findings)).encode("ascii"))
    first = read_frame(request)
    if first is None:  # the daemon ended the input: nothing to compare after all
        return
    # Written as it is found, a window at a time: at a first import all 1M entries are
    # new, and a list of them would be the million strings the parse never made. What is
    # applied is read a piece at a time: whole, as text beside the parse's, it took this
    # process from ~55 to 74 MiB at a refresh (197 as strings).
    to_add: list[bytes] = []
    to_remove: list[bytes] = []
    for fresh, stale in windows.pieces_difference(
        parsed.entries.ordered, _applied_pieces(first, request)
    ):
        to_add.extend(windows.lines_pieces(list(fresh)))
        to_remove.extend(windows.lines_pieces(list(stale)))
    write_pieces(answer, to_add)
    write_pieces(answer, to_remove)


def _applied_pieces(first: bytes, request: BinaryIO) -> Iterator[Sequence[str]]:
    """The pieces of what is applied, up to the empty frame that ends them, each in key
    order (sorted here should a query planner ever join a piece otherwise); a piece that
    does not follow the one before is refused: the comparison would be wrong."""
    frame: bytes | None = first
    last = ""
    while frame:
        piece: Sequence[str] = TextLines.of(frame)
        if not windows.in_key_order(piece):
            piece = sorted(set(piece))
        if piece[0] <= last:
            raise ValueError("the applied entries came in pieces out of key order")
        last = piece[-1]
        yield piece
        frame = read_frame(request)
    if frame is None:
        raise EOFError("the daemon's request ended before the end of what is applied")


def _frame(request: BinaryIO) -> bytes:
    frame = read_frame(request)
    if frame is None:
        raise EOFError("the daemon's request ended early")
    return frame
