"""Shard index files: ``*.safetensors.index.json``, ``tf_model.h5.index.json``
(Hugging Face) and Keras 3 ``*.weights.json``.

All are JSON objects with a ``weight_map`` of tensor (or Keras variable
group) -> shard file name. A shard must be a bare file name in the index's
own folder: an index must not make tietool read anything else.
"""

from __future__ import annotations

import os

from ..config import load_json_file
from ..errors import CheckpointNotFoundError, CorruptCheckpointError, UnsafeCheckpointError


def load_index(path: str) -> tuple[dict, dict[str, list[str]], list[str]]:
    """``(index, weight_map, shard_paths)``: ``weight_map`` values as lists of
    file names, ``shard_paths`` absolute, in first-mentioned order."""
    index = load_json_file(path)
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        raise CorruptCheckpointError("shard index has no weight_map object", path)
    folder = os.path.dirname(os.path.abspath(path))
    weight_map: dict[str, list[str]] = {}
    order: list[str] = []
    for name, files in index["weight_map"].items():
        names = files if isinstance(files, list) else [files]
        if not names or not all(isinstance(f, str) for f in names):
            raise CorruptCheckpointError(f"weight_map entry {name!r} is not a file name", path)
        for f in names:
            check_shard_name(f, path)
            if f not in order:
                order.append(f)
        weight_map[name] = names
    shard_paths = []
    for f in order:
        p = os.path.join(folder, f)
        if not os.path.isfile(p):
            raise CheckpointNotFoundError(f"shard {f} listed in the index is missing", path)
        shard_paths.append(p)
    if not shard_paths:
        raise CorruptCheckpointError("shard index lists no shards", path)
    return index, weight_map, shard_paths


def check_shard_name(name: str, index_path: str) -> None:
    bad = (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or os.path.isabs(name)
        or (len(name) > 1 and name[1] == ":")
    )
    if bad:
        raise UnsafeCheckpointError(
            f"shard {name!r} is not a bare file name in the index's folder; refused", index_path
        )
