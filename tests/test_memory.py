"""Big blocks the daemon frees leave its resident memory, even after bigger ones were freed
(which, left to itself, makes glibc serve later big blocks from its heap and keep them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

AFTER_A_BIG_IMPORT = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from bangd.memory import keep_big_blocks_mapped

def resident_mib():
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("VmRSS")).split()[1]) >> 10

assert keep_big_blocks_mapped()
text = bytearray(30 << 20)  # a 1M import's text, freed
del text
before = resident_mib()
chunks = [b"x" * (1 << 20) for _ in range(20)]  # a download's chunks
small = [b"y" * 100 for _ in range(1000)]  # allocated after them: no trim at the top
del chunks
print(resident_mib() - before)
"""


def test_freed_download_chunks_leave_resident_memory_after_a_big_import() -> None:
    grown = subprocess.run(
        [sys.executable, "-c", AFTER_A_BIG_IMPORT, str(REPO)],
        capture_output=True, text=True, check=True,
    ).stdout
    assert int(grown) <= 2  # 20 MiB without the fixed threshold
