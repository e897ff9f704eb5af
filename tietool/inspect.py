"""``inspect``: what a checkpoint stores, from headers only."""

from __future__ import annotations

import fnmatch
import os
from collections import Counter

from . import config as configlib
from .errors import TietoolError
from .formats import FORMATS, open_checkpoint
from .formats.carried import KERAS_METADATA_KEY
from .model import ROLE_OPTIMIZER, ROLE_WEIGHT, Checkpoint


def inspect_checkpoint(path: str | os.PathLike, filter_glob: str | None = None, ties: bool = True) -> dict:
    """A JSON-ready report of ``path``. Reads no tensor data."""
    with open_checkpoint(path) as ckpt:
        return report(ckpt, filter_glob=filter_glob, ties=ties)


def report(ckpt: Checkpoint, filter_glob: str | None = None, ties: bool = True) -> dict:
    tensors = list(ckpt)
    shown = [t for t in tensors if filter_glob is None or fnmatch.fnmatchcase(t.name, filter_glob)]
    by_dtype = Counter()
    for t in tensors:
        by_dtype[t.dtype] += t.nbytes
    summary = {
        "tensor_count": len(tensors),
        "parameter_count": ckpt.parameter_count() + _alias_parameters(ckpt),
        "total_bytes": ckpt.total_bytes(),
        "bytes_by_dtype": dict(sorted(by_dtype.items())),
        "optimizer_tensor_count": sum(1 for t in tensors if t.role == ROLE_OPTIMIZER),
    }
    if filter_glob is not None:
        summary["shown_count"] = len(shown)
    out = {
        "path": ckpt.path,
        "format": ckpt.format,
        "format_description": FORMATS.get(ckpt.format, ckpt.format),
        "origin_format": ckpt.origin_format,
        "origin_description": FORMATS.get(ckpt.origin_format, ckpt.origin_format),
        "files": list(ckpt.files),
        "summary": summary,
        "config": ckpt.config,
        "config_source": ckpt.config_source,
        "config_highlights": configlib.highlights(ckpt.config),
        "config_code": configlib.find_code(ckpt.config) if ckpt.config is not None else [],
        "metadata": ckpt.metadata,
        "keras_metadata": _keras_metadata(ckpt),
        "tensors": [t.as_dict() for t in shown],
        "warnings": list(ckpt.warnings),
    }
    training = ckpt.layout.get("training_config")
    if training is not None:
        out["config_code"] += [dict(c, path="training_config." + c["path"]) for c in configlib.find_code(training)]
    if ties:
        try:
            from .ties import find_ties
        except ImportError:  # tie detection not built yet
            pass
        else:
            out["ties"] = [g.as_dict() for g in find_ties(ckpt)]
    return out


def _alias_parameters(ckpt: Checkpoint) -> int:
    """Parameters of the copies a safetensors file records as aliases
    (``{removed: kept}`` in ``__metadata__``, as tietool's dedupe and
    safetensors' ``save_model`` write them): counted like the stored copies
    of the source, so a checkpoint and its conversion report the same count."""
    if not ckpt.format.startswith("safetensors"):
        return 0
    total = 0
    for removed, kept in ckpt.metadata.items():
        info = ckpt.tensors.get(kept) if isinstance(kept, str) else None
        if info is not None and removed not in ckpt.tensors and info.role == ROLE_WEIGHT:
            total += info.numel
    return total


def _keras_metadata(ckpt: Checkpoint) -> dict:
    """A .keras archive's metadata.json: read from the archive, or from the
    copy tietool carries in a converted file (``tietool.keras_metadata``)."""
    if ckpt.format == "keras3-archive":
        return dict(ckpt.metadata)
    text = ckpt.metadata.get(KERAS_METADATA_KEY)
    if not isinstance(text, str):
        return {}
    try:
        value = configlib.parse_json_text(text, KERAS_METADATA_KEY)
    except TietoolError:
        return {}
    return value if isinstance(value, dict) else {}
