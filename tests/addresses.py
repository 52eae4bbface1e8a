"""Deterministic public-looking IPv4 addresses for big test lists and benchmarks."""

from __future__ import annotations

import random

# First octets of ranges that are reserved or private in part: avoided wholesale so every
# address survives skip_reserved.
_AVOIDED_FIRST_OCTETS = frozenset({10, 100, 127, 169, 172, 192, 198, 203})


def public_ipv4(count: int, seed: int = 7) -> list[str]:
    """`count` distinct addresses, sorted, the same for the same seed."""
    rng = random.Random(seed)
    seen: set[str] = set()
    while len(seen) < count:
        first = rng.randint(1, 223)
        if first in _AVOIDED_FIRST_OCTETS:
            continue
        seen.add(f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}")
    return sorted(seen)
