"""The plans of ``--names keras`` (lossless): HDF5 / .keras -> safetensors,
safetensors -> HDF5, -> .keras; and which target a source goes to."""

from __future__ import annotations

import json
import os

from tietool.io.h5safe import MAX_ATTR_BYTES
from tietool.io.tensorcopy import SourceFiles

from ..config import is_hf_config
from ..errors import UsageError
from ..formats import CONTAINER_SUFFIXES, Family, format_of, origin_of, records
from ..formats.records import CONFIG_KEY, KERAS_METADATA_KEY, LAYOUT_KEY, NAMES_KEY, ORIGIN_KEY, RESERVED_KEYS
from ..model import Checkpoint, TensorInfo
from . import keras_layout as kl
from .dedupe import find_copies
from .plan import OutputFile, Plan, TensorOut, safetensors_outputs, stem

TARGETS = ("safetensors", "h5", "keras")
TIES = ("dedupe", "keep")


def infer_target(ckpt: Checkpoint, names: str = "keras", out: str | None = None) -> tuple[str, str]:
    """``(target, why)`` when ``--to`` is not given: ``--names pt`` writes
    safetensors; an output file name ending in .keras, .safetensors or .h5
    says it; HDF5 (and .keras) becomes safetensors; safetensors goes back to
    the format tietool recorded it came from (.keras or HDF5), else HDF5."""
    if names == "pt":
        return "safetensors", "--names pt writes safetensors"
    for suffix, target in CONTAINER_SUFFIXES:
        if out is not None and os.fspath(out).endswith(suffix) and not os.path.isdir(ckpt.path):
            return target, f"the output name ends in {suffix}"
    fmt = format_of(ckpt)
    if fmt.is_archive:
        return "safetensors", "the source is a .keras archive"
    if not fmt.is_safetensors:
        return "safetensors", "the source is HDF5"
    origin = origin_of(ckpt)
    if origin.is_archive:
        return "keras", "the source was converted from a .keras archive"
    if origin.is_hdf5:
        return "h5", f"the source was converted from {origin.name}"
    return "h5", "the source is safetensors"


def check_target(ckpt: Checkpoint, to: str, src: str) -> None:
    """Refuse converting to the format the source already has (``src``: as given)."""
    container = format_of(ckpt).container
    if to == container:
        what = {"safetensors": "safetensors", "h5": "HDF5", "keras": "a .keras archive"}[container]
        raise UsageError(f"source is already {what}: nothing to convert (choose another --to)", src)


# -- to safetensors -------------------------------------------------------------------

def _tf_safetensors_names(ckpt: Checkpoint, kept: list[TensorInfo], removed: dict[str, str]) -> dict[str, str] | None:
    """``{dataset path: name}`` with the names transformers' TF
    ``save_pretrained(safe_serialization=True)`` gives the same variables
    (``strip_model_name_and_prefix`` of the variable name), so that
    transformers 4.57 TF loads the file as it is. None, and dataset paths are
    kept, unless this is a transformers ``tf_model.h5`` whose kept tensors get
    distinct names that no removed path shadows."""
    if not format_of(ckpt).tf_model_h5 or not is_hf_config(ckpt.config):
        return None
    from tietool.convert.ptnames import tf_variable_name

    names = {}
    for t in kept:
        try:
            var = tf_variable_name(ckpt, t)
        except UsageError:
            return None
        names[t.name] = var if "model." in var or "/" not in var else var.split("/", 1)[1]
    used = set(names.values())
    if len(used) != len(names) or used & set(removed) or used & RESERVED_KEYS:
        return None
    return names


def _restore_safetensors(ckpt: Checkpoint, shard_bytes: int | None) -> Plan:
    """An HDF5 file tietool wrote from safetensors: the original back."""
    origin = ckpt.records.safetensors_origin
    assert origin is not None
    outputs = safetensors_outputs([TensorOut(t.name, t, tuple(t.shape)) for t in ckpt], dict(origin.metadata),
                                  origin.file, shard_bytes)
    return Plan(tuple(outputs), multi=len(outputs) > 1)


def plan_to_safetensors(ckpt: Checkpoint, ties: str, shard_bytes: int | None, files: SourceFiles,
                        src_name: str) -> Plan:
    records.require(ckpt, ORIGIN_KEY)
    if ckpt.records.safetensors_origin is not None:
        return _restore_safetensors(ckpt, shard_bytes)
    removed = find_copies(ckpt, files) if ties == "dedupe" else {}
    kept = [t for t in ckpt if t.name not in removed]
    tf_names = _tf_safetensors_names(ckpt, kept, removed) if ties == "dedupe" else None
    names = tf_names or {t.name: t.name for t in kept}
    aliases = {k: names[v] for k, v in removed.items()}
    metadata = {"format": "keras" if format_of(ckpt).family is Family.KERAS3 else "tf"}
    metadata[LAYOUT_KEY] = json.dumps(kl.h5_layout(ckpt), ensure_ascii=False, separators=(",", ":"))
    if tf_names is not None:
        metadata[NAMES_KEY] = json.dumps(names, ensure_ascii=False, separators=(",", ":"))
    cfg = kl.config_text(ckpt)
    if cfg is not None:
        metadata[CONFIG_KEY] = cfg
    keras_meta = kl.keras_metadata_text(ckpt)
    if keras_meta is not None:
        metadata[KERAS_METADATA_KEY] = keras_meta
    metadata.update(aliases)
    tensors = [TensorOut(names[t.name], t, tuple(t.shape)) for t in kept]
    file_stem = stem(src_name)
    name = ("model" if file_stem == "tf_model" else file_stem) + ".safetensors"
    outputs = safetensors_outputs(tensors, metadata, name, shard_bytes)
    return Plan(tuple(outputs), multi=len(outputs) > 1, aliases=aliases, tf_names=tf_names is not None)


# -- to HDF5 ------------------------------------------------------------------------------

def plan_to_h5(ckpt: Checkpoint, src_name: str) -> Plan:
    from tietool.formats.h5_writer import flat_tree

    if format_of(ckpt).is_archive:
        # the archive's weights, with its config.json and metadata.json recorded
        tree, data = kl.archive_weights(ckpt)
        kl.record_keras_texts(ckpt, tree)
        return Plan((OutputFile(stem(src_name) + ".weights.h5", "h5", kl.outs(data), tree=tree),))
    md = ckpt.metadata
    if LAYOUT_KEY in md:
        layout = kl.recorded_layout(ckpt)
        outputs = []
        for name, tree, data in kl.recorded_files(ckpt):
            if origin_of(ckpt).is_archive:
                kl.record_keras_texts(ckpt, tree)
            outputs.append(OutputFile(name, "h5", kl.outs(data), tree=tree))
        if layout.index:
            outputs.append(OutputFile(layout.index.name, "text", text=layout.index.text))
        return Plan(tuple(outputs), multi=len(outputs) > 1, aliases=dict(layout.copies))
    names = list(ckpt.tensors)
    if sum(len(k) + len(v) for k, v in md.items()) > MAX_ATTR_BYTES:  # checked before it is copied
        raise UsageError(f"__metadata__ does not fit one HDF5 attribute that tietool reads back ({MAX_ATTR_BYTES:,} "
                         "bytes): refused (nothing written)", ckpt.path)
    origin = json.dumps({"metadata": md, "file": src_name if src_name.endswith(".safetensors") else
                         stem(src_name) + ".safetensors"}, ensure_ascii=False)
    tree = flat_tree(names, {ORIGIN_KEY: kl.str_attr(origin)})
    file_stem = stem(src_name)
    name = ("tf_model" if file_stem == "model" and md.get("format") == "tf" else file_stem) + ".h5"
    return Plan((OutputFile(name, "h5", kl.outs({n: ckpt.tensors[n] for n in names}), tree=tree),))


# -- to .keras ----------------------------------------------------------------------------

def plan_to_keras(ckpt: Checkpoint, src_name: str) -> Plan:
    """A .keras archive from a checkpoint that records one: a safetensors
    file converted from .keras, or a .weights.h5 extracted from one."""
    records.require(ckpt, NAMES_KEY, LAYOUT_KEY)
    origin = origin_of(ckpt)
    # a single Keras 3 weights file that records the archive's config.json
    if origin.family is not Family.KERAS3 or origin.sharded or kl.config_text(ckpt) is None:
        raise UsageError("--to keras needs a .keras archive converted by tietool (a safetensors file or .weights.h5 "
                         "that records the archive's config.json); use --to h5", ckpt.path)
    members = None
    aliases: dict[str, str] = {}
    if format_of(ckpt).is_safetensors:
        recorded = kl.recorded_files(ckpt)
        if len(recorded) != 1:
            raise UsageError("--to keras needs a single Keras 3 weights file, not a sharded one; use --to h5",
                             ckpt.path)
        _name, tree, data = recorded[0]
        layout = kl.recorded_layout(ckpt)
        aliases = dict(layout.copies)
        members = [dict(m) for m in layout.archive] if layout.archive is not None else None
    else:
        tree, data = kl.archive_weights(ckpt)
    root = tree["groups"].setdefault("", {})
    for key in (CONFIG_KEY, KERAS_METADATA_KEY):
        root.pop(key, None)  # recorded for the way back, not part of Keras' weights file
    texts: dict[str, str] = {"config.json": kl.config_text(ckpt) or ""}
    meta = kl.keras_metadata_text(ckpt)
    if meta is not None:
        texts["metadata.json"] = meta
    if members is not None:
        members = [m for m in members if m["name"] in (*texts, "model.weights.h5")]
    out = OutputFile(stem(src_name) + ".keras", "keras", kl.outs(data), tree=tree, texts=texts, members=members)
    return Plan((out,), aliases=aliases)
