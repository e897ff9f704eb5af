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
from tietool.io.safe_output import CHECKPOINT_SUFFIXES
from tietool.textsafe import bounded

_HF_CACHE = re.compile(r"(?:^|/)models--([^/]+?)--([^/]+)/snapshots/([^/]+)$")
_HF_REPO = re.compile(r"(?:^|/)(models--[^/]+--[^/]+)/")
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


def _folder(folder: str, roots: tuple[str, ...]) -> list[Found]:
    model = _hf_model(folder)
    problem = link_problem(folder, roots)
    if problem is not None:
        return [Found(folder, model, problem)]
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


# -- staying inside the roots ------------------------------------------------------------------

def _read_by_tietool(name: str) -> bool:
    """A name in a folder that opening its checkpoint may read."""
    return name == FOLDER_CONFIG or name.endswith(CHECKPOINT_SUFFIXES)


def roots_of(path: str) -> tuple[str, ...]:
    """Where a scan of ``path`` may read: the folder given (a file's own
    folder), and the Hugging Face cache that holds it (the folder of its
    ``models--ORG--NAME``: snapshots link into ``blobs/`` beside them),
    both resolved."""
    full = os.path.abspath(path)
    base = full if os.path.isdir(full) else os.path.dirname(full)
    roots = [os.path.realpath(base)]
    m = _HF_REPO.search(full.replace(os.sep, "/") + "/")
    if m is not None:
        roots.append(os.path.realpath(full[:m.start(1)] or os.sep))
    return tuple(roots)


def _inside(real: str, roots: tuple[str, ...]) -> bool:
    return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def link_problem(folder: str, roots: tuple[str, ...]) -> str | None:
    """Why the checkpoint files of ``folder`` must not be read, or None:
    a symbolic link among them that leads outside ``roots`` (reported, not
    followed: a ``config.json`` linking to a system file is not read as a
    config), or that leads nowhere."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return None  # find_weights reports it
    return _problem([n for n in names if _read_by_tietool(n)], folder, roots)


def _problem(names: list[str], folder: str, roots: tuple[str, ...]) -> str | None:
    outside, dangling = [], []
    for n in names:
        p = os.path.join(folder, n)
        if not os.path.islink(p):
            continue
        real = os.path.realpath(p)
        if not _inside(real, roots):
            outside.append(f"{n} -> {real}")
        elif not os.path.exists(p):
            dangling.append(n)
    if outside:
        return (f"refused: {bounded(outside)}: symbolic link(s) leading outside the folder scanned; "
                "not followed")
    if dangling:
        return f"unreadable: {bounded(dangling)} link(s) to nothing"
    return None


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
    roots = roots_of(path)
    if os.path.lexists(path) and not os.path.exists(path) and os.path.islink(path):
        out.append(Found(path, None, "unreadable: a symbolic link to nothing"))
        return
    try:
        check_input_path(path)
    except TietoolError as exc:
        out.append(Found(path, None, exc.message))
        return
    if os.path.isfile(path):
        folder = os.path.dirname(os.path.abspath(path))
        # the file named is read wherever it leads; a config.json beside it only inside the roots
        out.append(Found(path, _hf_model(folder), _problem([FOLDER_CONFIG], folder, roots)))
        return
    here = _folder(path, roots)
    out.extend(here)
    if here and os.path.isfile(os.path.join(path, FOLDER_CONFIG)):
        return  # a model folder named directly: it is the checkpoint (and the files beside it)
    for root, dirs, _files in os.walk(path, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".")
                         and not os.path.islink(os.path.join(root, d)))
        if root != path:
            out.extend(_folder(root, roots))
