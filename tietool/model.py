"""The format-neutral checkpoint model.

Every reader turns its layout into a :class:`Checkpoint`: an ordered mapping
of stored tensors (:class:`TensorInfo`: name, shape, dtype, size and where the
bytes live), the config, the metadata and the typed facts a writer needs to restore the
source (``training_config``, ``archive``, ``folder``/``folder_files``). Opening reads headers and attributes
only; tensor data is read on request, whole or in bounded row blocks, through
the format's :class:`TensorStore`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterator, Protocol, runtime_checkable

import numpy as np

from . import dtypes
from .blocks import BLOCK_BYTES
from .errors import TensorNotFoundError

#: Default bound on one block of tensor data held in memory while streaming
#: (:data:`tietool.blocks.BLOCK_BYTES`).
CHUNK_BYTES = BLOCK_BYTES



class Role(str, Enum):
    """What a stored tensor is (serialised as its value: ``"weight"`` ...)."""

    WEIGHT = "weight"  # a model weight
    OPTIMIZER = "optimizer"  # optimizer state (Keras 2 full model, Keras 3 optimizer/)
    METRIC = "metric"  # a Keras 3 metric's variable

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class TieRole(str, Enum):
    """What a member of a tie group is (serialised as its value)."""

    EMBEDDING = "embedding"  # the input embedding matrix (or a copy of it)
    DECODER = "decoder"  # the output projection (LM head)

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@dataclass(frozen=True)
class TensorInfo:
    name: str  # unique in the checkpoint (for HDF5: the full dataset path)
    shape: tuple[int, ...]
    dtype: str  # canonical dtype name, see tietool.dtypes
    nbytes: int
    file: str  # the file on disk that holds the bytes (the archive, for .keras)
    offset: int | None = None  # absolute byte offset in `file` when stored contiguous and raw
    role: Role = Role.WEIGHT
    layer: str | None = None  # Keras layer (group) the weight belongs to, when known
    storage_key: Any = None  # equal keys = one stored object (HDF5 hard links)
    alias_of: str | None = None  # safetensors dedup metadata: removed name -> kept name
    locator: Any = field(default=None, compare=False, repr=False)  # format-private

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def computable(self) -> bool:
        """Its bytes can be handled as a numpy array: every dtype of the table
        can (bfloat16 and float8 as unsigned integers, :mod:`tietool.dtypes`)."""
        return self.dtype in dtypes.DTYPES

    def as_dict(self) -> dict:
        d = {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "nbytes": self.nbytes,
            "file": self.file,
            "offset": self.offset,
            "role": self.role,
        }
        if self.layer is not None:
            d["layer"] = self.layer
        if self.alias_of is not None:
            d["alias_of"] = self.alias_of
        return d


@dataclass(frozen=True)
class KerasArchive:
    """What a ``.keras`` archive holds besides the weights, to write it back."""

    members: tuple[str, ...]  # every member name
    member_texts: dict[str, str]  # config.json / metadata.json as stored (text)
    entries: tuple[dict, ...]  # {"name", "date_time"} per member, in archive order


@dataclass(frozen=True)
class RecordedFile:
    """One HDF5 file a layout record describes, checked: ``name`` is a plain
    file name, ``tree`` a valid tree (:mod:`tietool.formats.h5_writer`), and
    every dataset path maps to the stored tensor that holds its bytes."""

    name: str
    tree: dict
    tensors: dict[str, str]  # dataset path -> stored tensor name


@dataclass(frozen=True)
class RecordedText:
    """A text file a record carries verbatim (a shard index)."""

    name: str
    text: str


@dataclass(frozen=True)
class Layout:
    """``tietool.layout``: the HDF5 file(s) a safetensors file was converted from."""

    source_format: str
    files: tuple[RecordedFile, ...]
    index: RecordedText | None = None
    archive: tuple[dict, ...] | None = None  # a .keras archive's members: {"name", "date_time"} in order
    copies: dict[str, str] = field(default_factory=dict)  # dataset path -> kept tensor, for removed copies


@dataclass(frozen=True)
class SafetensorsOrigin:
    """``tietool.safetensors``: the safetensors file an HDF5 file was converted from."""

    file: str  # a plain file name ending in .safetensors
    metadata: dict[str, str]


@dataclass
class Records:
    """tietool's own records in a checkpoint, parsed once and checked
    (:mod:`tietool.formats.records`); a record that is wrong is not used and
    its problem is kept in ``problems`` (record key -> what is wrong)."""

    layout: Layout | None = None
    names: dict[str, str] | None = None  # tietool.names: dataset path -> tensor name
    config_text: str | None = None  # tietool.config
    keras_metadata_text: str | None = None  # tietool.keras_metadata (a .keras metadata.json)
    keras_metadata: dict | None = None  # the same, parsed
    safetensors_origin: SafetensorsOrigin | None = None
    aliases: dict[str, str] = field(default_factory=dict)  # safetensors {removed name: kept name}
    problems: dict[str, str] = field(default_factory=dict)


class TensorStore(Protocol):
    """What a reader provides to fetch data for the tensors it listed."""

    def read_rows(self, info: TensorInfo, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` along axis 0 (the whole array for 0-d tensors),
        in stored form (:func:`tietool.dtypes.stored_dtype`), native byte order."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class BlockStore(TensorStore, Protocol):
    """A store that reads a ``rows x cols`` block of a 2-D tensor in one
    request (HDF5: a hyperslab); other stores are read by whole rows."""

    def read_block(self, info: TensorInfo, rows: slice, cols: slice) -> np.ndarray: ...


def close_names(name: str, names) -> str:
    """`` (did you mean 'x'?)`` from the names closest to a mistyped one
    (difflib's ratio), or nothing when none is close; at most three."""
    import difflib

    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.8)
    if not close:
        return ""
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)"


@dataclass
class Checkpoint:
    format: str  # e.g. "keras2-h5", "safetensors"; see tietool.formats
    path: str  # what the user named (file or folder)
    files: list[str]  # every file read, weights and config alike
    tensors: dict[str, TensorInfo]
    config: dict | None = None
    config_source: str | None = None  # file (or file:attribute) the config came from
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    store: TensorStore | None = field(default=None, repr=False)
    training_config: dict | None = None  # Keras 2 full-model HDF5: the training_config attribute (JSON data)
    archive: KerasArchive | None = None  # a .keras archive's other members
    folder: str | None = None  # the model folder the weights were found in (Hugging Face layout)
    folder_files: list[str] = field(default_factory=list)  # the folder's other files (names), config.json included
    records: Records = field(default_factory=Records)  # tietool's own records (tietool.formats.records)

    # -- access -----------------------------------------------------------
    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def __iter__(self) -> Iterator[TensorInfo]:
        return iter(self.tensors.values())

    def __len__(self) -> int:
        return len(self.tensors)

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise TensorNotFoundError(f"no tensor named {name!r}{close_names(name, self.tensors)}", self.path) from None

    def weights(self) -> list[TensorInfo]:
        return [t for t in self.tensors.values() if t.role == Role.WEIGHT]

    # -- data -------------------------------------------------------------
    @property
    def data(self) -> TensorStore:
        """The store tensor data is read through (an error once closed)."""
        if self.store is None:
            raise ValueError(f"{self.path}: the checkpoint is closed")
        return self.store

    def read(self, name: str) -> np.ndarray:
        """The whole tensor's values as a numpy array (native byte order;
        bfloat16 and float8 as ``ml_dtypes`` arrays)."""
        return dtypes.as_values(self.read_stored(name), self.info(name).dtype)

    def read_stored(self, name: str) -> np.ndarray:
        """The whole tensor in stored form, for work on its bytes: bfloat16 and
        float8 as unsigned integers of their width (no ``ml_dtypes`` needed)."""
        info = self.info(name)
        return self.data.read_rows(info, 0, info.shape[0] if info.shape else 1)

    def rows_per_chunk(self, info: TensorInfo, max_bytes: int = CHUNK_BYTES) -> int:
        if not info.shape or info.shape[0] == 0:
            return 1
        row_bytes = max(1, info.nbytes // info.shape[0])
        return max(1, max_bytes // row_bytes)

    def iter_chunks(self, name: str, max_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_row, block)`` along axis 0, each block at most
        ``max_bytes`` (or one row, if a row is larger), as values (see :meth:`read`)."""
        dtype = self.info(name).dtype
        for start, block in self.iter_stored(name, max_bytes):
            yield start, dtypes.as_values(block, dtype)

    def iter_stored(self, name: str, max_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, np.ndarray]]:
        """:meth:`iter_chunks` in stored form (see :meth:`read_stored`)."""
        info = self.info(name)
        if not info.shape:
            yield 0, self.data.read_rows(info, 0, 1)
            return
        step = self.rows_per_chunk(info, max_bytes)
        for start in range(0, info.shape[0], step):
            stop = min(info.shape[0], start + step)
            yield start, self.data.read_rows(info, start, stop)

    @property
    def origin_format(self) -> str:
        """The layout the weights were first written in: a safetensors file
        that tietool converted from HDF5 records it in ``tietool.layout``."""
        layout = self.records.layout
        return layout.source_format if layout is not None else self.format

    # -- summary ----------------------------------------------------------
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def parameter_count(self) -> int:
        """Elements of the stored model weights (optimizer state excluded)."""
        return sum(t.numel for t in self.weights())
