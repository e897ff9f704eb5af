"""Every error tietool raises on purpose.

Each one also subclasses the builtin that describes it (``ValueError``,
``KeyError``, ``FileNotFoundError`` ...), so library callers can catch either
``TietoolError`` or the builtin they already handle. The CLI maps them to one
line, ``Error: FILE: what is wrong``, and an exit status, in one place
(``tietool.cli``).
"""

from __future__ import annotations

import os


class TietoolError(Exception):
    """Base class. ``path`` is the file the problem is about, when there is one."""

    exit_code = 2

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.message = message
        self.path = os.fspath(path) if path is not None else None
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class CheckpointNotFoundError(TietoolError, FileNotFoundError):
    """The path does not exist, or a folder holds no weights file."""

    def __str__(self) -> str:  # FileNotFoundError would format errno/filename
        return TietoolError.__str__(self)


class UnsupportedFormatError(TietoolError, ValueError):
    """The file exists but is not a checkpoint layout tietool reads."""


class CorruptCheckpointError(TietoolError, ValueError):
    """Truncated, malformed or internally inconsistent checkpoint."""


class UnsafeCheckpointError(TietoolError, ValueError):
    """The checkpoint asks for something tietool refuses on principle:
    links to other files, external storage, shape bombs, archive members that
    climb out of their folder, code in a config."""


class TensorNotFoundError(TietoolError, KeyError):
    """A tensor name that the checkpoint does not store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return TietoolError.__str__(self)


class UsageError(TietoolError, ValueError):
    """The request itself is wrong (bad option values, incompatible inputs)."""


class OutputExistsError(TietoolError, FileExistsError):
    """Refusing to overwrite an existing output without ``--force``."""

    def __str__(self) -> str:
        return TietoolError.__str__(self)


class MissingDependencyError(TietoolError, ImportError):
    """An optional dependency (TensorFlow for ``run``) is not installed."""
