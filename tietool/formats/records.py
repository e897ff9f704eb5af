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
import math
import re
from typing import Any

from tietool.io.h5walk import MAX_DEPTH as MAX_TREE_DEPTH
from tietool.io.h5walk import MAX_OBJECTS

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

#: A file name from a record: at most this many bytes (UTF-8), as most file systems allow.
MAX_NAME_BYTES = 255
_WINDOWS_DEVICES = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                              *(f"lpt{i}" for i in range(1, 10))})


class RecordProblem(Exception):
    """What is wrong with a record (internal: becomes a warning or an error)."""


# -- file names -------------------------------------------------------------------------------

def file_name_problem(name: Any, suffixes: tuple[str, ...] = ()) -> str | None:
    """Why ``name`` cannot be a file tietool writes inside its output, or
    None: it must be one plain file name on every platform (no ``/``, ``\\``
    or ``:``, not ``.``/``..`` nor hidden, no control character, no Windows
    device name, at most :data:`MAX_NAME_BYTES` bytes) ending in one of
    ``suffixes`` (when given)."""
    import unicodedata  # only when a record names a file

    if not isinstance(name, str):
        return f"is {_json_type(name)}, not a file name"
    shown = ascii(name) if len(name) <= 80 else ascii(name[:80]) + "..."
    if not name:
        return "is empty, not a file name"
    if name in (".", ".."):
        return f"{shown} is not a file name"
    if any(sep in name for sep in ("/", "\\", ":")):
        return f"{shown} is not a plain file name (it has a path separator or drive)"
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        return f"{shown} has a control character"
    if name.startswith("."):
        return f"{shown} is a hidden file name"
    if name.endswith((" ", ".")) or name.split(".", 1)[0].lower() in _WINDOWS_DEVICES:
        return f"{shown} is not a file name on every platform"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"{shown} is longer than {MAX_NAME_BYTES} bytes"
    if suffixes and not name.lower().endswith(suffixes):
        return f"{shown} does not end in {' or '.join(suffixes)}"
    return None


def _file_name(value: Any, where: str, suffixes: tuple[str, ...]) -> str:
    problem = file_name_problem(value, suffixes)
    if problem:
        raise RecordProblem(f"{where} {problem}")
    return value


def _unique_names(names: list[str]) -> None:
    """Output names must differ, also on a case-insensitive file system."""
    import unicodedata

    seen: dict[str, str] = {}
    for n in names:
        key = unicodedata.normalize("NFC", n).casefold()
        if key in seen:
            raise RecordProblem(f"names the file {ascii(n)} twice" + ("" if seen[key] == n else
                                                                        f" (as {ascii(seen[key])})"))
        seen[key] = n


# -- JSON shapes --------------------------------------------------------------------------------

def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _object(value: Any, where: str, keys: set[str] | None = None, required: set[str] | None = None) -> dict:
    if not isinstance(value, dict):
        raise RecordProblem(f"{where} is {_json_type(value)}, not an object")
    if keys is not None:
        extra = sorted(set(value) - keys)
        if extra:
            raise RecordProblem(f"{where} has an unknown key {ascii(extra[0])}")
    missing = sorted((required or set()) - set(value))
    if missing:
        raise RecordProblem(f"{where} has no {ascii(missing[0])}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise RecordProblem(f"{where} is {_json_type(value)}, not a string")
    return value


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise RecordProblem(f"{where} is not a whole number from {lo} to {hi}")
    return value


def _json_text(text: str, where: str) -> Any:
    try:
        return configlib.parse_json_text(text, where)
    except TietoolError as exc:
        raise RecordProblem(exc.message) from None


# -- HDF5 trees (tietool.formats.h5_writer) --------------------------------------------------------

MAX_ATTR_RANK = 32
#: Bytes one fixed-size string attribute may declare (HDF5 keeps attributes in the object header).
MAX_ATTR_BYTES = 64 * 1024 * 1024
NUM_DTYPE = re.compile(r"^[<>|=]?(b1|[iu][1248]|f[248])$")
STR_SPEC = {"type", "vlen", "cset", "size", "space", "shape", "value"}
NUM_SPEC = {"type", "dtype", "space", "shape", "value"}


def _h5_path(path: str, where: str, root: bool = False) -> list[str]:
    if path == "" and root:
        return []
    parts = path.split("/")
    if (not path or any(p in ("", ".", "..") for p in parts) or "\0" in path
            or len(parts) > MAX_TREE_DEPTH):
        raise RecordProblem(f"{where} {ascii(path[:80])} is not an HDF5 path")
    return parts


def _tree(value: Any, where: str) -> dict:
    tree = _object(value, where, {"groups", "datasets"}, {"groups", "datasets"})
    groups = _object(tree["groups"], f"{where}.groups")
    datasets = _object(tree["datasets"], f"{where}.datasets")
    parents: set[str] = set()
    for path, attrs in groups.items():
        parts = _h5_path(path, f"{where} group", root=True)
        parents.update("/".join(parts[:i]) for i in range(1, len(parts)))
        _attrs(attrs, f"{where} group {ascii(path[:80])}")
    for path, spec in datasets.items():
        parts = _h5_path(path, f"{where} dataset")
        parents.update("/".join(parts[:i]) for i in range(1, len(parts)))
        spec = _object(spec, f"{where} dataset {ascii(path[:80])}", {"attrs", "opaque"})
        _attrs(spec.get("attrs", {}), f"{where} dataset {ascii(path[:80])}")
        if not isinstance(spec.get("opaque", False), bool):
            raise RecordProblem(f"{where} dataset {ascii(path[:80])}: opaque is not true or false")
    if len(groups) + len(datasets) > MAX_OBJECTS:
        raise RecordProblem(f"{where} has more than {MAX_OBJECTS} groups and datasets")
    clash = sorted(set(datasets) & (set(groups) | parents))
    if clash:
        raise RecordProblem(f"{where} has {ascii(clash[0][:80])} as both a dataset and a group")
    return tree


def _attrs(value: Any, where: str) -> None:
    for name, spec in _object(value, f"{where} attributes").items():
        if not name or "\0" in name:
            raise RecordProblem(f"{where} has an attribute without a usable name")
        _attr_spec(spec, f"{where} attribute {ascii(name[:80])}")


def _attr_spec(value: Any, where: str) -> None:
    kind = value.get("type") if isinstance(value, dict) else None
    spec = _object(value, where, STR_SPEC if kind == "str" else NUM_SPEC, {"type"})
    space = spec.get("space", "simple")
    if space not in ("scalar", "simple", "null"):
        raise RecordProblem(f"{where}: space is not scalar, simple or null")
    shape: tuple[int, ...] = ()
    if space == "simple":
        dims = spec.get("shape")
        if not isinstance(dims, list) or len(dims) > MAX_ATTR_RANK:
            raise RecordProblem(f"{where}: shape is not a list of sizes")
        shape = tuple(_int(d, f"{where}: a dimension", 0, 2**40) for d in dims)
    if kind == "str":
        check, itemsize = _str_checker(spec, where), 16
        if not spec.get("vlen", True):
            itemsize = _int(spec.get("size"), f"{where}: size", 1, MAX_ATTR_BYTES)
    elif kind == "num":
        dtype = spec.get("dtype")
        if not isinstance(dtype, str) or not NUM_DTYPE.match(dtype):
            raise RecordProblem(f"{where}: dtype is not a number type")
        check, itemsize = _num_checker(dtype, where), int(dtype[-1])
    else:
        raise RecordProblem(f"{where}: type is not str or num")
    if itemsize * math.prod(shape) > MAX_ATTR_BYTES:
        raise RecordProblem(f"{where} declares more than {MAX_ATTR_BYTES} bytes")
    if space != "null":
        _values(spec.get("value"), shape, check, where)


def _values(value: Any, shape: tuple[int, ...], check, where: str) -> None:
    """``value`` holds ``shape`` elements: nested as the shape, or flat."""
    if not shape:
        check(value)
        return
    if isinstance(value, list) and len(value) == math.prod(shape) and not any(isinstance(v, list) for v in value):
        for v in value:
            check(v)
        return
    if not isinstance(value, list) or len(value) != shape[0]:
        raise RecordProblem(f"{where}: the value does not have the shape {list(shape)}")
    for v in value:
        _values(v, shape[1:], check, where) if len(shape) > 1 else check(v)


def _str_checker(spec: dict, where: str):
    cset = spec.get("cset", "utf8")
    if cset not in ("utf8", "ascii") or not isinstance(spec.get("vlen", True), bool):
        raise RecordProblem(f"{where}: cset or vlen is not valid")
    encoding, errors = ("utf-8", "strict") if cset == "utf8" else ("ascii", "surrogateescape")

    def check(v: Any) -> None:
        if not isinstance(v, str) or "\0" in v:
            raise RecordProblem(f"{where}: a value is not a string without NUL")
        try:
            v.encode(encoding, errors)
        except UnicodeEncodeError:
            raise RecordProblem(f"{where}: a value cannot be stored as {cset}") from None
    return check


def _num_checker(dtype: str, where: str):
    code = dtype.lstrip("<>|=")
    bits = 8 * int(code[1:])
    lo, hi = {"b": (0, 1), "i": (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1), "u": (0, 2**bits - 1)}.get(
        code[0], (None, None))

    def check(v: Any) -> None:
        if not isinstance(v, (int, float)) or (lo is not None and (isinstance(v, float) or not lo <= v <= hi)):
            raise RecordProblem(f"{where}: a value is not a {dtype} number")
    return check


# -- the records ------------------------------------------------------------------------------------

def _names(text: Any, tensors: dict) -> dict[str, str]:
    """``tietool.names``: ``{dataset path: stored tensor name}``."""
    value = _json_text(_str(text, "the record"), NAMES_KEY)
    names = _object(value, "the record")
    for path, name in names.items():
        _h5_path(path, "a dataset path")
        if not isinstance(name, str) or name not in tensors:
            raise RecordProblem(f"dataset {ascii(path[:80])} maps to {ascii(str(name)[:80])}, which is not stored")
    if len(set(names.values())) != len(names):
        raise RecordProblem("two dataset paths map to one tensor")
    return names


def _layout(text: Any, ckpt: Checkpoint, names: dict[str, str]) -> Layout:
    """``tietool.layout``: checked, and each dataset path resolved to the
    stored tensor that holds its bytes (itself, its ``tietool.names`` name,
    or the kept copy its alias names)."""
    value = _json_text(_str(text, "the record"), LAYOUT_KEY)
    rec = _object(value, "the record", {"tietool", "source_format", "files", "index", "archive"},
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
        index = _object(index, "index", {"name", "text"}, {"name", "text"})
        text_out = RecordedText(_file_name(index["name"], "index name", (".json",)), _str(index["text"], "index text"))
    _unique_names([f.name for f in out] + ([text_out.name] if text_out else []))
    archive = _archive(rec.get("archive"), FORMATS[source].is_archive)
    return Layout(source, tuple(out), text_out, archive, copies)


def _recorded_file(value: Any, where: str, ckpt: Checkpoint, names: dict[str, str],
                   copies: dict[str, str]) -> RecordedFile:
    f = _object(value, where, {"name", "tree"}, {"name", "tree"})
    name = _file_name(f["name"], f"{where} name", H5_SUFFIXES)
    tree = _tree(f["tree"], f"{where} tree")
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
        m = _object(m, f"archive[{i}]", {"name", "date_time"}, {"name", "date_time"})
        name = _str(m["name"], f"archive[{i}] name")
        if not name or "\0" in name or len(name) > 65535 or name in seen:
            raise RecordProblem(f"archive[{i}] name is empty, too long or repeated")
        seen.add(name)
        dt = m["date_time"]
        if not isinstance(dt, list) or len(dt) != 6:
            raise RecordProblem(f"archive[{i}] date_time is not [year, month, day, hour, minute, second]")
        limits = ((1980, 2107), (1, 12), (1, 31), (0, 23), (0, 59), (0, 59))
        out.append({"name": name, "date_time": [_int(v, f"archive[{i}] date_time", lo, hi)
                                                for v, (lo, hi) in zip(dt, limits, strict=True)]})
    return tuple(out)


def _origin(text: Any) -> SafetensorsOrigin:
    """``tietool.safetensors``: ``{"metadata": {str: str}, "file": name}``."""
    value = _json_text(_str(text, "the record"), ORIGIN_KEY)
    rec = _object(value, "the record", {"metadata", "file"}, {"metadata", "file"})
    metadata = _object(rec["metadata"], "metadata")
    if not all(isinstance(v, str) for v in metadata.values()):
        raise RecordProblem("metadata holds a value that is not a string")
    return SafetensorsOrigin(_file_name(rec["file"], "file", (".safetensors",)), dict(metadata))


def _keras_metadata(text: Any) -> dict:
    value = _json_text(_str(text, "the record"), KERAS_METADATA_KEY)
    return _object(value, "the record")


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
        (CONFIG_KEY, lambda text: setattr(records, "config_text", _str(text, "the record"))),
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
