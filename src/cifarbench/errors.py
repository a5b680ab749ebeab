"""Errors a user can act on: the CLI prints them as one line, with no traceback."""

from __future__ import annotations


class CifarbenchError(Exception):
    """Base of every error whose message alone tells the user what to do."""


class ConfigError(CifarbenchError):
    """A config value that cannot work: names the field, the value and what is allowed."""

    def __init__(self, field: str, value: object, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}={value!r}: {allowed}")


class DataError(CifarbenchError):
    """A data set that is missing or unreadable: names the path and how to get the data."""


class DiskFullError(CifarbenchError):
    """No space left while writing a file: the previous version of the file is kept."""


def error_line(err: BaseException) -> str:
    """An exception as one line: its type and the first line of its message (DDP's and NCCL's run to dozens of
    lines, and their last line, the advice, names nothing)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0].strip()}" if lines else type(err).__name__
