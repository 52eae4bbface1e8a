"""What is applied, as the store reads it for a comparison: pieces of text."""

from __future__ import annotations

from collections.abc import AsyncIterator


async def applied_text(entries: list[str], piece: int = 700) -> AsyncIterator[bytes]:
    """What is applied as the store reads it: pieces of text in key order, each piece
    after the one before and ended by a newline."""
    ordered = sorted(entries)
    for start in range(0, len(ordered), piece):
        yield "".join(entry + "\n" for entry in ordered[start : start + piece]).encode()


async def pieces(*texts: bytes) -> AsyncIterator[bytes]:
    for text in texts:
        yield text
