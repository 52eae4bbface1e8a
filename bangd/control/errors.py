"""The one place where bangd's error types become the control protocol's error codes.

Code below the control layer raises what went wrong in its own terms (`JobBusy`,
`UnknownSource`, ...) and never names a protocol code; a new error type that users should
see as something other than `internal` gets its line here.
"""

from __future__ import annotations

from typing import Final

from ..errors import (
    BangdError,
    ConfigError,
    ControlError,
    InvalidRequest,
    JobBusy,
    SourceDisabled,
    UnknownExemption,
    UnknownJailName,
    UnknownJob,
    UnknownSource,
)

# First match wins, so a subclass goes before its base.
ERROR_CODES: Final[tuple[tuple[type[BangdError], str], ...]] = (
    (JobBusy, "busy"),
    (UnknownJob, "not_found"),
    (UnknownSource, "not_found"),
    (UnknownJailName, "not_found"),
    (UnknownExemption, "not_found"),
    (SourceDisabled, "invalid_argument"),
    (InvalidRequest, "invalid_argument"),
    (ConfigError, "invalid_argument"),
)


def error_reply(exc: BangdError) -> tuple[str, str]:
    """(code, message) answered for `exc`: its table code, else `internal`."""
    if isinstance(exc, ControlError):
        return exc.code, exc.message
    for kind, code in ERROR_CODES:
        if isinstance(exc, kind):
            return code, str(exc)
    return "internal", str(exc)
