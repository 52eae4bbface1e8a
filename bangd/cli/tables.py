"""Plain-text tables and values for people reading `bangctl` on an 80-column terminal."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    return safe(value)


def safe(text: object) -> str:
    """`text` with every character a terminal would act on or not show written as a
    Python-style escape (ESC as `\\x1b`, a newline as `\\n`, U+202E as `\\u202e`).

    Source names, errors and invalid-line samples come from lists anyone may publish: raw,
    they could move the cursor, rewrite earlier lines, retitle the window or reorder what
    follows. Printable text, spaces included, passes unchanged; a backslash is kept as it is.
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def safe_tree(value: Any) -> Any:
    """`value` (a decoded JSON answer) with `safe` applied to every string in it, keys
    included, so no formatter can print a raw daemon string by forgetting to escape it."""
    if isinstance(value, str):
        return safe(value)
    if isinstance(value, dict):
        return {safe(k): safe_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [safe_tree(v) for v in value]
    return value


def duration(seconds: float | None) -> str:
    """Compact human duration: 45s, 12m, 6h, 2d3h."""
    if seconds is None:
        return "-"
    s = round(abs(seconds))
    if s < 60:
        text = f"{s}s"
    elif s < 3600:
        text = f"{s // 60}m{s % 60:02d}s" if s % 60 and s < 600 else f"{s // 60}m"
    elif s < 86400:
        text = f"{s // 3600}h{(s % 3600) // 60:02d}m" if s % 3600 >= 60 else f"{s // 3600}h"
    else:
        text = f"{s // 86400}d{(s % 86400) // 3600}h" if s % 86400 >= 3600 else f"{s // 86400}d"
    return text


def ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "never"
    delta = (now if now is not None else time.time()) - ts
    return f"{duration(delta)} ago" if delta >= 0 else f"in {duration(-delta)}"


def when(ts: float | None, now: float | None = None) -> str:
    """A moment relative to now, future or past."""
    if ts is None:
        return "-"
    delta = ts - (now if now is not None else time.time())
    if abs(delta) < 1:
        return "now"
    return f"in {duration(delta)}" if delta > 0 else f"{duration(-delta)} ago"
