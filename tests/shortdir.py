"""Short temporary directories: AF_UNIX socket paths must stay under 108 bytes."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def short_tmpdir(prefix: str = "bangd-") -> Iterator[str]:
    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
