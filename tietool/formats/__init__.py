"""Open any checkpoint layout tietool reads into a :class:`~tietool.model.Checkpoint`.

A path may be a weights file, a shard index, a ``.keras`` archive, or a
Hugging Face model folder (the weights file found by the Hub's file names,
``config.json`` and the other files beside it recorded).
"""

from __future__ import annotations

import glob
import os

from tietool.io.h5safe import is_hdf5

from .. import config as configlib
from ..errors import CheckpointNotFoundError, CorruptCheckpointError, UnsupportedFormatError, UsageError
from ..model import Checkpoint

FORMATS = {
    "keras2-h5": "Keras 2 save_weights HDF5 (transformers TF tf_model.h5)",
    "keras2-full-h5": "Keras 2 full-model HDF5 (model.save('x.h5'))",
    "hf-tf-h5-sharded": "Hugging Face sharded TF HDF5 (tf_model.h5.index.json)",
    "hf-tf-h5-shard": "one shard of a Hugging Face sharded TF HDF5",
    "keras3-weights-h5": "Keras 3 .weights.h5",
    "keras3-weights-sharded": "Keras 3 sharded weights (.weights.json)",
    "keras3-archive": "Keras 3 .keras archive",
    "safetensors": "safetensors",
    "safetensors-sharded": "sharded safetensors (model.safetensors.index.json)",
}

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
    if not os.path.exists(path):
        raise CheckpointNotFoundError("no such file or folder", path)
    if os.path.isdir(path):
        return _open_folder(path)
    ckpt = _open_file(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.basename(path) in HF_FILE_NAMES or _is_hf_shard_name(os.path.basename(path)):
        _attach_folder_config(ckpt, folder)
    return ckpt


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


def _open_file(path: str) -> Checkpoint:
    from . import records

    ckpt = _open_file_as_stored(path)
    try:
        records.apply(ckpt)
    except BaseException:
        ckpt.close()
        raise
    return ckpt


def _open_file_as_stored(path: str) -> Checkpoint:
    from . import keras_h5, safetensors_format

    name = os.path.basename(path)
    head = _sniff(path)
    if not head:
        raise CorruptCheckpointError("file is empty", path)
    if name.endswith(".json"):
        return _open_index(path)
    if head.startswith(ZIP_MAGIC) or name.endswith(".keras"):
        if not head.startswith(ZIP_MAGIC):
            raise CorruptCheckpointError("not a .keras archive (no zip signature)", path)
        return keras_h5.open_keras_archive(path)
    if is_hdf5(path):
        return keras_h5.open_h5(path)
    if name.endswith(".safetensors"):
        return safetensors_format.open_file(path)
    if name.endswith((".h5", ".hdf5")):
        raise CorruptCheckpointError("not an HDF5 file (no HDF5 signature)", path)
    if head.startswith((*PICKLE_MAGIC, ZIP_MAGIC)) or name.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl")):
        raise UnsupportedFormatError("pickle-based checkpoints are not read: unpickling runs code from the file", path)
    # No telling extension: a safetensors header starts with an 8-byte length then '{'.
    if len(head) > 8 and head[8:9] == b"{":
        return safetensors_format.open_file(path)
    raise UnsupportedFormatError("not a checkpoint tietool reads (HDF5, .keras, safetensors or a shard index)", path)


def _open_index(path: str) -> Checkpoint:
    from . import keras_h5, safetensors_format
    from .index import load_index

    name = os.path.basename(path)
    if name.endswith(".weights.json"):
        return keras_h5.open_keras3_sharded(path)
    index, weight_map, shards = load_index(path)
    kinds = {os.path.splitext(s)[1] for s in shards}
    if kinds == {".safetensors"}:
        flat = {k: v[0] for k, v in weight_map.items()}
        return safetensors_format.open_sharded(path, index, shards, flat)
    if kinds <= {".h5", ".hdf5"}:
        return keras_h5.open_hf_sharded(path)
    raise UnsupportedFormatError(f"shard index names files of unknown kind ({', '.join(sorted(kinds))})", path)


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
        names = ", ".join([os.path.basename(weights)] + others)
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
