"""Logging set-up: journald-friendly under systemd, timestamped elsewhere.

Under systemd (JOURNAL_STREAM set) journald adds its own timestamps and reads `<N>` syslog
prefixes as the level, so a line carries neither a timestamp nor a level name.
"""

from __future__ import annotations

import logging
import os
import sys

_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


def under_journald(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return bool(env.get("JOURNAL_STREAM"))


def setup_logging(level: str = "info", *, journal: bool | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if journal if journal is not None else under_journald():
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    set_level(level)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())
    # aiohttp's access and client logs are noise at info level.
    logging.getLogger("aiohttp").setLevel(max(logging.WARNING, logging.getLogger().level))
