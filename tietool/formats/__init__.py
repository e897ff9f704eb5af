"""Open any checkpoint layout tietool reads into a :class:`~tietool.model.Checkpoint`.

A path may be a weights file, a shard index, a ``.keras`` archive, or a
Hugging Face model folder (the weights file found by the Hub's file names,
``config.json`` and the other files beside it recorded).
"""

from __future__ import annotations

import errno
import glob
import os

from .. import config as configlib
from ..errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    InputUnreadableError,
    UnsupportedFormatError,
    UsageError,
)
from ..model import Checkpoint
from ..textsafe import bounded
from .descriptor import (
    CONTAINER_SUFFIXES,
    WEIGHT_SUFFIXES,
    Family,
    Format,
    Recognised,
    format_of,
    get_format,
    origin_of,
)
from .descriptor import FORMATS as DESCRIPTORS

__all__ = ["FORMATS", "DESCRIPTORS", "CONTAINER_SUFFIXES", "WEIGHT_SUFFIXES",
           "Family", "Format", "Recognised", "format_of", "get_format", "origin_of",
           "open_checkpoint", "open_as_stored", "recognise", "find_weights", "FOLDER_CONFIG"]

#: Every format tietool reads: name -> description (the descriptors: :mod:`tietool.formats.descriptor`).
FORMATS = {name: f.description for name, f in DESCRIPTORS.items()}

# The Hub's weight file names, in the order tietool picks them from a folder.
FOLDER_WEIGHT_NAMES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "tf_model.h5",
    "tf_model.h5.index.json",
    "model.weights.h5",
    "model.weights.json",
    "model.keras",
)
FOLDER_WEIGHT_GLOBS = ("*.safetensors.index.json", "*.safetensors", "*.weights.json", "*.weights.h5", "*.keras", "*.h5",
                       "*.hdf5")
PICKLE_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "flax_model.msgpack", "model.ckpt.index")
HF_FILE_NAMES = {"model.safetensors", "model.safetensors.index.json", "tf_model.h5", "tf_model.h5.index.json"}
FOLDER_CONFIG = "config.json"

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def open_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Open ``path``, reading headers and attributes only."""
    path = os.fspath(path)
    check_input_path(path)
    if os.path.isdir(path):
        return _open_folder(path)
    ckpt = _open_file(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.basename(path) in HF_FILE_NAMES or _is_hf_shard_name(os.path.basename(path)):
        _attach_folder_config(ckpt, folder)
    return ckpt


def check_input_path(path: str) -> None:
    """Raise the error a user can act on when ``path`` cannot be reached:
    missing (ENOENT, ENOTDIR) is "no such file or folder"; one that exists
    behind a folder the user cannot enter fails ``stat`` with EACCES, which
    is a permission problem, not a missing file."""
    try:
        os.stat(path)
    except FileNotFoundError:
        raise CheckpointNotFoundError("no such file or folder", path, errno.ENOENT) from None
    except NotADirectoryError:
        raise CheckpointNotFoundError("no such file or folder", path, errno.ENOTDIR) from None
    except PermissionError:
        raise InputUnreadableError("cannot read (permission denied)", path, errno.EACCES) from None
    except OSError as exc:
        raise InputUnreadableError(f"cannot read ({(exc.strerror or str(exc)).lower()})", path, exc.errno) from None


def _is_hf_shard_name(name: str) -> bool:
    return ((name.startswith("model-") and name.endswith(".safetensors"))
            or (name.startswith("tf_model-") and name.endswith(".h5")))


def _sniff(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(16)
    except IsADirectoryError:
        raise UnsupportedFormatError("is a folder", path) from None
    except OSError as exc:
        raise CorruptCheckpointError(f"cannot read ({(exc.strerror or str(exc)).lower()})", path) from None


def open_as_stored(path: str) -> Checkpoint:
    """Open the file ``path`` as it is stored: tietool's own records (see
    :mod:`tietool.formats.records`) not applied, no folder config attached."""
    found = recognise(path)
    try:
        return found.format.read(found)
    except BaseException:
        found.close()
        raise


def _open_file(path: str) -> Checkpoint:
    from . import records

    ckpt = open_as_stored(path)
    try:
        records.apply(ckpt)
    except BaseException:
        ckpt.close()
        raise
    return ckpt


def recognise(path: str) -> Recognised:
    """Tell the format of the file ``path`` (a weights file, shard index or
    archive): its first bytes, then what it needs (an HDF5 file's root, an
    index's shard names), each read once and handed to the reader."""
    name = os.path.basename(path)
    head = _sniff(path)
    if not head:
        raise CorruptCheckpointError("file is empty", path)
    if name.endswith(".json"):
        return _recognise_index(path)
    if head.startswith(ZIP_MAGIC) or name.endswith(".keras"):
        if not head.startswith(ZIP_MAGIC):
            raise CorruptCheckpointError("not a .keras archive (no zip signature)", path)
        return Recognised(get_format("keras3-archive"), path)
    found = _recognise_hdf5(path, head)
    if found is not None:
        return found
    if name.endswith(".safetensors"):
        return Recognised(get_format("safetensors"), path)
    if name.endswith((".h5", ".hdf5")):
        raise CorruptCheckpointError("not an HDF5 file (no HDF5 signature)", path)
    if head.startswith((*PICKLE_MAGIC, ZIP_MAGIC)) or name.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl")):
        raise UnsupportedFormatError("pickle-based checkpoints are not read: unpickling runs code from the file", path)
    # No telling extension: a safetensors header starts with an 8-byte length then '{'.
    if len(head) > 8 and head[8:9] == b"{":
        return Recognised(get_format("safetensors"), path)
    raise UnsupportedFormatError("not a checkpoint tietool reads (HDF5, .keras, safetensors or a shard index)", path)


def _recognise_hdf5(path: str, head: bytes) -> Recognised | None:
    """An HDF5 file, opened once: which Keras layout its root has."""
    from tietool.io.h5safe import HDF5_SIGNATURE, SafeH5, is_hdf5

    from .keras_h5 import root_kind

    if not head.startswith(HDF5_SIGNATURE) and not is_hdf5(path):
        return None
    h5 = SafeH5(path, path)
    try:
        return Recognised(get_format(root_kind(h5)), path, h5=h5)
    except BaseException:
        h5.close()
        raise


def _recognise_index(path: str) -> Recognised:
    from .index import load_index

    if os.path.basename(path).endswith(".weights.json"):
        return Recognised(get_format("keras3-weights-sharded"), path, index=load_index(path))
    index = load_index(path)
    kinds = {os.path.splitext(s)[1] for s in index[2]}
    if kinds == {".safetensors"}:
        return Recognised(get_format("safetensors-sharded"), path, index=index)
    if kinds <= {".h5", ".hdf5"}:
        return Recognised(get_format("hf-tf-h5-sharded"), path, index=index)
    raise UnsupportedFormatError(f"shard index names files of unknown kind ({bounded(sorted(kinds))})", path)


def find_weights(folder: str) -> tuple[str, list[str]]:
    """The weights file of a model folder and the other candidates seen."""
    entries = set(os.listdir(folder))
    candidates = [n for n in FOLDER_WEIGHT_NAMES if n in entries]
    for pattern in FOLDER_WEIGHT_GLOBS:
        for p in sorted(glob.glob(os.path.join(glob.escape(folder), pattern))):
            n = os.path.basename(p)
            # shards are reached through their index
            if n not in candidates and not _is_shard_of_index(n, entries):
                candidates.append(n)
    candidates = [c for c in candidates if os.path.isfile(os.path.join(folder, c))]
    if not candidates:
        pickles = [n for n in PICKLE_NAMES if n in entries]
        if pickles:
            raise UnsupportedFormatError(
                f"only {pickles[0]} here: pickle-based weights are not read (unpickling runs code from the file)",
                folder,
            )
        raise CheckpointNotFoundError(
            "no weights file in this folder (looked for model.safetensors, tf_model.h5, their shard indexes, "
            "*.weights.h5, *.keras)",
            folder,
        )
    return os.path.join(folder, candidates[0]), candidates[1:]


def _is_shard_of_index(name: str, entries: set[str]) -> bool:
    if "-of-" in name and any(e.endswith(".index.json") for e in entries):
        return True
    # Keras 3 shards: <base>_00000.weights.h5 beside <base>.weights.json
    stem = name.rsplit("_", 1)[0]
    return name.endswith(".weights.h5") and f"{stem}.weights.json" in entries


def _open_folder(folder: str) -> Checkpoint:
    weights, others = find_weights(folder)
    if others:
        # Never a silent pick: which file a loader uses differs by loader.
        names = bounded([os.path.basename(weights)] + others)
        raise UsageError(f"several weight files in this folder ({names}): name the one to use", folder)
    ckpt = _open_file(weights)
    ckpt.path = folder
    _attach_folder_config(ckpt, folder)
    return ckpt


def _attach_folder_config(ckpt: Checkpoint, folder: str) -> None:
    """A Hugging Face folder's config.json wins over any config inside the
    weights file: it is what transformers reads."""
    cfg_path = os.path.join(folder, FOLDER_CONFIG)
    if os.path.isfile(cfg_path):
        try:
            ckpt.config = configlib.load_config_object(cfg_path)
        except BaseException:
            ckpt.close()
            raise
        ckpt.config_source = cfg_path
        ckpt.files.append(cfg_path)
    weight_files = {os.path.abspath(f) for f in ckpt.files}
    extra = sorted(
        n for n in os.listdir(folder)
        if os.path.isfile(os.path.join(folder, n)) and os.path.abspath(os.path.join(folder, n)) not in weight_files
    )
    ckpt.folder = folder
    ckpt.folder_files = extra
