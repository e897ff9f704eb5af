"""What tietool knows about each checkpoint format, in one place.

A :class:`Format` describes one layout: its name (``Checkpoint.format``, as
``inspect --json`` prints it), a description, its family, the container it
is written in (what ``convert --to`` names), how :func:`tietool.formats.recognise`
tells it apart, which reader opens it and which side files it keeps. Code
outside :mod:`tietool.formats` asks the descriptor (:func:`format_of`) and
never compares format names.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..model import Checkpoint


class Family(Enum):
    """Who writes the layout, which decides how its tensors are named."""

    SAFETENSORS = "safetensors"  # flat names, __metadata__ of str -> str
    KERAS2 = "keras2"  # Keras 2 save_weights: datasets <layer>/<weight name>, layer_names / weight_names lists
    HF_TF = "hf-tf"  # transformers' sharded TF HDF5: flat shards listing dataset paths
    KERAS3 = "keras3"  # Keras 3: layers/<path>/vars/<i>, variables without names


Container = Literal["safetensors", "h5", "keras"]


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    family: Family
    container: Container  # the file type: what ``convert --to`` calls it
    recognised_by: str  # how recognise() tells this layout from the others
    reader: str  # "module:function" in tietool.formats, called with the Recognised path
    sharded: bool = False  # an index names the shard files (the index is kept beside them)
    side_files: tuple[str, ...] = ()  # what the layout keeps besides tensor data
    transformers_tf: bool = False  # what transformers' TF save_pretrained writes (--names pt reads it)
    optimizer_group: str | None = None  # the root group of optimizer state (Keras 2 full model)

    def __str__(self) -> str:
        return self.name

    @property
    def is_archive(self) -> bool:
        """A zip archive holding the weights file and its side files."""
        return self.container == "keras"

    @property
    def is_safetensors(self) -> bool:
        return self.container == "safetensors"

    @property
    def is_hdf5(self) -> bool:
        """HDF5 files on disk (a .keras archive's HDF5 member excluded)."""
        return self.container == "h5"

    @property
    def layer_paths(self) -> bool:
        """Dataset paths are ``<layer group>/<weight name>`` (Keras 2 save_weights)."""
        return self.family is Family.KERAS2

    @property
    def tf_model_h5(self) -> bool:
        """transformers' TF ``tf_model.h5``: a dataset path is ``<layer>/<TF variable name>``."""
        return self.transformers_tf and self.layer_paths

    @property
    def records_in(self) -> str:
        """Where tietool's records (``tietool.config`` ...) are kept in this layout."""
        return "__metadata__" if self.is_safetensors else "root attribute"

    def read(self, found: Recognised) -> Checkpoint:
        """Open what :func:`tietool.formats.recognise` found, as this format."""
        module, function = self.reader.split(":")
        return getattr(importlib.import_module(f"tietool.formats.{module}"), function)(found)


_HDF5 = "an HDF5 signature"
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("keras2-h5", "Keras 2 save_weights HDF5 (transformers TF tf_model.h5)", Family.KERAS2, "h5",
           f"{_HDF5}; root layer_names listing layer groups", "keras_h5:open_keras2", transformers_tf=True),
    Format("keras2-full-h5", "Keras 2 full-model HDF5 (model.save('x.h5'))", Family.KERAS2, "h5",
           f"{_HDF5}; a model_weights group", "keras_h5:open_keras2_full",
           side_files=("model_config", "training_config"), optimizer_group="optimizer_weights"),
    Format("hf-tf-h5-sharded", "Hugging Face sharded TF HDF5: tf_model.h5.index.json and its shards", Family.HF_TF,
           "h5",
           "a .json shard index whose weight_map names .h5 files", "keras_h5:open_hf_sharded", sharded=True,
           side_files=("shard index",), transformers_tf=True),
    Format("hf-tf-h5-shard", "one shard of a Hugging Face sharded TF HDF5", Family.HF_TF, "h5",
           f"{_HDF5}; root layer_names listing datasets", "keras_h5:open_hf_shard"),
    Format("keras3-weights-h5", "Keras 3 .weights.h5", Family.KERAS3, "h5",
           f"{_HDF5}; root layers / vars / optimizer groups", "keras_h5:open_keras3_weights"),
    Format("keras3-weights-sharded", "Keras 3 sharded weights: NAME.weights.json and its shards", Family.KERAS3, "h5",
           "a .weights.json shard index", "keras_h5:open_keras3_sharded", sharded=True,
           side_files=("shard index",)),
    Format("keras3-archive", "Keras 3 .keras archive", Family.KERAS3, "keras",
           "a zip signature (.keras)", "keras_h5:open_keras_archive",
           side_files=("config.json", "metadata.json")),
    Format("safetensors", "safetensors", Family.SAFETENSORS, "safetensors",
           "a .safetensors name, or an 8-byte header length then '{'", "safetensors_format:open_file"),
    Format("safetensors-sharded", "sharded safetensors: model.safetensors.index.json and its shards",
           Family.SAFETENSORS, "safetensors", "a .json shard index whose weight_map names .safetensors files",
           "safetensors_format:open_sharded", sharded=True, side_files=("shard index",)),
)}


#: An output file name's suffix -> the container it asks for (``convert -o x.keras``).
CONTAINER_SUFFIXES: tuple[tuple[str, Container], ...] = (
    (".keras", "keras"), (".safetensors", "safetensors"), (".h5", "h5"), (".hdf5", "h5"))
#: Names of weight files of any format (tietool's and others'), never carried beside an output.
WEIGHT_SUFFIXES = (".h5", ".hdf5", ".safetensors", ".bin", ".msgpack", ".keras", ".pt", ".pth", ".ckpt",
                   ".h5.index.json", ".safetensors.index.json", ".bin.index.json", ".weights.json")


def get_format(name: str) -> Format:
    """The descriptor of the format called ``name``."""
    return FORMATS[name]


def format_of(ckpt: Checkpoint) -> Format:
    """The format ``ckpt`` was read in."""
    return FORMATS[ckpt.format]


def origin_of(ckpt: Checkpoint) -> Format:
    """The format ``ckpt``'s weights were first written in (tietool's record
    of a conversion; else the format it was read in)."""
    return FORMATS.get(ckpt.origin_format, FORMATS[ckpt.format])


@dataclass
class Recognised:
    """A path whose format :func:`tietool.formats.recognise` told, with what it
    opened or parsed to tell it (handed to the reader, never read twice)."""

    format: Format
    path: str  # the weights file, shard index or archive
    h5: Any = None  # the open SafeH5 of a single HDF5 file (the reader's store takes it over)
    index: tuple[dict, dict[str, list[str]], list[str]] | None = None  # a shard index: (index, weight_map, shards)

    def close(self) -> None:
        if self.h5 is not None:
            self.h5.close()
