"""Error types shared by every layer.

Only the command-line entry points turn these into exit codes; deeper code raises and
never exits, so a daemon embedding a layer decides what a failure means.
"""

from __future__ import annotations


class BangdError(Exception):
    """Base of every error bangd raises on purpose."""


class ConfigError(BangdError):
    """The configuration is invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class MigrationError(BangdError):
    """The database cannot be brought to the schema this code expects."""


class Fail2banError(BangdError):
    """Talking to fail2ban failed."""


class Fail2banUnreachable(Fail2banError):
    """fail2ban's socket cannot be connected to, or the connection broke."""


class Fail2banTimeout(Fail2banUnreachable):
    """fail2ban did not answer within the configured timeout."""


class UnknownJail(Fail2banError):
    """fail2ban has no jail by that name."""

    def __init__(self, jail: str) -> None:
        self.jail = jail
        super().__init__(f"fail2ban has no jail {jail!r}: add it to jail.local and reload fail2ban")


class Fail2banCommandFailed(Fail2banError):
    """fail2ban answered a command with an error (its exception's name and message)."""

    def __init__(self, command: list[str], name: str, message: str) -> None:
        self.command = command
        self.name = name
        self.message = message
        shown = " ".join(command[:4]) + (" ..." if len(command) > 4 else "")
        super().__init__(f"fail2ban refused {shown!r}: {name}: {message}")


class Fail2banProtocolError(Fail2banError):
    """fail2ban's reply could not be decoded, or carried something not allowed."""


class BanListUnread(Fail2banError):
    """fail2ban's ban list came, but the process reading it failed."""


class FetchError(BangdError):
    """A blocklist could not be fetched."""


class ControlError(BangdError):
    """An error answered on the control socket; `code` is one of the protocol's error codes
    (README, Interface)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class GeoError(BangdError):
    """A geolocation source cannot be used (bad database file, resolver service down)."""


class ReloadRefused(ConfigError):
    """A reload found the new config invalid; the running one is kept."""

    def __str__(self) -> str:
        return "new config refused, the running one is kept: " + "; ".join(self.problems)


class InvalidRequest(BangdError, ValueError):
    """What was asked for is malformed (e.g. a lookup of something that is not an address).

    A ValueError too, so callers that only know the standard library still catch it.
    """


class UnknownSource(BangdError):
    """No source of that name is configured (any more)."""


class SourceDisabled(BangdError):
    """The source is configured but `enabled: false`."""


class UnknownJob(BangdError):
    """No job of that name is scheduled."""


class JobBusy(BangdError):
    """The job is running right now and the caller did not ask to wait."""


class UnknownJailName(BangdError):
    """No jail of that name is configured or holds bangd's entries."""


class UnknownExemption(BangdError):
    """No runtime exemption covers exactly that address or network."""
