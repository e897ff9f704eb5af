"""Checks of the values in tietool's records (:mod:`tietool.formats.records`):
file names that may become files inside ``-o``, JSON types and shapes, and
HDF5 trees (:mod:`tietool.formats.h5_writer`) with their attribute specs.
Each failure is a :class:`RecordProblem` saying what is wrong, for the
record's parser to name the record."""

from __future__ import annotations

import math
import re
from typing import Any

from tietool.io.h5walk import MAX_DEPTH as MAX_TREE_DEPTH
from tietool.io.h5walk import MAX_OBJECTS

from .. import config as configlib
from ..errors import TietoolError


class RecordProblem(Exception):
    """What is wrong with a record (becomes a warning or an error naming it)."""


#: A file name from a record: at most this many bytes (UTF-8), as most file systems allow.
MAX_NAME_BYTES = 255
_WINDOWS_DEVICES = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                              *(f"lpt{i}" for i in range(1, 10))})


# -- file names -------------------------------------------------------------------------------

def file_name_problem(name: Any, suffixes: tuple[str, ...] = ()) -> str | None:
    """Why ``name`` cannot be a file tietool writes inside its output, or
    None: it must be one plain file name on every platform (no ``/``, ``\\``
    or ``:``, not ``.``/``..`` nor hidden, no control character, no Windows
    device name, at most :data:`MAX_NAME_BYTES` bytes) ending in one of
    ``suffixes`` (when given)."""
    import unicodedata  # only when a record names a file

    if not isinstance(name, str):
        return f"is {json_type(name)}, not a file name"
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


def file_name(value: Any, where: str, suffixes: tuple[str, ...]) -> str:
    problem = file_name_problem(value, suffixes)
    if problem:
        raise RecordProblem(f"{where} {problem}")
    return value


def unique_names(names: list[str]) -> None:
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

def json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def json_object(value: Any, where: str, keys: set[str] | None = None, required: set[str] | None = None) -> dict:
    if not isinstance(value, dict):
        raise RecordProblem(f"{where} is {json_type(value)}, not an object")
    if keys is not None:
        extra = sorted(set(value) - keys)
        if extra:
            raise RecordProblem(f"{where} has an unknown key {ascii(extra[0])}")
    missing = sorted((required or set()) - set(value))
    if missing:
        raise RecordProblem(f"{where} has no {ascii(missing[0])}")
    return value


def json_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise RecordProblem(f"{where} is {json_type(value)}, not a string")
    return value


def json_int(value: Any, where: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise RecordProblem(f"{where} is not a whole number from {lo} to {hi}")
    return value


def json_text(text: str, where: str) -> Any:
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


def h5_path(path: str, where: str, root: bool = False) -> list[str]:
    if path == "" and root:
        return []
    parts = path.split("/")
    if (not path or any(p in ("", ".", "..") for p in parts) or "\0" in path
            or len(parts) > MAX_TREE_DEPTH):
        raise RecordProblem(f"{where} {ascii(path[:80])} is not an HDF5 path")
    return parts


def h5_tree(value: Any, where: str) -> dict:
    tree = json_object(value, where, {"groups", "datasets"}, {"groups", "datasets"})
    groups = json_object(tree["groups"], f"{where}.groups")
    datasets = json_object(tree["datasets"], f"{where}.datasets")
    parents: set[str] = set()
    for path, attrs in groups.items():
        parts = h5_path(path, f"{where} group", root=True)
        parents.update("/".join(parts[:i]) for i in range(1, len(parts)))
        _attrs(attrs, f"{where} group {ascii(path[:80])}")
    for path, spec in datasets.items():
        parts = h5_path(path, f"{where} dataset")
        parents.update("/".join(parts[:i]) for i in range(1, len(parts)))
        spec = json_object(spec, f"{where} dataset {ascii(path[:80])}", {"attrs", "opaque"})
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
    for name, spec in json_object(value, f"{where} attributes").items():
        if not name or "\0" in name:
            raise RecordProblem(f"{where} has an attribute without a usable name")
        _attr_spec(spec, f"{where} attribute {ascii(name[:80])}")


def _attr_spec(value: Any, where: str) -> None:
    kind = value.get("type") if isinstance(value, dict) else None
    spec = json_object(value, where, STR_SPEC if kind == "str" else NUM_SPEC, {"type"})
    space = spec.get("space", "simple")
    if space not in ("scalar", "simple", "null"):
        raise RecordProblem(f"{where}: space is not scalar, simple or null")
    shape: tuple[int, ...] = ()
    if space == "simple":
        dims = spec.get("shape")
        if not isinstance(dims, list) or len(dims) > MAX_ATTR_RANK:
            raise RecordProblem(f"{where}: shape is not a list of sizes")
        shape = tuple(json_int(d, f"{where}: a dimension", 0, 2**40) for d in dims)
    if kind == "str":
        check, itemsize = _str_checker(spec, where), 16
        if not spec.get("vlen", True):
            itemsize = json_int(spec.get("size"), f"{where}: size", 1, MAX_ATTR_BYTES)
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
