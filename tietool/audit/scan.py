"""Finding checkpoints under folders: ``tietool check PATH...``.

Each PATH is a checkpoint (a weights file, a shard index, a ``.keras``
archive, a model folder) or a folder scanned recursively:

* a folder with a ``config.json`` and a weights file is a model folder (one
  checkpoint, its weights file picked as :func:`tietool.formats.find_weights`
  picks it); any other weights file in it (``tf_model.h5`` beside
  ``model.safetensors``) is a checkpoint of its own;
* in a folder without ``config.json`` every weights file (shard indexes, not
  their shards) is a checkpoint;
* the Hugging Face cache layout (``models--ORG--NAME/snapshots/REV/`` whose
  files are symlinks into ``blobs/``) is read through the snapshot folders;
  ``blobs/`` themselves are never listed, and folder symlinks are not
  followed (no loops).

Each checkpoint is reported once: two snapshot revisions that link the same
blobs (same weights, same config) are one checkpoint.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from tietool.errors import CheckpointNotFoundError, TietoolError, UnsupportedFormatError
from tietool.formats import FOLDER_CONFIG, check_input_path, find_weights

_HF_CACHE = re.compile(r"(?:^|/)models--([^/]+?)--([^/]+)/snapshots/([^/]+)$")
_SKIP_DIRS = {"blobs", ".no_exist", "refs", ".git", "__pycache__", "node_modules"}


@dataclass(frozen=True)
class Found:
    """One checkpoint to check: ``path`` to open, ``model`` (``ORG/NAME@REV``
    for a Hugging Face cache snapshot), ``error`` when the folder cannot be read."""

    path: str
    model: str | None = None
    error: str | None = None
    weights: str | None = None  # a model folder's weights file, as find_weights picked it

    def to_json(self) -> dict:
        return {"path": self.path, "model": self.model, "error": self.error}


def _hf_model(folder: str) -> str | None:
    m = _HF_CACHE.search(folder.replace(os.sep, "/"))
    return f"{m.group(1)}/{m.group(2)}@{m.group(3)[:12]}" if m else None


def _folder(folder: str) -> list[Found]:
    model = _hf_model(folder)
    try:
        first, others = find_weights(folder)
    except CheckpointNotFoundError:
        return []
    except UnsupportedFormatError as exc:  # pickle-only weights: listed, not read
        return [Found(folder, model, exc.message)]
    except OSError as exc:
        return [Found(folder, model, f"cannot list ({exc.strerror or exc})")]
    if os.path.isfile(os.path.join(folder, FOLDER_CONFIG)):
        return [Found(folder, model, weights=first)] + [Found(os.path.join(folder, n), model) for n in others]
    return [Found(os.path.join(folder, n), model) for n in [os.path.basename(first), *others]]


def _key(found: Found) -> tuple:
    """Identity of a checkpoint: the real files behind it."""
    p = found.path
    if found.weights is not None:
        cfg = os.path.join(p, FOLDER_CONFIG)
        return ("folder", os.path.realpath(found.weights), os.path.realpath(cfg) if os.path.exists(cfg) else None)
    return ("path" if os.path.isdir(p) else "file", os.path.realpath(p))


def find_checkpoints(paths: list[str]) -> list[Found]:
    """Every checkpoint under ``paths``, in a stable order, each once. A PATH
    that does not exist is listed with its error (the others are still found)."""
    out: list[Found] = []
    for path in paths:
        start = len(out)
        _find_under(path, out)
        if len(out) == start:
            out.append(Found(path, None, "no checkpoint here (no weights file tietool reads)"))
    seen: set[tuple] = set()
    unique = []
    for f in out:
        k = _key(f) if f.error is None else ("error", f.path)
        if k not in seen:
            seen.add(k)
            unique.append(f)
    return unique


def _find_under(path: str, out: list[Found]) -> None:
    try:
        check_input_path(path)
    except TietoolError as exc:
        out.append(Found(path, None, exc.message))
        return
    if os.path.isfile(path):
        out.append(Found(path, _hf_model(os.path.dirname(os.path.abspath(path)))))
        return
    here = _folder(path)
    out.extend(here)
    if here and os.path.isfile(os.path.join(path, FOLDER_CONFIG)):
        return  # a model folder named directly: it is the checkpoint (and the files beside it)
    for root, dirs, _files in os.walk(path, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".")
                         and not os.path.islink(os.path.join(root, d)))
        if root != path:
            out.extend(_folder(root))
