"""What a file is, as opposed to what it is named: to notice it replaced or rewritten.

One identity for every such question bangd asks: a local list changed (its fetch
validator), an MMDB that geoipupdate renamed into place, a fail2ban restarted (it makes a
new socket file). The change time is part of it because a new file may get the old one's
inode number.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FileIdentity:
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def validator(self) -> str:
        """The form stored as a local list's validator (the `etag` column)."""
        return f"file:{self.mtime_ns}:{self.size}:{self.ino}"


def file_identity(path: str | None) -> FileIdentity | None:
    """The identity of the file at `path`, or None when there is none (or no path)."""
    if path is None:
        return None
    try:
        return FileIdentity.of(os.stat(path))
    except OSError:
        return None
