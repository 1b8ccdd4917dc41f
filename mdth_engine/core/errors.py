"""The error types every layer raises, so the CLI can map them to exit codes and one-line reasons."""

from __future__ import annotations


class MdthError(Exception):
    """Base of every error mdth raises on purpose; its message is one line a user can act on."""

    exit_code = 1


class UsageError(MdthError):
    """Bad input from the user (a wrong date, an unknown venue or key): exit 2, before any work starts."""

    exit_code = 2


class KeyFormatError(UsageError, ValueError):
    """An instrument key that does not follow the grammar; the message names the part that is wrong."""


class StoreError(MdthError):
    """An object store operation failed (permissions, missing bucket, disk full)."""


class PreconditionFailed(StoreError):
    """A put-if-absent lost the race: the object already exists."""


class NotFound(StoreError, FileNotFoundError):
    """The object does not exist."""
