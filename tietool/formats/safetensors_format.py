"""safetensors, single file and sharded (``*.safetensors.index.json``).

The header is parsed here, not by the safetensors library, so that every
violation gets a message naming the file and the tensor, and so that nothing
but the header is read when opening. The whole header is validated before
any data is touched: length within the file and under 100 MB, a UTF-8 JSON
object without duplicate keys, known dtypes, non-negative shapes, each byte
span equal to ``shape x dtype size``, spans contiguous from 0 with no hole or
overlap and ending at the end of the file, ``__metadata__`` str -> str.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from tietool.io import rawio

from .. import dtypes
from ..errors import CorruptCheckpointError, UnsafeCheckpointError
from ..model import Checkpoint, TensorInfo
from .descriptor import Recognised

MAX_HEADER_BYTES = 100_000_000
#: Tensors in one file, a bound on memory: each costs about 1 KB once parsed (a 29 MB file listing
#: 400,000 took 570 MB; 50,000 take 110 MB). Real shards hold a few thousand at most.
MAX_TENSORS = 50_000


class _DuplicateKey(ValueError):
    pass


class _TooMany(ValueError):
    pass


def _header_objects():
    """The ``object_pairs_hook``: no duplicate keys, and at most
    :data:`MAX_TENSORS` objects (tensor entries) built before giving up."""
    count = [0]

    def hook(pairs):
        count[0] += 1
        if count[0] > MAX_TENSORS + 2:  # the entries, __metadata__ and the header itself
            raise _TooMany()
        out = {}
        for k, v in pairs:
            if k in out:
                raise _DuplicateKey(k)
            out[k] = v
        return out
    return hook


def read_header(path: str) -> tuple[dict[str, dict], dict[str, str], int]:
    """Validated ``(tensors, metadata, data_start)`` of one safetensors file.
    ``tensors`` keeps header order: name -> {dtype, shape, begin, end}."""
    raw, size = _read_header_bytes(path)
    data_start = 8 + len(raw)
    holder = [raw]
    del raw  # the bytes are freed once decoded: at most two copies of a header (up to 100 MB) at once
    header = _parse_header_json(holder, path)
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise CorruptCheckpointError("__metadata__ must map strings to strings", path)
    if len(header) > MAX_TENSORS:
        raise UnsafeCheckpointError(f"header lists more than {MAX_TENSORS} tensors; refused", path)
    data_size = size - data_start
    tensors = {name: _tensor_entry(name, entry, data_size, path) for name, entry in header.items()}
    _check_spans(tensors, data_size, path)
    return tensors, metadata, data_start


def _read_header_bytes(path: str) -> tuple[bytes, int]:
    """The header's bytes (its length checked against the limit and the
    file), and the file's size."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise CorruptCheckpointError(
                    f"file is {size} bytes, too short for a safetensors header" if size else "file is empty", path
                )
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER_BYTES:
                raise UnsafeCheckpointError(f"header length {n} exceeds the 100 MB limit", path)
            if 8 + n > size:
                raise CorruptCheckpointError(f"header length {n} runs past the end of the file ({size} bytes)", path)
            return fh.read(n), size
    except OSError as exc:
        raise CorruptCheckpointError(f"cannot read ({(exc.strerror or str(exc)).lower()})", path) from None


def _parse_header_json(holder: list[bytes], path: str) -> dict:
    """A UTF-8 JSON object without duplicate keys, from the header bytes in
    ``holder`` (taken out of it, so that they are freed once decoded)."""
    try:
        text = holder.pop().decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptCheckpointError("header is not valid UTF-8", path) from None
    try:
        header = json.loads(text, object_pairs_hook=_header_objects())
    except _TooMany:
        raise UnsafeCheckpointError(f"header lists more than {MAX_TENSORS} tensors; refused", path) from None
    except _DuplicateKey as exc:
        raise CorruptCheckpointError(f"header has duplicate key {exc.args[0]!r}", path) from None
    except RecursionError:
        raise CorruptCheckpointError("header JSON nested too deeply", path) from None
    except ValueError as exc:
        raise CorruptCheckpointError(f"header is not valid JSON ({exc})", path) from None
    if not isinstance(header, dict):
        raise CorruptCheckpointError("header is not a JSON object", path)
    return header


def _tensor_entry(name: str, entry: object, data_size: int, path: str) -> dict:
    """One header entry checked: exactly dtype, shape and data_offsets; a
    known dtype; a shape of non-negative integers; a span of exactly
    ``shape x dtype size`` bytes inside the data section."""
    where = f"tensor {name!r}"
    if not isinstance(entry, dict):
        raise CorruptCheckpointError(f"{where}: entry is not an object", path)
    extra = set(entry) - {"dtype", "shape", "data_offsets"}
    if extra or len(entry) != 3:
        missing = {"dtype", "shape", "data_offsets"} - set(entry)
        what = f"missing {sorted(missing)}" if missing else f"unknown keys {sorted(extra)}"
        raise CorruptCheckpointError(f"{where}: {what}", path)
    code = entry["dtype"]
    dt = dtypes.BY_SAFETENSORS.get(code) if isinstance(code, str) else None
    if dt is None:
        raise CorruptCheckpointError(f"{where}: unknown dtype {code!r}", path)
    shape = entry["shape"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise CorruptCheckpointError(f"{where}: shape must be a list of integers", path)
    if any(d < 0 for d in shape):
        raise CorruptCheckpointError(f"{where}: negative dimension in shape {shape}", path)
    offs = entry["data_offsets"]
    if (not isinstance(offs, list) or len(offs) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)):
        raise CorruptCheckpointError(f"{where}: data_offsets must be [begin, end]", path)
    begin, end = offs
    if begin < 0 or end < begin:
        raise CorruptCheckpointError(f"{where}: invalid data_offsets {offs}", path)
    expected = dtypes.nbytes_for(tuple(shape), dt.name)
    if end - begin != expected:
        raise CorruptCheckpointError(
            f"{where}: {shape} {code} needs {expected} bytes but data_offsets span {end - begin}", path
        )
    if end > data_size:
        raise CorruptCheckpointError(
            f"{where}: data ends at byte {end} of the data section, past its end ({data_size} bytes): truncated?",
            path,
        )
    return {"dtype": dt.name, "shape": tuple(shape), "begin": begin, "end": end}


def _check_spans(tensors: dict[str, dict], data_size: int, path: str) -> None:
    """The spans are contiguous from 0, with no hole or overlap, and end the file."""
    pos = 0
    for begin, end, name in sorted((t["begin"], t["end"], name) for name, t in tensors.items()):
        if begin < pos:
            raise CorruptCheckpointError(f"tensor {name!r}: data overlaps the previous tensor", path)
        if begin > pos:
            raise CorruptCheckpointError(f"tensor {name!r}: hole of {begin - pos} bytes before its data", path)
        pos = end
    if pos != data_size:
        raise CorruptCheckpointError(
            f"{data_size - pos} bytes after the last tensor's data (the data section must end the file)", path
        )


class SafetensorsStore:
    def __init__(self) -> None:
        self.handles = rawio.FileHandles()

    def read_rows(self, info: TensorInfo, start: int, stop: int) -> np.ndarray:
        if not info.computable:
            raise CorruptCheckpointError(f"tensor {info.name!r}: dtype {info.dtype} cannot be read as numbers here",
                                         info.file)
        if info.offset is None:  # every safetensors tensor has one (tensor_infos)
            raise CorruptCheckpointError(f"tensor {info.name!r} has no data offset", info.file)
        return rawio.read_rows(self.handles.fd(info.file), info.offset, info.shape, info.dtype, start, stop, info.file)

    def read_bytes(self, info: TensorInfo, offset: int, length: int) -> bytes:
        """``length`` raw bytes of the tensor's data from ``offset`` (as stored, little-endian)."""
        if info.offset is None:
            raise CorruptCheckpointError(f"tensor {info.name!r} has no data offset", info.file)
        return bytes(rawio.read_exact(self.handles.fd(info.file), info.offset + offset, length, info.file))

    def close(self) -> None:
        self.handles.close()


def tensor_infos(path: str, header: dict[str, dict], data_start: int) -> list[TensorInfo]:
    """The stored tensors (aliases in ``__metadata__`` are tietool.formats.records' to read)."""
    out = []
    for name, h in header.items():
        out.append(
            TensorInfo(
                name=name,
                shape=h["shape"],
                dtype=h["dtype"],
                nbytes=h["end"] - h["begin"],
                file=path,
                offset=data_start + h["begin"],
            )
        )
    return out


def open_file(found: Recognised) -> Checkpoint:
    path = found.path
    header, metadata, data_start = read_header(path)
    infos = tensor_infos(path, header, data_start)
    return Checkpoint(
        format="safetensors",
        path=path,
        files=[path],
        tensors={t.name: t for t in infos},
        metadata=dict(metadata),
        store=SafetensorsStore(),
    )


def open_sharded(found: Recognised) -> Checkpoint:
    """A Hub-style sharded safetensors checkpoint (its index checked by
    :mod:`tietool.formats.index` when it was recognised)."""
    assert found.index is not None
    index_path = found.path
    _index, files, shard_paths = found.index
    weight_map = {k: v[0] for k, v in files.items()}
    tensors: dict[str, TensorInfo] = {}
    metadata: dict[str, str] = {}
    for shard in shard_paths:
        header, meta, data_start = read_header(shard)
        for k, v in meta.items():
            metadata.setdefault(k, v)
        for info in tensor_infos(shard, header, data_start):
            if info.name in tensors:
                raise CorruptCheckpointError(
                    f"tensor {info.name!r} is stored in two shards ({os.path.basename(tensors[info.name].file)} "
                    f"and {os.path.basename(shard)})",
                    index_path,
                )
            expected = weight_map.get(info.name)
            if expected is not None and os.path.basename(expected) != os.path.basename(shard):
                raise CorruptCheckpointError(
                    f"tensor {info.name!r} is in {os.path.basename(shard)} but the index says {expected}", index_path
                )
            tensors[info.name] = info
    for name in weight_map:
        if name not in tensors:
            raise CorruptCheckpointError(f"the index lists tensor {name!r} but no shard stores it", index_path)
    return Checkpoint(
        format="safetensors-sharded",
        path=index_path,
        files=[index_path] + shard_paths,
        tensors=tensors,
        metadata=metadata,
        store=SafetensorsStore(),
    )
