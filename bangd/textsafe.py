"""List content made safe to show: in logs, in bangctl's tables and in `--json` strings.

A downloaded list is text a stranger wrote. Echoed raw, an ESC sequence in it can rewrite
the operator's terminal (move the cursor, hide lines, set the window title), a CR or NL can
forge extra log lines, and bidi controls can make a line read differently from what it is.
So every character that is not plainly printable is written as a visible escape
(`\\x1b`, `\\u202e`, `\\t`; `\\\\` for the backslash itself, so the escaping is
unambiguous), and a line that is mostly unprintable (a binary file, a gzip body served as
text) is summarised instead of being dumped.

"Printable" is Python's `str.isprintable`, read from the Unicode database rather than a
list of known culprits (a hand-made one missed U+0600, a format character): controls,
format characters (bidi, zero-width), surrogates (bytes that were not UTF-8, kept by
surrogateescape), private and unassigned code points, and separators but the space.
"""

from __future__ import annotations

from typing import Final

ELLIPSIS: Final = "…"
BINARY_SHARE: Final = 0.3
"""A line with more than this share of unprintable characters is shown as a summary."""

_NAMED: Final = {"\\": "\\\\", "\t": "\\t", "\r": "\\r", "\n": "\\n"}


def _escape(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte surrogateescape could not decode
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def safe_text(text: str, limit: int = 80) -> str:
    """`text` with every unsafe character escaped, cut to at most `limit` characters plus `…`.

    The cut never splits an escape. Only the first `4 * limit` characters are looked at,
    so a huge line costs no more than a short one.
    """
    head = text[: limit * 4]
    unsafe = sum(1 for c in head if not c.isprintable() and c not in _NAMED)
    if head and unsafe > BINARY_SHARE * len(head):
        return (
            f"<binary data: {len(text)} characters, {100 * unsafe // len(head)}% of the "
            "first ones unprintable>"
        )
    pieces: list[str] = []
    size = 0
    for at, piece in enumerate(_pieces(head)):
        if size + len(piece) > limit:
            return "".join(pieces) + ELLIPSIS
        pieces.append(piece)
        size += len(piece)
        if at + 1 == len(head) and len(text) > len(head):
            return "".join(pieces) + ELLIPSIS
    return "".join(pieces)


def _pieces(text: str) -> list[str]:
    """Each character of `text` as it is shown: itself, or its escape."""
    # The backslash too, so that an escape in the output always means an escape.
    return [c if c.isprintable() and c != "\\" else _escape(c) for c in text]
