"""``inspect``: what a checkpoint stores, from headers only.

(Named ``summary`` so that it does not shadow the standard library's
``inspect``; ``tietool.inspect_checkpoint`` is the entry point.)"""

from __future__ import annotations

import fnmatch
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tietool.ties.declaration import TieDeclaration, tie_declaration
from tietool.ties.verify import TieGroup, find_ties

from . import config as configlib
from .formats import FORMATS, format_of, open_checkpoint, origin_of
from .model import Checkpoint, Role, TensorInfo
from .results import JsonResult


@dataclass(frozen=True)
class InspectSummary:
    tensor_count: int
    parameter_count: int  # weights only, alias copies included
    total_bytes: int
    bytes_by_dtype: dict[str, int]
    optimizer_tensor_count: int
    shown_count: int | None = None  # with a filter: the tensors that match

    def to_json(self) -> dict:
        d: dict[str, Any] = {
            "tensor_count": self.tensor_count,
            "parameter_count": self.parameter_count,
            "total_bytes": self.total_bytes,
            "bytes_by_dtype": dict(self.bytes_by_dtype),
            "optimizer_tensor_count": self.optimizer_tensor_count,
        }
        if self.shown_count is not None:
            d["shown_count"] = self.shown_count
        return d


@dataclass(frozen=True)
class InspectReport(JsonResult):
    """What :func:`inspect_checkpoint` found; ``to_json()`` is the ``--json`` document."""

    path: str
    format: str
    format_description: str
    origin_format: str
    origin_description: str
    files: tuple[str, ...]
    summary: InspectSummary
    config: dict | None
    config_source: str | None
    config_highlights: dict
    config_code: tuple[dict, ...]  # code found in the config (and training_config): reported, never run
    metadata: dict
    keras_metadata: dict
    tensors: tuple[TensorInfo, ...]  # those shown (the filter applied)
    warnings: tuple[str, ...]
    ties: tuple[TieGroup, ...] | None  # None: not looked for
    tie_declaration: TieDeclaration  # what the config declares about the tie (the one rule)
    converted: bool = False  # tietool converted the file from origin_format

    def to_json(self) -> dict:
        out: dict[str, Any] = {
            "path": self.path,
            "format": self.format,
            "format_description": self.format_description,
            "origin_format": self.origin_format,
            "origin_description": self.origin_description,
            "files": list(self.files),
            "summary": self.summary.to_json(),
            "config": self.config,
            "config_source": self.config_source,
            "config_highlights": self.config_highlights,
            "tie_declaration": self.tie_declaration.to_json(),
            "config_code": list(self.config_code),
            "metadata": self.metadata,
            "keras_metadata": self.keras_metadata,
            "tensors": [t.as_dict() for t in self.tensors],
            "warnings": list(self.warnings),
        }
        if self.ties is not None:
            out["ties"] = [g.to_json() for g in self.ties]
        return out


def inspect_checkpoint(path: str | os.PathLike, filter_glob: str | None = None, ties: bool = True) -> InspectReport:
    """What ``path`` stores (:class:`InspectReport`). Reads no tensor data."""
    with open_checkpoint(path) as ckpt:
        return report(ckpt, filter_glob=filter_glob, ties=ties)


def report(ckpt: Checkpoint, filter_glob: str | None = None, ties: bool = True) -> InspectReport:
    tensors = list(ckpt)
    shown = [t for t in tensors if filter_glob is None or fnmatch.fnmatchcase(t.name, filter_glob)]
    by_dtype: Counter[str] = Counter()
    for t in tensors:
        by_dtype[t.dtype] += t.nbytes
    summary = InspectSummary(
        tensor_count=len(tensors),
        parameter_count=ckpt.parameter_count() + _alias_parameters(ckpt),
        total_bytes=ckpt.total_bytes(),
        bytes_by_dtype=dict(sorted(by_dtype.items())),
        optimizer_tensor_count=sum(1 for t in tensors if t.role == Role.OPTIMIZER),
        shown_count=len(shown) if filter_glob is not None else None,
    )
    code = configlib.find_code(ckpt.config) if ckpt.config is not None else []
    if ckpt.training_config is not None:
        code += [dict(c, path="training_config." + c["path"]) for c in configlib.find_code(ckpt.training_config)]
    return InspectReport(
        path=ckpt.path,
        format=ckpt.format,
        format_description=FORMATS.get(ckpt.format, ckpt.format),
        origin_format=ckpt.origin_format,
        origin_description=FORMATS.get(ckpt.origin_format, ckpt.origin_format),
        files=tuple(ckpt.files),
        summary=summary,
        config=ckpt.config,
        config_source=ckpt.config_source,
        config_highlights=configlib.highlights(ckpt.config),
        config_code=tuple(code),
        metadata=ckpt.metadata,
        keras_metadata=_keras_metadata(ckpt),
        tensors=tuple(shown),
        warnings=tuple(ckpt.warnings),
        ties=tuple(find_ties(ckpt)) if ties else None,
        tie_declaration=tie_declaration(ckpt.config),
        converted=origin_of(ckpt) is not format_of(ckpt),
    )


def _alias_parameters(ckpt: Checkpoint) -> int:
    """Parameters of the copies a safetensors file records as aliases
    (``{removed: kept}`` in ``__metadata__``, as tietool's dedupe and
    safetensors' ``save_model`` write them): counted like the stored copies
    of the source, so a checkpoint and its conversion report the same count."""
    total = 0
    for kept in ckpt.records.aliases.values():
        info = ckpt.tensors[kept]
        if info.role == Role.WEIGHT:
            total += info.numel
    return total


def _keras_metadata(ckpt: Checkpoint) -> dict:
    """A .keras archive's metadata.json: read from the archive, or from the
    copy tietool carries in a converted file (``tietool.keras_metadata``)."""
    if format_of(ckpt).is_archive:
        return dict(ckpt.metadata)
    return dict(ckpt.records.keras_metadata or {})
