"""Domain errors. Raised inside; turned into one line and an exit code only at the CLI boundary."""

from __future__ import annotations


class LlmopsError(Exception):
    """Base of every error a user can act on; `exit_code` is what the CLI returns."""

    exit_code = 1


class ConfigError(LlmopsError):
    """A missing or malformed setting, flag or config file."""

    exit_code = 2


class DataError(LlmopsError):
    """Warehouse, SQL or dataset content that cannot be used."""

    exit_code = 3


class NotFoundError(LlmopsError):
    """A run, artifact, model, version, alias or prompt that does not exist."""

    exit_code = 4


class GateFailedError(LlmopsError):
    """A quality gate refused a promotion."""

    exit_code = 5


class BackendError(LlmopsError):
    """A model backend or provider failed."""

    exit_code = 6


class InputError(LlmopsError):
    """Bad user input at serving time (empty question, malformed request)."""

    exit_code = 7


class AccessDeniedError(LlmopsError):
    """The tracking server refused an action to this user (e.g. an alias rule of the release policy)."""

    exit_code = 10


class ConflictError(LlmopsError):
    """A concurrent change (another alias move) got there first; re-check and retry."""

    exit_code = 11
