"""tietool's own records, parsed once: the one reader of what tietool writes
into the files it converts (described in :mod:`tietool.convert`).

A safetensors file's ``__metadata__`` (an HDF5 file's root attributes) may
hold ``tietool.layout`` (the HDF5 file(s) it was converted from),
``tietool.names`` (dataset path -> tensor name), ``tietool.safetensors`` (the
safetensors file an HDF5 file was converted from), ``tietool.config`` and
``tietool.keras_metadata`` (a config and a ``.keras`` ``metadata.json``
carried along), and safetensors' own aliases (``{removed: kept}``).
:func:`apply` parses and checks them when a checkpoint is opened and fills
:attr:`Checkpoint.records <tietool.model.Checkpoint.records>`, the config and
the tensor roles; nothing else reads these keys.

A record is data from the file, never trusted: its JSON types and shape are
checked, every tensor it refers to must be stored, and every file name it
gives must be a plain file name (:func:`file_name_problem`), because a
conversion back writes files under those names inside ``-o``. A record that
fails is not used: opening the checkpoint still works (``inspect`` warns),
and a conversion that needs it stops before writing anything
(:func:`require`: exit 2 naming the record).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .. import config as configlib
from .. import dtypes
from ..errors import CorruptCheckpointError, TietoolError
from ..model import (
    Checkpoint,
    Layout,
    RecordedFile,
    RecordedText,
    Records,
    Role,
    SafetensorsOrigin,
)
from .descriptor import FORMATS, Family, format_of
from .keras_h5 import KERAS3_ROLES
from .recordcheck import (
    RecordProblem,
    file_name,
    h5_path,
    h5_tree,
    json_int,
    json_object,
    json_str,
    json_text,
    unique_names,
)

LAYOUT_KEY = "tietool.layout"
NAMES_KEY = "tietool.names"
CONFIG_KEY = "tietool.config"
KERAS_METADATA_KEY = "tietool.keras_metadata"
ORIGIN_KEY = "tietool.safetensors"
#: ``__metadata__`` keys that are never aliases nor tensor names tietool may write.
RESERVED_KEYS = frozenset({"format", LAYOUT_KEY, NAMES_KEY, CONFIG_KEY, KERAS_METADATA_KEY, ORIGIN_KEY})
RECORD_NAMES = {
    LAYOUT_KEY: "tietool layout record",
    NAMES_KEY: "tietool names record",
    CONFIG_KEY: "tietool config record",
    KERAS_METADATA_KEY: "tietool keras-metadata record",
    ORIGIN_KEY: "tietool origin record",
}

#: The formats a layout record may say the weights came from (HDF5, and the .keras archive holding it).
LAYOUT_SOURCES = frozenset(f.name for f in FORMATS.values() if not f.is_safetensors)
H5_SUFFIXES = (".h5", ".hdf5")

# -- the records ------------------------------------------------------------------------------------

def _names(text: Any, tensors: dict) -> dict[str, str]:
    """``tietool.names``: ``{dataset path: stored tensor name}``."""
    value = json_text(json_str(text, "the record"), NAMES_KEY)
    names = json_object(value, "the record")
    for path, name in names.items():
        h5_path(path, "a dataset path")
        if not isinstance(name, str) or name not in tensors:
            raise RecordProblem(f"dataset {ascii(path[:80])} maps to {ascii(str(name)[:80])}, which is not stored")
    if len(set(names.values())) != len(names):
        raise RecordProblem("two dataset paths map to one tensor")
    return names


def _layout(text: Any, ckpt: Checkpoint, names: dict[str, str]) -> Layout:
    """``tietool.layout``: checked, and each dataset path resolved to the
    stored tensor that holds its bytes (itself, its ``tietool.names`` name,
    or the kept copy its alias names)."""
    value = json_text(json_str(text, "the record"), LAYOUT_KEY)
    rec = json_object(value, "the record", {"tietool", "source_format", "files", "index", "archive"},
                  {"tietool", "source_format", "files"})
    if type(rec["tietool"]) is not int or rec["tietool"] != 1:
        raise RecordProblem("is not version 1")
    source = rec["source_format"]
    if not isinstance(source, str) or source not in LAYOUT_SOURCES:
        raise RecordProblem(f"source_format {ascii(str(source)[:80])} is not an HDF5 layout")
    sharded = FORMATS[source].sharded
    files = rec["files"]
    if not isinstance(files, list) or not files or (not sharded and len(files) != 1):
        raise RecordProblem("files is not a list of one file per HDF5 file")
    index = rec.get("index")
    if (index is None) == sharded:
        raise RecordProblem("index is missing" if index is None else f"has an index, but {source} is not sharded")
    copies: dict[str, str] = {}
    out = [_recorded_file(f, f"files[{i}]", ckpt, names, copies) for i, f in enumerate(files)]
    text_out = None
    if index is not None:
        index = json_object(index, "index", {"name", "text"}, {"name", "text"})
        text_out = RecordedText(file_name(index["name"], "index name", (".json",)),
                                json_str(index["text"], "index text"))
    unique_names([f.name for f in out] + ([text_out.name] if text_out else []))
    if text_out is not None:
        _index_names_recorded_files(text_out.text, {f.name for f in out})
    archive = _archive(rec.get("archive"), FORMATS[source].is_archive)
    return Layout(source, tuple(out), text_out, archive, copies)


def _index_names_recorded_files(text: str, names: set[str]) -> None:
    """The shard index written from the record may name only the files the
    record writes beside it (its own reader checks the same when reading)."""
    index = json_object(json_text(text, "index text"), "index text")
    weight_map = json_object(index.get("weight_map"), "index text weight_map")
    for files in weight_map.values():
        for f in files if isinstance(files, list) else [files]:
            if not isinstance(f, str) or f not in names:
                raise RecordProblem(f"index text names the shard {ascii(str(f)[:80])}, which the record does not write")


def _recorded_file(value: Any, where: str, ckpt: Checkpoint, names: dict[str, str],
                   copies: dict[str, str]) -> RecordedFile:
    f = json_object(value, where, {"name", "tree"}, {"name", "tree"})
    name = file_name(f["name"], f"{where} name", H5_SUFFIXES)
    tree = h5_tree(f["tree"], f"{where} tree")
    tensors = {}
    for path in tree["datasets"]:
        stored = names.get(path, path)
        if stored not in ckpt.tensors:
            kept = ckpt.metadata.get(path)
            if not isinstance(kept, str) or kept not in ckpt.tensors or path in RESERVED_KEYS:
                raise RecordProblem(f"{where} lists dataset {ascii(path[:80])} but no tensor (or alias) holds it")
            stored = copies[path] = kept
        if tree["datasets"][path].get("opaque") and dtypes.DTYPES[ckpt.tensors[stored].dtype].bits != 16:
            raise RecordProblem(f"{where} marks dataset {ascii(path[:80])} opaque (bfloat16), but it is "
                                f"{ckpt.tensors[stored].dtype}")
        tensors[path] = stored
    return RecordedFile(name, tree, tensors)


def _archive(value: Any, from_archive: bool) -> tuple[dict, ...] | None:
    """A ``.keras`` archive's members: ``[{"name", "date_time"}]`` in order."""
    if value is None:
        return None
    if not from_archive or not isinstance(value, list):
        raise RecordProblem("archive is not a list of the members of a .keras archive")
    out, seen = [], set()
    for i, m in enumerate(value):
        m = json_object(m, f"archive[{i}]", {"name", "date_time"}, {"name", "date_time"})
        name = json_str(m["name"], f"archive[{i}] name")
        if not name or "\0" in name or len(name) > 65535 or name in seen:
            raise RecordProblem(f"archive[{i}] name is empty, too long or repeated")
        seen.add(name)
        dt = m["date_time"]
        if not isinstance(dt, list) or len(dt) != 6:
            raise RecordProblem(f"archive[{i}] date_time is not [year, month, day, hour, minute, second]")
        limits = ((1980, 2107), (1, 12), (1, 31), (0, 23), (0, 59), (0, 59))
        out.append({"name": name, "date_time": [json_int(v, f"archive[{i}] date_time", lo, hi)
                                                for v, (lo, hi) in zip(dt, limits, strict=True)]})
    return tuple(out)


def _origin(text: Any) -> SafetensorsOrigin:
    """``tietool.safetensors``: ``{"metadata": {str: str}, "file": name}``."""
    value = json_text(json_str(text, "the record"), ORIGIN_KEY)
    rec = json_object(value, "the record", {"metadata", "file"}, {"metadata", "file"})
    metadata = json_object(rec["metadata"], "metadata")
    if not all(isinstance(v, str) for v in metadata.values()):
        raise RecordProblem("metadata holds a value that is not a string")
    return SafetensorsOrigin(file_name(rec["file"], "file", (".safetensors",)), dict(metadata))


def _keras_metadata(text: Any) -> dict:
    value = json_text(json_str(text, "the record"), KERAS_METADATA_KEY)
    return json_object(value, "the record")


def _aliases(ckpt: Checkpoint) -> dict[str, str]:
    """safetensors' ``{removed: kept}``: a key that is not stored whose value
    is a stored tensor (other ``__metadata__`` entries are plain metadata)."""
    if not format_of(ckpt).is_safetensors:
        return {}
    return {k: v for k, v in ckpt.metadata.items()
            if isinstance(v, str) and v in ckpt.tensors and k not in ckpt.tensors and k not in RESERVED_KEYS}


def label(ckpt: Checkpoint, key: str) -> str:
    """How messages name a record: ``tietool layout record (__metadata__ tietool.layout)``."""
    return f"{RECORD_NAMES[key]} ({format_of(ckpt).records_in} {key})"


def parse(ckpt: Checkpoint) -> Records:
    """Every record of ``ckpt``, checked; a wrong one is left out and its problem kept."""
    records = Records()
    if format_of(ckpt).is_archive:  # its metadata is the archive's metadata.json, not tietool's
        return records
    md = ckpt.metadata
    records.aliases = _aliases(ckpt)
    steps = [
        (CONFIG_KEY, lambda text: setattr(records, "config_text", json_str(text, "the record"))),
        (KERAS_METADATA_KEY, lambda text: setattr(records, "keras_metadata", _keras_metadata(text))),
    ]
    if format_of(ckpt).is_safetensors:  # each record where tietool writes it
        steps[:0] = [(NAMES_KEY, lambda text: setattr(records, "names", _names(text, ckpt.tensors))),
                     (LAYOUT_KEY, lambda text: setattr(records, "layout", _layout(text, ckpt, records.names or {})))]
    else:
        steps.append((ORIGIN_KEY, lambda text: setattr(records, "safetensors_origin", _origin(text))))
    for key, step in steps:
        if key not in md:
            continue
        if key == LAYOUT_KEY and records.names is None and NAMES_KEY in md:
            records.problems[key] = f"cannot be used without a valid {NAMES_KEY}"
            continue
        try:
            step(md[key])
        except RecordProblem as exc:
            records.problems[key] = str(exc)
    if records.keras_metadata is not None:
        records.keras_metadata_text = md[KERAS_METADATA_KEY]
    return records


def require(ckpt: Checkpoint, *keys: str) -> None:
    """Refuse to go on (a conversion that writes what these records say) if
    one of them is wrong: :class:`~tietool.errors.CorruptCheckpointError`
    naming the record."""
    for key in keys:
        problem = ckpt.records.problems.get(key)
        if problem is not None:
            raise CorruptCheckpointError(f"{label(ckpt, key)}: {problem}", ckpt.path)


# -- applied when a checkpoint is opened ----------------------------------------------------------------

def dataset_role(source_format: str, dataset_path: str) -> Role:
    """The role a Keras reader gives the dataset at ``dataset_path``."""
    head = dataset_path.split("/", 1)[0]
    fmt = FORMATS.get(source_format)
    if fmt is not None and fmt.family is Family.KERAS3:
        return KERAS3_ROLES.get(head, Role.WEIGHT)
    if fmt is not None and head == fmt.optimizer_group:
        return Role.OPTIMIZER
    return Role.WEIGHT


def apply(ckpt: Checkpoint) -> None:
    """Parse ``ckpt``'s records into ``ckpt.records``; fill in the config
    (``tietool.config``), stored aliases and, for a safetensors file
    converted from HDF5, each tensor's role from them. A wrong record is a
    warning here (the weights still read)."""
    records = ckpt.records = parse(ckpt)
    for key, problem in records.problems.items():
        ckpt.warnings.append(f"{label(ckpt, key)} is not used: {problem}")
    _apply_config(ckpt)
    if not format_of(ckpt).is_safetensors:
        return
    path_of = {v: k for k, v in (records.names or {}).items()}
    for name, info in list(ckpt.tensors.items()):
        kept = ckpt.metadata.get(name)
        role = info.role
        if ckpt.origin_format != ckpt.format:
            role = dataset_role(ckpt.origin_format, path_of.get(name, name))
        alias_of = kept if isinstance(kept, str) and kept in ckpt.tensors and kept != name else None
        if role != info.role or alias_of != info.alias_of:
            ckpt.tensors[name] = dataclasses.replace(info, role=role, alias_of=alias_of)


def _apply_config(ckpt: Checkpoint) -> None:
    text = ckpt.records.config_text
    if ckpt.config is not None or text is None:
        return
    source = f"{ckpt.path}:{format_of(ckpt).records_in} {CONFIG_KEY}"
    try:
        value = configlib.parse_json_text(text, source)
    except TietoolError as exc:
        ckpt.warnings.append(f"{CONFIG_KEY} is not a usable config ({exc.message})")
        return
    if isinstance(value, dict):
        ckpt.config = value
        ckpt.config_source = source
    else:
        ckpt.warnings.append(f"{CONFIG_KEY} is not a JSON object")
