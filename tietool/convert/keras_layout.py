"""What ``--names keras`` records so that a conversion can be undone: the HDF5
layout (``tietool.layout``), the config and ``.keras`` member texts, and
reading a recorded layout back. The ``__metadata__`` keys are described in
:mod:`tietool.convert` (package docstring)."""

from __future__ import annotations

import json
import os

from tietool.io.h5safe import SafeH5

from ..errors import CorruptCheckpointError
from ..formats import format_of
from ..formats.carried import CONFIG_KEY, KERAS_METADATA_KEY, LAYOUT_KEY, NAMES_KEY
from ..formats.keras_h5 import H5Store
from ..model import Checkpoint, TensorInfo
from .plan import TensorOut, stem

ST_ORIGIN_ATTR = "tietool.safetensors"
#: Keys a folder reader adds to ``Checkpoint.metadata`` about the folder, not
#: the file: never written into an output file's metadata.
FOLDER_FACTS = frozenset({"other_weight_files"})


def file_metadata(ckpt: Checkpoint) -> dict[str, str]:
    """The source file's own ``__metadata__`` (what it stores, without what
    the folder reader noted about the folder around it)."""
    return {k: v for k, v in ckpt.metadata.items() if k not in FOLDER_FACTS}


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
    value = ckpt.metadata.get(CONFIG_KEY)
    if isinstance(value, str) and (ckpt.config is None or (ckpt.config_source or "").endswith(CONFIG_KEY)):
        return value
    if ckpt.config is not None:
        return json.dumps(ckpt.config, ensure_ascii=False)
    return None


def keras_metadata_text(ckpt: Checkpoint) -> str | None:
    """A .keras archive's metadata.json text, or the text tietool recorded."""
    stored = (ckpt.archive.member_texts if ckpt.archive else {}).get("metadata.json")
    if stored is not None:
        return stored
    value = ckpt.metadata.get(KERAS_METADATA_KEY)
    return value if isinstance(value, str) else None


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


def recorded_files(ckpt: Checkpoint) -> tuple[list[tuple[str, dict, dict[str, TensorInfo]]], dict | None, dict,
                                              dict[str, str]]:
    """The HDF5 file(s) ``tietool.layout`` records: ``[(name, tree, data)]``,
    the shard index, the layout itself and ``{dataset path: tensor}`` for the
    removed copies, written again from the tensor their alias names."""
    md = ckpt.metadata
    aliases: dict[str, str] = {}
    try:
        layout = json.loads(md[LAYOUT_KEY])
        files = layout["files"]
        index = layout.get("index")
        names = json.loads(md.get(NAMES_KEY, "{}"))
        if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
            raise ValueError(NAMES_KEY)
        out = []
        for f in files:
            tree = f["tree"]
            data = {}
            for dpath in tree["datasets"]:
                name = names.get(dpath, dpath)
                if name not in ckpt.tensors:  # a removed copy: its alias names the kept tensor
                    name = md.get(dpath)
                    if name in ckpt.tensors:
                        aliases[dpath] = name
                if name not in ckpt.tensors:
                    raise CorruptCheckpointError(f"layout lists dataset {dpath!r} but no tensor (or alias) holds it",
                                                 ckpt.path)
                data[dpath] = ckpt.tensors[name]
            out.append((f["name"], tree, data))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CorruptCheckpointError(f"__metadata__ {LAYOUT_KEY} is not a tietool layout", ckpt.path) from None
    return out, index, layout, aliases
