"""glibc's malloc kept from holding on to the big blocks the daemon frees.

glibc serves a block of 128 KiB or more with a mapping of its own, given back to the system
when the block is freed, but each time such a block is freed it raises that threshold to
the block's size (up to 32 MiB). After a 1M import had freed its 14 MiB texts, every later
big block (a download's 1 MiB chunks, the pieces read from SQLite) came from the heap, and
stayed in the daemon's resident memory once freed: 85 MiB idle after a 1M import, against
43 at start, and the refresh's peak at 117 MiB. With the threshold fixed where glibc starts
it: 62-75 MiB idle and a peak of 89. The cost is a mapping per big block, and bangd makes
few (a piece of ~1 MiB at a time). With another C library, nothing is changed.
"""

from __future__ import annotations

import ctypes
from typing import Final

_M_MMAP_THRESHOLD: Final = -3  # glibc's malloc.h
MAPPED_FROM: Final = 128 * 1024  # glibc's own starting threshold


def keep_big_blocks_mapped(threshold: int = MAPPED_FROM) -> bool:
    """Fix glibc's mmap threshold (which also ends its moving); False where there is no
    glibc mallopt to ask."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold) == 1)
