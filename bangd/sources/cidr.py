"""The exact, minimal set of CIDR blocks covering an address range, in integers.

PeerGuardian lists and DShield's block list give `first-last` ranges; fail2ban takes
addresses and CIDRs. Expanding a range into its addresses is hopeless (a /8 is 16M bans),
so a range becomes the blocks that cover exactly it. Greedy from the low end is minimal:
at each step the largest block that starts at `first` (its alignment: the lowest set bit
of `first`) and does not pass `last` is taken, and no cover can use fewer blocks.
A range is at most 2 * bits - 2 blocks (62 for IPv4, 254 for IPv6).
"""

from __future__ import annotations


def range_cover(first: int, last: int, bits: int) -> list[tuple[int, int]]:
    """(network, prefix length) blocks covering [first, last] exactly, in address order.

    Plain integer arithmetic: no `ipaddress` objects, which cost microseconds each
    (README section 8). Raises ValueError for an empty or out-of-family range.
    """
    if not 0 <= first <= last < 1 << bits:
        raise ValueError(f"not a range of {bits}-bit addresses: {first}-{last}")
    blocks: list[tuple[int, int]] = []
    while first <= last:
        aligned = first & -first if first else 1 << bits
        fits = 1 << ((last - first + 1).bit_length() - 1)
        size = min(aligned, fits)
        blocks.append((first, bits - size.bit_length() + 1))
        first += size
    return blocks
