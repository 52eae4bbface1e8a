"""Prometheus text exposition (format 0.0.4) of bangd's state.

Built from the database and the daemon's in-memory state on each request, so the figures
are never stale and there is nothing to keep in sync. `bangctl metrics` prints it; a
systemd timer can write it where node_exporter's textfile collector reads it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


@dataclass
class Metric:
    name: str
    kind: str  # gauge | counter
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> Metric:
        self.samples.append((labels, value))
        return self

    def render(self) -> str:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.samples:
            if labels:
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
                lines.append(f"{self.name}{{{text}}} {_number(value)}")
            else:
                lines.append(f"{self.name} {_number(value)}")
        return "\n".join(lines)


def render(metrics: Iterable[Metric]) -> str:
    return "\n".join(m.render() for m in metrics if m.samples) + "\n"
