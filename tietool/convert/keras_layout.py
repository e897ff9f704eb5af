"""What ``--names keras`` records so that a conversion can be undone: the HDF5
layout (``tietool.layout``), the config and ``.keras`` member texts, and
reading a recorded layout back. The ``__metadata__`` keys are described in
:mod:`tietool.convert` (package docstring)."""

from __future__ import annotations

import copy
import json
import os

from tietool.io.h5safe import SafeH5

from ..errors import CorruptCheckpointError
from ..formats import format_of, records
from ..formats.keras_h5 import H5Store
from ..formats.records import CONFIG_KEY, KERAS_METADATA_KEY, LAYOUT_KEY
from ..model import Checkpoint, Layout, TensorInfo
from .plan import TensorOut, stem


def h5_files(ckpt: Checkpoint) -> list[SafeH5]:
    """The open HDF5 file(s) of an HDF5 / .keras checkpoint."""
    store = ckpt.store
    if not isinstance(store, H5Store) or not store.files:
        raise CorruptCheckpointError("no HDF5 file to describe", ckpt.path)
    return list(store.files)


def outs(data: dict[str, TensorInfo]) -> tuple[TensorOut, ...]:
    """One output tensor per HDF5 dataset path, bytes and shape as stored."""
    return tuple(TensorOut(path, info, tuple(info.shape)) for path, info in data.items())


def h5_layout(ckpt: Checkpoint) -> dict:
    """``tietool.layout``: every HDF5 file's tree, the shard index text."""
    from tietool.formats.h5_writer import describe_h5

    fmt = format_of(ckpt)
    files = []
    for h5 in h5_files(ckpt):
        # a .keras archive's member becomes <archive stem>.weights.h5
        name = stem(os.path.basename(ckpt.files[0])) + ".weights.h5" if fmt.is_archive else os.path.basename(h5.label)
        files.append({"name": name, "tree": describe_h5(h5)})
    index = None
    if fmt.sharded:
        index_path = ckpt.files[0]
        with open(index_path, encoding="utf-8") as fh:
            index = {"name": os.path.basename(index_path), "text": fh.read()}
    out = {"tietool": 1, "source_format": ckpt.format, "files": files, "index": index}
    if fmt.is_archive:
        out["archive"] = ([dict(e) for e in ckpt.archive.entries] if ckpt.archive else None)
    return out


def config_text(ckpt: Checkpoint) -> str | None:
    """The config as stored: a .keras archive's config.json text, the text
    tietool recorded, else the config re-encoded as JSON."""
    stored = (ckpt.archive.member_texts if ckpt.archive else {}).get("config.json")
    if stored is not None:
        return stored
    records.require(ckpt, CONFIG_KEY)  # carried into the output: never dropped silently
    value = ckpt.records.config_text
    if value is not None and (ckpt.config is None or (ckpt.config_source or "").endswith(CONFIG_KEY)):
        return value
    if ckpt.config is not None:
        return json.dumps(ckpt.config, ensure_ascii=False)
    return None


def keras_metadata_text(ckpt: Checkpoint) -> str | None:
    """A .keras archive's metadata.json text, or the text tietool recorded."""
    stored = (ckpt.archive.member_texts if ckpt.archive else {}).get("metadata.json")
    if stored is not None:
        return stored
    records.require(ckpt, KERAS_METADATA_KEY)
    return ckpt.records.keras_metadata_text


def str_attr(value: str) -> dict:
    """An HDF5 root attribute spec (see :mod:`tietool.formats.h5_writer`) for a text."""
    return {"type": "str", "vlen": True, "cset": "utf8", "size": None, "space": "scalar", "shape": None, "value": value}


def record_keras_texts(ckpt: Checkpoint, tree: dict) -> None:
    """Root attributes ``tietool.config`` / ``tietool.keras_metadata``: the
    archive's config.json and metadata.json, so the H5 can become a .keras
    archive again and ``inspect`` shows its config."""
    root = tree["groups"].setdefault("", {})
    for key, text in ((CONFIG_KEY, config_text(ckpt)), (KERAS_METADATA_KEY, keras_metadata_text(ckpt))):
        if text is not None:
            root[key] = str_attr(text)


def archive_weights(ckpt: Checkpoint) -> tuple[dict, dict[str, TensorInfo]]:
    """The tree and data of a .keras archive's (or a .weights.h5's) weights file."""
    from tietool.formats.h5_writer import describe_h5

    return describe_h5(h5_files(ckpt)[0]), {t.name: t for t in ckpt}


def recorded_layout(ckpt: Checkpoint) -> Layout:
    """The checked ``tietool.layout`` record (exit 2 naming it when it is wrong)."""
    records.require(ckpt, records.NAMES_KEY, LAYOUT_KEY)
    layout = ckpt.records.layout
    if layout is None:
        raise CorruptCheckpointError(f"no {LAYOUT_KEY} record: not converted from HDF5 by tietool", ckpt.path)
    return layout


def recorded_files(ckpt: Checkpoint) -> list[tuple[str, dict, dict[str, TensorInfo]]]:
    """The HDF5 file(s) ``tietool.layout`` records: ``[(name, tree, data)]``;
    a removed copy's dataset is written again from the tensor its alias
    names. Each tree is a copy (the plans add root attributes to it)."""
    return [(f.name, copy.deepcopy(f.tree), {path: ckpt.tensors[name] for path, name in f.tensors.items()})
            for f in recorded_layout(ckpt).files]
