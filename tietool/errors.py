"""Every error tietool raises on purpose.

Each one also subclasses the builtin that describes it (``ValueError``,
``KeyError``, ``FileNotFoundError`` ...), so library callers can catch either
``TietoolError`` or the builtin they already handle. The CLI maps them to one
line, ``Error: FILE: what is wrong``, and an exit status, in one place
(:mod:`tietool.cli.exits`, the one error -> exit-code table).

Classes that subclass an ``OSError`` builtin (``FileNotFoundError``,
``FileExistsError``, ``OSError``) keep tietool's one-line ``str()`` and set
``errno``/``strerror``/``filename`` as an ``OSError`` caller expects.
"""

from __future__ import annotations

import os


class TietoolError(Exception):
    """Base class. ``path`` is the file the problem is about, when there is one."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.message = message
        self.path = os.fspath(path) if path is not None else None
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class _OSErrorMixin(TietoolError, OSError):
    """A TietoolError that is also an ``OSError``: ``str()`` is tietool's one
    line (``OSError`` would format errno/filename), and the ``OSError``
    attributes are set from the message and path (``errno`` when known)."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, errno: int | None = None):
        super().__init__(message, path)
        self.errno = errno
        self.strerror = message
        self.filename = self.path

    def __str__(self) -> str:
        return TietoolError.__str__(self)


class InputNotFoundError(_OSErrorMixin, FileNotFoundError):
    """An input file (a checkpoint, a ``.npy`` array) does not exist."""


class CheckpointNotFoundError(InputNotFoundError):
    """The path does not exist, or a folder holds no weights file."""


class InputUnreadableError(_OSErrorMixin, PermissionError):
    """An input exists but cannot be reached or read (permission denied:
    the file's own mode, or a folder on its path the user cannot enter)."""


class InvalidInputError(TietoolError, ValueError):
    """An input file other than a checkpoint (a ``.npy`` array given to
    ``run``) cannot be read, or holds the wrong kind of array."""


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


class OutputError(_OSErrorMixin):
    """Writing an output failed (disk full, read-only file system, no
    permission, quota): nothing of the user's was modified."""


class OutputExistsError(_OSErrorMixin, FileExistsError):
    """Refusing to overwrite an existing output without ``--force``."""


class ConversionError(TietoolError, ValueError):
    """A checkpoint that reads fine cannot be converted or repaired as asked
    (e.g. a transposed copy cannot take another copy's bytes)."""


class CopiesDifferError(ConversionError):
    """Stored copies of one tied matrix differ, and the operation needs them
    identical or a choice of which to keep (``fix --prefer``)."""


class MissingDependencyError(TietoolError, ImportError):
    """An optional dependency (TensorFlow for ``run``) is not installed."""
