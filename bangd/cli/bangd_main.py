"""`bangd`: run the daemon in the foreground, or check a config file."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from .. import __version__
from ..config import DEFAULT_CONFIG_PATH, load_config
from ..errors import BangdError, ConfigError
from ..logs import setup_logging
from ..memory import keep_big_blocks_mapped

log = logging.getLogger(__name__)


def config_path(arg: str | None) -> str:
    return arg or os.environ.get("BANGD_CONFIG") or DEFAULT_CONFIG_PATH


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bangd",
        description="Import IP blocklists into fail2ban and keep a geolocation cache.",
        epilog="Config path: -c, else $BANGD_CONFIG, else " + DEFAULT_CONFIG_PATH + ".",
    )
    parser.add_argument("-c", "--config", metavar="PATH", help="the YAML config file")
    parser.add_argument(
        "--check-config", action="store_true", help="validate the config and exit"
    )
    parser.add_argument("--version", action="version", version=f"bangd {__version__}")
    return parser


# How long a thread may keep the GIL while the event loop waits for it. Parsing and
# sorting a list run in a thread, and every await of a status call (a socket read, a query
# on the reader's thread) takes the GIL back once: with CPython's 5 ms, one handoff waited
# up to 12 ms during a 1M parse; with 1 ms, up to 7 ms, and the parse took no longer.
SWITCH_INTERVAL = 0.001


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = config_path(args.config)
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    if args.check_config:
        from ..preflight import problems_for, warnings_for

        problems = problems_for(config)
        for line in problems + warnings_for(config):
            print(line, file=sys.stderr)
        if problems:
            return 1
        print("ok")
        return 0
    setup_logging(config.log_level)
    from ..daemon import Daemon  # imported late: --check-config needs none of it

    sys.setswitchinterval(SWITCH_INTERVAL)
    if not keep_big_blocks_mapped():
        log.debug("malloc's mmap threshold left as it is: no glibc mallopt, or it refused")

    try:
        asyncio.run(Daemon(config).run())
    except KeyboardInterrupt:
        return 1
    except BangdError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
