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
