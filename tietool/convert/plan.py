"""What a conversion writes, as data: the plan both naming schemes build.

A :class:`Plan` is a list of :class:`OutputFile` s (a safetensors file, an
HDF5 file, a ``.keras`` archive or a text file such as a shard index), each
listing the :class:`TensorOut` s it holds: the output name, the source tensor
whose bytes it gets and how (``transform``: the bytes as stored, a 2-D
transpose or an axis permutation). Everything the writer and the verifier
need is in the plan; nothing is written while planning.

One shard splitter (:func:`split_shards`) and one index writer
(:func:`index_text`) serve both naming schemes: shards are named
``STEM-0000i-of-0000N.safetensors`` beside ``STEM.safetensors.index.json``
(``{"metadata": {"total_parameters", "total_size"}, "weight_map"}``, keys
sorted, as transformers writes it).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Protocol, Union, runtime_checkable

from ..errors import UsageError
from ..model import TensorInfo
from .result import PtDetails

#: ``progress(phase, bytes done, bytes total)``; phases ``"write"`` and ``"verify"``.
ProgressFn = Callable[[str, int, int], None]

@runtime_checkable
class Assembled(Protocol):
    """A tensor built from parts of stored tensors, writing and verifying itself
    (:class:`tietool.convert.kerashub_hf.assemble.Assembly`)."""

    def write_into(self, ckpt: Any, fd: int, pos: int, tick: Callable[[int], None] | None) -> None: ...

    def same_as(self, ckpt: Any, got: Any, g: TensorInfo, tick: Callable[[int], None] | None = None) -> bool: ...


#: How an output tensor's bytes come from its source: None, ``"squeeze0"`` and
#: ``"reshape"`` keep the bytes as stored (only the shape changes);
#: ``"transpose"`` (2-D) and an axis permutation (a tuple) move them; an
#: :class:`Assembled` builds them from parts of several.
Transform = Union[None, str, tuple, Assembled]
SAME_BYTES = (None, "squeeze0", "reshape")

OutputKind = Literal["safetensors", "h5", "keras", "text", "bytes"]

SUFFIXES = (".safetensors.index.json", ".h5.index.json", ".weights.json", ".weights.h5", ".safetensors",
            ".hdf5", ".h5", ".keras", ".json")


@dataclass(frozen=True)
class TensorOut:
    """One tensor of an output file."""

    name: str  # the name in the output (a dataset path for HDF5)
    source: TensorInfo  # the stored tensor whose bytes it gets
    shape: tuple[int, ...]  # the output shape
    transform: Transform = None

    @property
    def same_bytes(self) -> bool:
        return self.transform in SAME_BYTES

    @property
    def info(self) -> TensorInfo:
        """The output tensor as a :class:`TensorInfo` (name, shape, dtype, size)."""
        s = self.source
        return TensorInfo(name=self.name, shape=tuple(self.shape), dtype=s.dtype, nbytes=s.nbytes, file=s.file)


@dataclass(frozen=True)
class OutputFile:
    """One file of the output.

    * ``safetensors``: ``tensors`` in file order, ``metadata`` its ``__metadata__``.
    * ``h5``: ``tree`` (:mod:`tietool.formats.h5_writer`), one tensor per dataset
      (``TensorOut.name`` is the dataset path).
    * ``keras``: as ``h5`` for ``model.weights.h5``, plus ``texts`` (member name
      -> text) and ``members`` (recorded order and timestamps, or None).
    * ``text``: ``text`` written as UTF-8; ``bytes``: ``content`` written as it is.
    """

    name: str  # file name inside the output folder (or of the single output file)
    kind: OutputKind
    tensors: tuple[TensorOut, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    tree: dict | None = None
    texts: dict[str, str] = field(default_factory=dict)
    members: list[dict] | None = None
    text: str = ""
    content: bytes = b""  # a ``bytes`` output's content (a keras-hub preset's vocabulary.spm)

    @property
    def nbytes(self) -> int:
        return sum(t.source.nbytes for t in self.tensors)

    def data(self) -> dict[str, TensorInfo]:
        """``{dataset path: source tensor}`` (HDF5 and .keras outputs)."""
        return {t.name: t.source for t in self.tensors}


@dataclass(frozen=True)
class Plan:
    """Every file a conversion writes, and what the summary reports about it."""

    outputs: tuple[OutputFile, ...]
    multi: bool = False  # several files: the output is a folder
    aliases: dict[str, str] = field(default_factory=dict)  # removed copy -> the name it is written under
    tf_names: bool = False  # safetensors names are transformers' TF names, not dataset paths
    pt: PtDetails | None = None  # what --names pt adds to the summary

    @property
    def tensors(self) -> list[TensorOut]:
        return [t for o in self.outputs for t in o.tensors]

    @property
    def nbytes(self) -> int:
        return sum(o.nbytes for o in self.outputs)


# -- names and sizes -----------------------------------------------------------------

def parse_size(text: str | int | None) -> int | None:
    """``"500MB"`` -> 500_000_000, ``"2GiB"`` -> 2*2**30, ``"100B"`` -> 100;
    an int (the library's callers) is bytes. A string needs its unit: a bare
    ``5`` would be 5 bytes, never what ``--shard-size 5`` means."""
    if text is None or isinstance(text, int):
        return text
    s = text.strip().upper().replace(" ", "")
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "KB": 10**3, "MB": 10**6, "GB": 10**9,
             "TB": 10**12, "K": 10**3, "M": 10**6, "G": 10**9, "B": 1}
    for u, m in units.items():
        if s.endswith(u):
            num, mult = s[: -len(u)], m
            break
    else:
        if s.replace(".", "", 1).isdigit():
            raise UsageError(f"size {text!r} needs a unit: e.g. 5GB, 500MB or 2GiB (B for bytes)")
        num, mult = s, 1  # refused below, as any other text
    try:
        value = int(float(num) * mult)
    except ValueError:
        raise UsageError(f"bad size {text!r} (use e.g. 500MB, 5GB, 2GiB)") from None
    if value <= 0:
        raise UsageError(f"bad size {text!r}: must be positive")
    return value


def stem(name: str) -> str:
    """A checkpoint file name without its (possibly double) extension."""
    for suf in SUFFIXES:
        if name.endswith(suf) and len(name) > len(suf):
            return name[: -len(suf)]
    return os.path.splitext(name)[0] or name


# -- shards and the index ------------------------------------------------------------

def split_shards(tensors: list[TensorOut], shard_bytes: int | None) -> list[list[TensorOut]]:
    """Consecutive runs of ``tensors`` of at most ``shard_bytes`` each (a tensor
    larger than that is a shard of its own); one run without a limit."""
    shards: list[list[TensorOut]] = [[]]
    size = 0
    for t in tensors:
        if shard_bytes is not None and shards[-1] and size + t.source.nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.source.nbytes
    return shards


def index_name(file_stem: str) -> str:
    return f"{file_stem}.safetensors.index.json"


def safetensors_outputs(tensors: list[TensorOut], metadata: dict[str, str], name: str,
                        shard_bytes: int | None) -> list[OutputFile]:
    """``name`` (one file), or past ``shard_bytes`` the shards of ``stem(name)``
    and their index; every shard carries ``metadata``."""
    shards = split_shards(tensors, shard_bytes)
    if len(shards) == 1:
        return [OutputFile(name, "safetensors", tuple(tensors), metadata)]
    file_stem = stem(name)
    n = len(shards)
    outputs = [OutputFile(f"{file_stem}-{i:05d}-of-{n:05d}.safetensors", "safetensors", tuple(s), metadata)
               for i, s in enumerate(shards, 1)]
    outputs.append(OutputFile(index_name(file_stem), "text", text=index_text(outputs)))
    return outputs


def index_text(shards: list[OutputFile]) -> str:
    """The ``*.safetensors.index.json`` of ``shards``, as transformers writes it."""
    tensors = [t for s in shards for t in s.tensors]
    index = {
        "metadata": {"total_parameters": sum(math.prod(t.shape) for t in tensors),
                     "total_size": sum(t.source.nbytes for t in tensors)},
        "weight_map": {t.name: s.name for s in shards for t in s.tensors},
    }
    return json.dumps(index, indent=2, sort_keys=True) + "\n"
