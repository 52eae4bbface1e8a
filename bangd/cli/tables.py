"""Plain-text tables and values for people reading `bangctl` on an 80-column terminal."""

from __future__ import annotations

import time
from collections.abc import Sequence


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
    return str(value)


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
