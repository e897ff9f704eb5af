"""tietool: read, verify, run and convert checkpoints with tied embedding/decoder weights.

The library never prints and never exits; the CLI (``tietool.cli.commands``) does.
Heavy modules (h5py, numpy, and TensorFlow for the layer) load on first use,
so that ``import tietool`` and ``tietool --help`` stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (  # noqa: F401  (light: no third-party imports)
    CheckpointNotFoundError,
    ConversionError,
    CopiesDifferError,
    CorruptCheckpointError,
    InputNotFoundError,
    InputUnreadableError,
    InvalidInputError,
    MissingDependencyError,
    OutputError,
    OutputExistsError,
    TensorNotFoundError,
    TietoolError,
    UnsafeCheckpointError,
    UnsupportedFormatError,
    UsageError,
)

_LAZY = {
    "open_checkpoint": ("tietool.formats", "open_checkpoint"),
    "Checkpoint": ("tietool.model", "Checkpoint"),
    "TensorInfo": ("tietool.model", "TensorInfo"),
    "inspect_checkpoint": ("tietool.summary", "inspect_checkpoint"),
    "verify_tie": ("tietool.ties.verify", "verify_tie"),
    "find_ties": ("tietool.ties.verify", "find_ties"),
    "convert_checkpoint": ("tietool.convert", "convert"),
    "check_paths": ("tietool.audit.check", "check_paths"),
    "fix_checkpoint": ("tietool.audit.fix", "fix"),
    "diff_checkpoints": ("tietool.diff.checkpoints", "diff_checkpoints"),
    # imports TensorFlow: only when asked for
    "SharedEmbeddings": ("tietool.layer.shared", "SharedEmbeddings"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tietool' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY, "TietoolError"]
