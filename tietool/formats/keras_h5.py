"""Keras HDF5 layouts, all through :mod:`tietool.io.h5safe`.

- ``keras2-h5``: tf.keras / Keras 2 ``save_weights``, which is what
  transformers' TF ``save_pretrained`` writes as ``tf_model.h5``. Root
  ``layer_names``; one group per layer whose ``weight_names`` is the
  authoritative list and order; the dataset of weight ``w`` of layer ``L`` is
  ``L/w``. Long attribute lists are split as ``layer_names0``, ``layer_names1``...
- ``keras2-full-h5``: ``model.save("x.h5")``: root ``model_config`` and
  ``training_config`` (JSON), ``model_weights/`` in the layout above,
  ``optimizer_weights/``.
- ``hf-tf-h5-sharded``: transformers' sharded TF checkpoint: an index and
  flat shards whose root ``layer_names`` lists dataset paths.
- ``keras3-weights-h5``: Keras 3 ``.weights.h5``: ``layers/<path>/vars/<i>``,
  ``vars/<i>``, ``optimizer/vars/<i>``; the layer's name is the ``name``
  attribute of its ``vars`` group; variables have no names.
- ``keras3-weights-sharded``: ``.weights.json`` + shards.
- ``keras3-archive``: ``.keras`` zip with ``config.json``, ``metadata.json``
  and ``model.weights.h5``, read in place inside the zip.
"""

from __future__ import annotations

import contextlib
import os
import struct
from typing import TYPE_CHECKING

import numpy as np

from tietool.io import rawio
from tietool.io.h5safe import DatasetEntry, SafeH5

from .. import config as configlib
from ..errors import CorruptCheckpointError, UnsafeCheckpointError, UnsupportedFormatError
from ..model import Checkpoint, KerasArchive, Role, TensorInfo
from ..textsafe import bounded
from .descriptor import Recognised

if TYPE_CHECKING:  # zipfile is imported where an archive is read: 14 ms of start-up otherwise
    import zipfile

KERAS3_ROLES = {"optimizer": Role.OPTIMIZER, "metrics": Role.METRIC}


class H5Store:
    """Reads tensors of one or more open HDF5 files. Contiguous datasets in a
    file on disk are read by offset; the rest through h5py."""

    def __init__(self) -> None:
        self.files: list[SafeH5] = []
        self.handles = rawio.FileHandles()
        self.extra: list = []  # zip files and members to close

    def read_rows(self, info: TensorInfo, start: int, stop: int) -> np.ndarray:
        h5, entry = info.locator
        if info.offset is not None and info.computable:
            fd = self.handles.fd(info.file)
            return rawio.read_rows(fd, info.offset, info.shape, info.dtype, start, stop, info.file)
        return h5.read_rows(entry, start, stop)

    def read_block(self, info: TensorInfo, rows: slice, cols: slice) -> np.ndarray:
        """A ``rows x cols`` block of a 2-D dataset, read as one hyperslab."""
        h5, entry = info.locator
        return h5.read_rows(entry, rows.start, rows.stop, cols)

    def close(self) -> None:
        for f in self.files:
            f.close()
        for x in self.extra:
            with contextlib.suppress(Exception):
                x.close()
        self.handles.close()


def _info(entry: DatasetEntry, file: str, *, name: str | None = None, role: Role = Role.WEIGHT,
          layer: str | None = None, h5: SafeH5, base_offset: int | None = 0) -> TensorInfo:
    offset = None
    if entry.offset is not None and base_offset is not None:
        offset = base_offset + entry.offset
    return TensorInfo(
        name=name or entry.path,
        shape=entry.shape,
        dtype=entry.dtype,
        nbytes=entry.nbytes,
        file=file,
        offset=offset,
        role=role,
        layer=layer,
        storage_key=(file, entry.object_key),
        locator=(h5, entry),
    )


def list_attr(h5: SafeH5, obj, name: str) -> list[str] | None:
    """A Keras name-list attribute, joined from ``name0``, ``name1``... when
    Keras split it; None when absent."""
    keys = set(h5.attr_names(obj))
    if name in keys:
        parts = [h5.attr(obj, name)]
    elif f"{name}0" in keys:
        parts, i = [], 0
        while f"{name}{i}" in keys:
            parts.append(h5.attr(obj, f"{name}{i}"))
            i += 1
    else:
        return None
    out: list[str] = []
    for p in parts:
        if isinstance(p, str):
            out.append(p)
        elif isinstance(p, list):
            for v in p:
                if not isinstance(v, str):
                    raise CorruptCheckpointError(f"attribute {name!r} of {obj.name} holds non-string {v!r}", h5.label)
                out.append(v)
        else:
            raise CorruptCheckpointError(f"attribute {name!r} of {obj.name} is not a list of names", h5.label)
    return out


def root_kind(h5: SafeH5) -> str:
    """Which Keras layout an open HDF5 file has."""
    keys = set(h5.attr_names(h5.file))
    members = set(h5.guard("root group", lambda: list(h5.file.keys())))
    if "model_weights" in members and ("model_config" in keys or "layer_names" not in keys):
        return "keras2-full-h5"
    if "layer_names" in keys or "layer_names0" in keys:
        names = list_attr(h5, h5.file, "layer_names") or []
        # transformers' shards list dataset paths; save_weights lists layer groups
        if names and all(not _is_group(h5, n) for n in names[:16]):
            return "hf-tf-h5-shard"
        return "keras2-h5"
    if members & {"layers", "vars", "optimizer"}:
        return "keras3-weights-h5"
    raise UnsupportedFormatError(
        "HDF5 file without a Keras weights layout (no layer_names, model_weights or layers/vars)", h5.label
    )


def _is_group(h5: SafeH5, path: str) -> bool:
    import h5py

    return h5.has(path) and isinstance(h5.get(path), h5py.Group)


# -- Keras 2 ---------------------------------------------------------------------

def _read_keras2_weights(h5: SafeH5, file: str, prefix: str, warnings: list[str]) -> list[TensorInfo]:
    """Layout 1 at ``prefix`` ('' or 'model_weights/')."""
    root = h5.get(prefix) if prefix else h5.file
    layer_names = list_attr(h5, root, "layer_names")
    if layer_names is None:
        raise CorruptCheckpointError(f"/{prefix} has no layer_names attribute", h5.label)
    all_entries = {e.path: e for e in h5.walk(prefix.rstrip("/"))}
    out: list[TensorInfo] = []
    listed: set[str] = set()
    weight_names: dict[str, list[str]] = {}
    for layer in layer_names:
        group_path = f"{prefix}{layer}"
        if not h5.has(group_path):
            raise CorruptCheckpointError(f"layer_names lists {layer!r} but there is no group /{group_path}", h5.label)
        group = h5.get(group_path)
        names = list_attr(h5, group, "weight_names") or []
        weight_names[layer] = names
        for wn in names:
            path = f"{group_path}/{wn}"
            entry = all_entries.get(path)
            if entry is None:
                raise CorruptCheckpointError(f"layer {layer!r} lists weight {wn!r} but /{path} is not stored", h5.label)
            listed.add(path)
            out.append(_info(entry, file, layer=layer, h5=h5))
    unlisted = [e for p, e in all_entries.items() if p not in listed]
    for entry in unlisted:
        out.append(_info(entry, file, h5=h5))
    if unlisted:
        warnings.append(f"{len(unlisted)} dataset(s) not listed in any layer's weight_names (listed at the end)")
    return out


def _root_attrs(h5: SafeH5, obj, skip: tuple[str, ...] = ()) -> dict:
    out = {}
    for k in h5.attr_names(obj):
        if k.startswith(("layer_names", "weight_names")) or k in skip:
            continue
        out[k] = h5.attr(obj, k)
    return out


def _single(found: Recognised) -> tuple[str, SafeH5, H5Store]:
    """A single HDF5 file's path, its file (opened by recognition) and a store that owns it."""
    store = H5Store()
    store.files.append(found.h5)
    return found.path, found.h5, store


def open_keras2(found: Recognised) -> Checkpoint:
    path, h5, store = _single(found)
    warnings: list[str] = []
    tensors = _read_keras2_weights(h5, path, "", warnings)
    meta = _root_attrs(h5, h5.file)
    return Checkpoint("keras2-h5", path, [path], {t.name: t for t in tensors}, metadata=meta,
                      warnings=warnings, store=store)


def open_keras2_full(found: Recognised) -> Checkpoint:
    path, h5, store = _single(found)
    warnings: list[str] = []
    tensors = _read_keras2_weights(h5, path, "model_weights/", warnings)
    if h5.has("optimizer_weights"):
        list_attr(h5, h5.get("optimizer_weights"), "weight_names")  # checked like every name list, not kept
        for entry in h5.walk("optimizer_weights"):
            tensors.append(_info(entry, path, role=Role.OPTIMIZER, h5=h5))
    meta = _root_attrs(h5, h5.file, skip=("model_config", "training_config"))
    model_weights_meta = _root_attrs(h5, h5.get("model_weights"))
    for k, v in model_weights_meta.items():
        meta.setdefault(k, v)
    config = training = None
    keys = set(h5.attr_names(h5.file))
    if "model_config" in keys:
        config = h5.json_attr(h5.file, "model_config")
    if "training_config" in keys:
        training = h5.json_attr(h5.file, "training_config")
    return Checkpoint("keras2-full-h5", path, [path], {t.name: t for t in tensors}, config=config,
                      config_source=f"{path}:model_config" if config is not None else None,
                      metadata=meta, warnings=warnings, store=store, training_config=training)


def _read_hf_shard(h5: SafeH5, file: str) -> list[TensorInfo]:
    names = list_attr(h5, h5.file, "layer_names") or []
    entries = {e.path: e for e in h5.walk()}
    out = []
    for n in names:
        entry = entries.get(n.strip("/"))
        if entry is None:
            raise CorruptCheckpointError(f"layer_names lists {n!r} but no such dataset is stored", h5.label)
        out.append(_info(entry, file, h5=h5))
    return out


def open_hf_shard(found: Recognised) -> Checkpoint:
    path, h5, store = _single(found)
    tensors = _read_hf_shard(h5, path)
    return Checkpoint("hf-tf-h5-shard", path, [path], {t.name: t for t in tensors},
                      metadata=_root_attrs(h5, h5.file), store=store)


def open_hf_sharded(found: Recognised) -> Checkpoint:
    assert found.index is not None
    index_path = found.path
    index, weight_map, shards = found.index
    store = H5Store()
    tensors: dict[str, TensorInfo] = {}
    meta: dict = {}
    try:
        for shard in shards:
            h5 = SafeH5(shard, shard)
            store.files.append(h5)
            for info in _read_hf_shard(h5, shard):
                if info.name in tensors:
                    raise CorruptCheckpointError(f"tensor {info.name!r} is stored in two shards", index_path)
                tensors[info.name] = info
            for k, v in _root_attrs(h5, h5.file).items():
                meta.setdefault(k, v)
        for name, files in weight_map.items():
            if name not in tensors and "/" in name:
                # transformers' index keys carry the model's name as first
                # component ("tfgpt2lm_head_model/..."); the shards drop it.
                name = name.split("/", 1)[1]
            if name not in tensors:
                raise CorruptCheckpointError(f"the index lists tensor {name!r} but no shard stores it", index_path)
            if os.path.basename(tensors[name].file) not in files:
                raise CorruptCheckpointError(f"tensor {name!r} is not in the shard the index names ({files[0]})",
                                             index_path)
    except BaseException:
        store.close()
        raise
    return Checkpoint("hf-tf-h5-sharded", index_path, [index_path] + shards, tensors, metadata=meta, store=store)


# -- Keras 3 ---------------------------------------------------------------------

def _read_keras3(h5: SafeH5, file: str, base_offset: int | None) -> tuple[list[TensorInfo], dict[str, str | None]]:
    """Every variable, and the ``vars`` group -> layer name map."""
    out = []
    layer_names: dict[str, str | None] = {}
    for entry in h5.walk():
        parts = entry.path.split("/")
        role = KERAS3_ROLES.get(parts[0], Role.WEIGHT)
        vars_group = "/".join(parts[:-1])
        if vars_group not in layer_names:
            group = h5.get(vars_group) if vars_group else h5.file
            name = h5.attr(group, "name") if "name" in h5.attr_names(group) else None
            layer_names[vars_group] = name if isinstance(name, str) else None
        out.append(_info(entry, file, role=role, layer=layer_names[vars_group], h5=h5, base_offset=base_offset))
    return out, layer_names


def open_keras3_weights(found: Recognised) -> Checkpoint:
    path, h5, store = _single(found)
    tensors, _names = _read_keras3(h5, path, 0)
    return Checkpoint("keras3-weights-h5", path, [path], {t.name: t for t in tensors},
                      metadata=_root_attrs(h5, h5.file), store=store)


def open_keras3_sharded(found: Recognised) -> Checkpoint:
    assert found.index is not None
    index_path = found.path
    index, weight_map, shards = found.index
    store = H5Store()
    tensors: dict[str, TensorInfo] = {}
    names: dict[str, str | None] = {}
    try:
        for shard in shards:
            h5 = SafeH5(shard, shard)
            store.files.append(h5)
            if root_kind(h5) != "keras3-weights-h5":
                raise CorruptCheckpointError("shard is not a Keras 3 weights file", shard)
            infos, shard_names = _read_keras3(h5, shard, 0)
            for k, v in shard_names.items():
                names.setdefault(k, v)
            for info in infos:
                if info.name in tensors:
                    raise CorruptCheckpointError(f"variable {info.name!r} is stored in two shards", index_path)
                tensors[info.name] = info
    except BaseException:
        store.close()
        raise
    return Checkpoint("keras3-weights-sharded", index_path, [index_path] + shards, tensors,
                      metadata=dict(index.get("metadata") or {}), store=store)


# -- .keras archives ---------------------------------------------------------------

MAX_MEMBER_EXPANSION = 100  # keras writes members stored (1:1); DEFLATE tops out near 1032:1
MEMBER_BOMB_FLOOR = 64 * 1024 * 1024


def _check_members(z: zipfile.ZipFile, path: str) -> dict[str, zipfile.ZipInfo]:
    members = {}
    for info in z.infolist():
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
            raise UnsafeCheckpointError(f"archive member {name!r} points outside the archive; refused", path)
        if info.flag_bits & 0x1:  # Keras never encrypts; zipfile would ask for a password
            raise UnsupportedFormatError(f"archive member {name!r} is encrypted (Keras cannot read it either)", path)
        members[name] = info
    return members


def _member_data_offset(path: str, info: zipfile.ZipInfo) -> int:
    """Absolute offset of a stored member's bytes (after its local header)."""
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        head = fh.read(30)
    if len(head) != 30 or head[:4] != b"PK\x03\x04":
        raise CorruptCheckpointError(f"archive member {info.filename!r} has a broken local header", path)
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, limit: int) -> bytes:
    import zipfile

    if info.file_size > limit:
        raise UnsafeCheckpointError(f"archive member {info.filename!r} is {info.file_size} bytes (limit {limit})", path)
    try:
        with z.open(info) as fh:
            data = fh.read(limit + 1)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
        raise CorruptCheckpointError(f"cannot read archive member {info.filename!r} ({exc})", path) from None
    except Exception as exc:  # zlib.error and friends
        raise CorruptCheckpointError(f"cannot read archive member {info.filename!r} ({exc})", path) from None
    if len(data) > limit:
        raise UnsafeCheckpointError(f"archive member {info.filename!r} is larger than it declares", path)
    return data


def open_keras_archive(found: Recognised) -> Checkpoint:
    import zipfile

    path = found.path
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CorruptCheckpointError(f"not a readable .keras (zip) archive ({exc})", path) from None
    store = H5Store()
    store.extra.append(z)
    try:
        members = _check_members(z, path)
        if "model.weights.h5" not in members:
            raise CorruptCheckpointError(
                "archive has no model.weights.h5 (members: " + bounded(sorted(members)) + ")", path
            )
        config = None
        texts: dict[str, str] = {}  # the members' text as stored, for writing them back byte for byte
        if "config.json" in members:
            raw = _read_member(z, members["config.json"], path, configlib.MAX_CONFIG_BYTES)
            config = configlib.parse_json_text(raw, f"{path}:config.json")
            texts["config.json"] = raw.decode("utf-8")
        metadata: dict = {}
        if "metadata.json" in members:
            raw = _read_member(z, members["metadata.json"], path, 1024 * 1024)
            value = configlib.parse_json_text(raw, f"{path}:metadata.json")
            texts["metadata.json"] = raw.decode("utf-8")
            if isinstance(value, dict):
                metadata = value
        winfo = members["model.weights.h5"]
        if winfo.file_size > MEMBER_BOMB_FLOOR and winfo.file_size > MAX_MEMBER_EXPANSION * max(winfo.compress_size, 1):
            raise UnsafeCheckpointError(
                f"archive member model.weights.h5 declares {winfo.file_size} bytes but stores {winfo.compress_size}; "
                "refused as a decompression bomb",
                path,
            )
        base = _member_data_offset(path, winfo) if winfo.compress_type == zipfile.ZIP_STORED else None
        if base is not None and base + winfo.file_size > os.path.getsize(path):
            raise CorruptCheckpointError("archive member model.weights.h5 runs past the end of the file: truncated?",
                                         path)
        try:
            member = z.open(winfo)
        except (zipfile.BadZipFile, OSError, NotImplementedError) as exc:
            raise CorruptCheckpointError(f"cannot open archive member model.weights.h5 ({exc})", path) from None
        store.extra.insert(0, member)
        h5 = SafeH5(member, f"{path}:model.weights.h5", file_size=winfo.file_size)
        store.files.append(h5)
        tensors, names = _read_keras3(h5, path, base)
    except BaseException:
        store.close()
        raise
    return Checkpoint(
        "keras3-archive", path, [path], {t.name: t for t in tensors}, config=config,
        config_source=f"{path}:config.json" if config is not None else None, metadata=metadata,
        archive=KerasArchive(tuple(sorted(members)), texts,
                             tuple({"name": i.filename, "date_time": list(i.date_time)} for i in z.infolist())),
        store=store,
    )
