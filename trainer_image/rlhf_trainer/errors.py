"""Errors a user can act on, and the exit codes the operator reads.

A pod that exits with a user-error code is not retried (the Job's pod failure policy
fails it at once): retrying bad configuration or malformed data only burns GPU hours.
Any other non-zero exit (a crash, OOM, a lost node) is retried from the last checkpoint.
"""

from __future__ import annotations

EXIT_DATA_ERROR = 65
"""Input data is missing or malformed (sysexits EX_DATAERR)."""
EXIT_CONFIG_ERROR = 78
"""The configuration is invalid or names something that does not exist (EX_CONFIG)."""
USER_ERROR_EXIT_CODES = (EXIT_DATA_ERROR, EXIT_CONFIG_ERROR)


class UserError(Exception):
    """A problem with what the user asked for, not with the trainer."""

    exit_code = EXIT_CONFIG_ERROR

    def __init__(self, message: str, *, where: str = "", field: str = "") -> None:
        self.where = where
        self.field = field
        parts = [part for part in (where, field) if part]
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ConfigError(UserError):
    """The config file is invalid or refers to something that cannot be found."""

    exit_code = EXIT_CONFIG_ERROR


class DataError(UserError):
    """A dataset is missing, empty, or lacks a column or label the stage needs."""

    exit_code = EXIT_DATA_ERROR


EXIT_TEMPORARY_FAILURE = 75
"""A transient failure outside the user's control, e.g. the Hub unreachable (EX_TEMPFAIL).
Not a user error: the Job's failure policy retries it (counting against backoffLimit)."""

NETWORK_ERROR_NAMES = frozenset(
    {"ConnectError", "ConnectTimeout", "NetworkError", "ProxyError", "ReadTimeout",
     "RemoteProtocolError", "TimeoutException", "TransportError"}
)  # fmt: skip


class TransientError(Exception):
    """Something that may work on the next attempt: a network failure reaching the Hub."""

    exit_code = EXIT_TEMPORARY_FAILURE

    def __init__(self, message: str, *, where: str = "", field: str = "") -> None:
        parts = [part for part in (where, field) if part]
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


def is_network_failure(error: BaseException) -> bool:
    """Whether an error, or any error behind it, is a connection failure or a timeout
    (builtin ConnectionError/TimeoutError, or httpx's and requests' network errors)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError | TimeoutError):
            return True
        if any(kind.__name__ in NETWORK_ERROR_NAMES for kind in type(current).__mro__):
            return True
        current = current.__cause__ or current.__context__
    return False


def load_failure(error: BaseException, what: str, field: str) -> Exception:
    """The error to raise when loading ``what`` failed: transient for network failures,
    a configuration error otherwise (a wrong id, a missing file, no access)."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if is_network_failure(error):
        return TransientError(
            f"cannot reach the Hub to load {what} ({first}); retried on the next attempt",
            field=field,
        )
    return ConfigError(f"cannot load {what}: {first}", field=field)
