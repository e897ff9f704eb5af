"""HDF5 layouts as JSON data, and writing an HDF5 file from one.

A *tree* describes one HDF5 file completely enough for Keras and transformers
to load it the same way as the original::

    {"groups":   {"": {attrs}, "transformer": {attrs}, ...},      # every group
     "datasets": {"transformer/.../wte/embeddings:0": {"attrs": {...}, "opaque": false}, ...}}

Paths have no leading ``/``; ``""`` is the root group. Datasets are listed in
the order the writer creates them; each dataset's shape and dtype come from
the tensor it is written from (its name is the dataset path). ``opaque``
marks a 2-byte opaque dataset (how Keras stores bfloat16). Each attribute is
kept with its HDF5 type::

    {"type": "str", "vlen": true, "cset": "utf8"|"ascii", "size": null,
     "space": "scalar"|"simple"|"null", "shape": [3], "value": "..." | ["...", ...]}
    {"type": "num", "dtype": "<f8", "space": "simple", "shape": [0], "value": [...]}

:func:`describe_h5` reads a tree from an open file (through
:class:`tietool.io.h5safe.SafeH5` checks: links refused, attributes size-capped);
:func:`write_h5` writes one: groups and attributes with h5py, every dataset
contiguous, uncompressed and allocated up front (``ALLOC_TIME_EARLY``, no
fill), then each dataset's bytes copied raw at its offset
(``ds.id.get_offset()``) by :func:`tietool.io.tensorcopy.copy_tensor`.
"""

from __future__ import annotations

import errno
import os
import re
from functools import partial
from typing import Callable

import numpy as np

from tietool import dtypes
from tietool.errors import ConversionError, UsageError
from tietool.io import fastio
from tietool.io.h5safe import SafeH5
from tietool.io.h5walk import MAX_OBJECTS, natural_key
from tietool.io.safe_output import WRITE_ERRNOS
from tietool.io.tensorcopy import Progress, SourceFiles, copy_tensor
from tietool.model import Checkpoint, TensorInfo

# -- reading a tree -----------------------------------------------------------------

def describe_h5(h5: SafeH5) -> dict:
    """The tree of an open file: every group and dataset as
    :meth:`~tietool.io.h5safe.SafeH5.visit` reaches them (each group once,
    by its address; links checked; bounded)."""
    import h5py

    groups: dict[str, dict] = {}
    datasets: dict[str, dict] = {}
    for path, obj in h5.visit():
        if isinstance(obj, h5py.Group):
            groups[path] = attrs_of(h5, obj)
        else:
            dt = h5.guard(f"/{path}", partial(getattr, obj, "dtype"))
            datasets[path] = {"attrs": attrs_of(h5, obj), "opaque": dt.kind == "V"}
    return {"groups": groups, "datasets": datasets}


def attrs_of(h5: SafeH5, obj) -> dict[str, dict]:
    import h5py

    out = {}
    for name in h5.attr_names(obj):
        aid = h5.guard(f"attribute {name!r}", partial(obj.attrs.get_id, name))
        tid = aid.get_type()
        space = aid.get_space()
        kind = {h5py.h5s.SCALAR: "scalar", h5py.h5s.SIMPLE: "simple", h5py.h5s.NULL: "null"}.get(
            space.get_simple_extent_type(), "simple")
        shape = list(space.shape) if kind == "simple" else None
        value = None if kind == "null" else h5.attr(obj, name)
        if isinstance(tid, h5py.h5t.TypeStringID):
            vlen = bool(tid.is_variable_str())
            out[name] = {"type": "str", "vlen": vlen, "size": None if vlen else tid.get_size(),
                         "cset": "utf8" if tid.get_cset() == h5py.h5t.CSET_UTF8 else "ascii",
                         "space": kind, "shape": shape, "value": value}
        else:
            dt = aid.dtype
            if dt.kind not in "biuf":
                continue  # compound/enum/opaque attributes: Keras writes none
            if isinstance(value, (bytes, np.ndarray)):
                value = np.asarray(value).tolist()
            out[name] = {"type": "num", "dtype": dt.str, "space": kind, "shape": shape, "value": value}
    return out


# -- writing --------------------------------------------------------------------------

def _set_attrs(obj, attrs: dict[str, dict], path: str) -> None:
    """Every attribute of ``attrs`` on ``obj``; one HDF5 cannot store (too
    large for an object header) is an error naming it, not an internal one."""
    for name, spec in attrs.items():
        try:
            _set_attr(obj, name, spec)
        except (OSError, RuntimeError, ValueError, TypeError) as exc:
            if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
                raise
            raise ConversionError(f"attribute {name!r} of /{path} cannot be written to HDF5 "
                                  f"(too large for an object header?)") from None


def _set_attr(obj, name: str, spec: dict) -> None:
    import h5py

    space = spec.get("space", "simple")
    if spec["type"] == "str":
        enc = "utf-8" if spec.get("cset") == "utf8" else "ascii"
        dt = h5py.string_dtype(enc, None if spec.get("vlen", True) else int(spec["size"]))
        if space == "null":
            obj.attrs.create(name, h5py.Empty(dt))
            return
        value = spec["value"]
        if not spec.get("vlen", True):
            conv = (lambda v: v.encode("utf-8")) if enc == "utf-8" else (lambda v: v.encode("ascii", "surrogateescape"))
            value = [conv(v) for v in value] if isinstance(value, list) else conv(value)
        if space == "scalar":
            obj.attrs.create(name, value, dtype=dt)
        else:
            arr = np.array(value, dtype=dt if spec.get("vlen", True) else dt).reshape(spec["shape"])
            obj.attrs.create(name, arr, dtype=dt)
    else:
        dt = np.dtype(spec["dtype"])
        if space == "null":
            obj.attrs.create(name, h5py.Empty(dt))
        elif space == "scalar":
            obj.attrs.create(name, np.array(spec["value"], dtype=dt).reshape(()), dtype=dt)
        else:
            obj.attrs.create(name, np.array(spec["value"], dtype=dt).reshape(spec["shape"]), dtype=dt)


#: Names in one ``layer_names`` attribute: an attribute must fit an HDF5 object header message (64 KB) and
#: a variable-length string takes 16 bytes there; longer lists are split as Keras splits them
#: (``layer_names0``, ``layer_names1`` ..., which Keras and transformers join when reading).
NAMES_PER_ATTRIBUTE = 3000


def flat_tree(names: list[str], root_attrs: dict[str, dict] | None = None) -> dict:
    """The layout of an HDF5 file written from a plain safetensors file:
    transformers' TF shard layout. Root attribute ``layer_names`` lists every
    dataset path (tensor names, in order); datasets sit at the tensor names
    (a ``/`` in a name makes groups); no ``weight_names``."""
    check_names(names)
    groups: dict[str, dict] = {"": {}}
    for n in names:
        parts = n.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            groups.setdefault("/".join(parts[:i]), {})
    lists = [names[i:i + NAMES_PER_ATTRIBUTE] for i in range(0, len(names), NAMES_PER_ATTRIBUTE)] or [[]]
    groups[""] = {f"layer_names{i}" if len(lists) > 1 else "layer_names":
                  {"type": "str", "vlen": True, "cset": "utf8", "size": None, "space": "simple",
                   "shape": [len(part)], "value": list(part)} for i, part in enumerate(lists)}
    groups[""].update(root_attrs or {})
    if len(groups) + len(names) > MAX_OBJECTS:
        raise UsageError(f"{len(names):,} tensors need more groups and datasets than tietool reads back from one "
                         f"HDF5 file ({MAX_OBJECTS:,}): refused (nothing written)")
    return {"groups": groups, "datasets": {n: {"attrs": {}, "opaque": False} for n in names}}


def check_names(names: list[str]) -> None:
    leaves = set(names)
    for n in names:
        parts = n.split("/")
        if not n or any(p in ("", ".", "..") for p in parts):
            raise UsageError(f"tensor name {n!r} cannot be an HDF5 dataset path (empty, '.' or '..' component)")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in leaves:
                raise UsageError(f"tensor names {'/'.join(parts[:i])!r} and {n!r} cannot both be HDF5 datasets")


def write_h5(path: str, ckpt: Checkpoint, tree: dict, data: dict[str, TensorInfo], files: SourceFiles,
             progress: Progress | None = None, writeback: bool = True,
             builders: dict[str, Callable[[int, int], None]] | None = None) -> None:
    """Write ``tree`` to ``path``; dataset ``p`` gets the bytes of ``data[p]``
    (``data[p]`` gives its shape and dtype), or, when ``builders`` has ``p``,
    whatever ``builders[p](fd, offset)`` writes there (a tensor built from parts
    of others). ``writeback``: start writing the copied bytes to disk while
    copying (for a file that will be fsynced)."""
    builders = builders or {}
    try:
        room_for_metadata(path, tree)
        offsets = _write_tree(path, ckpt, tree, data, progress)
    except (OSError, RuntimeError) as exc:
        raise _h5_write_error(exc, path) from None
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    wb = fastio.Writeback(fd) if writeback else None
    try:
        for off, dpath, info in offsets:
            if dpath in builders:
                builders[dpath](fd, off)
            else:
                copy_tensor(ckpt, info, files, fd, off, progress, wb)
        if wb:
            wb.finish()
    finally:
        os.close(fd)


#: Free bytes HDF5 must find before it writes a file's groups, attributes and dataset headers: a floor, and a
#: generous share per object and per byte of attribute text (measured: ~1 KB per dataset, attributes as stored).
METADATA_FLOOR = 256 * 1024
METADATA_PER_OBJECT = 4096


def room_for_metadata(path: str, tree: dict) -> None:
    """Raise ENOSPC, before HDF5 writes anything, where the disk has no room
    for the file's metadata. HDF5 1.14 can crash (SIGSEGV in ``H5Fclose``,
    reached from h5py's ``File.close``) after a write of its own metadata
    failed, leaving the temporary behind; the tensor bytes are copied by
    tietool afterwards and fail cleanly, so only the metadata needs room.
    (A disk filled by another process in between can still reach it.)"""
    objects = len(tree.get("groups", ())) + len(tree.get("datasets", ()))
    attr_bytes = sum(len(repr(a)) for a in tree.get("groups", {}).values())
    attr_bytes += sum(len(repr(d.get("attrs"))) for d in tree.get("datasets", {}).values())
    need = METADATA_FLOOR + METADATA_PER_OBJECT * objects + 2 * attr_bytes
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except (OSError, AttributeError):
        return
    free = (st.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else st.f_bavail) * st.f_frsize
    if free < need:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def _h5_write_error(exc: BaseException, path: str) -> BaseException:
    """HDF5 reports a failed write (disk full, quota...) as its own text,
    e.g. ``RuntimeError: Disable slist on flush dest failure failed (...
    errno = 28 ...)``: give back the OSError it stands for, so that the
    caller says it in plain words. Anything else is returned as it is."""
    if hasattr(exc, "message") or (isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS):
        return exc  # a tietool error (about the source), or already plain
    m = re.search(r"errno = (\d+)", str(exc))
    code = int(m.group(1)) if m else None
    if code is None:
        try:
            st = os.statvfs(os.path.dirname(os.path.abspath(path)))
            if st.f_bavail * st.f_frsize < 1 << 20:
                code = errno.ENOSPC
        except OSError:
            pass
    if code in WRITE_ERRNOS:
        return OSError(code, os.strerror(code), path)
    return exc


def _write_tree(path: str, ckpt: Checkpoint, tree: dict, data: dict[str, TensorInfo],
                progress: Progress | None) -> list[tuple[int, str, TensorInfo]]:
    """Groups, attributes and (allocated, unwritten) datasets; returns where
    each contiguous dataset's bytes go."""
    import h5py

    offsets: list[tuple[int, str, TensorInfo]] = []
    with h5py.File(path, "w", libver="earliest") as f:
        for gpath in sorted(tree["groups"], key=lambda p: (p.count("/") if p else -1, natural_key(p))):
            g = f if gpath == "" else f.require_group(gpath)
            _set_attrs(g, tree["groups"][gpath], gpath)
        for dpath, dspec in tree["datasets"].items():
            info = data[dpath]
            if dspec.get("opaque") or info.dtype == "bfloat16":
                if dtypes.DTYPES[info.dtype].bits != 16:
                    raise UsageError(f"tensor {info.name!r}: dtype {info.dtype} has no HDF5 type")
                np_dt = np.dtype("V2")
            else:
                dt = dtypes.DTYPES[info.dtype]
                if not dt.native:
                    raise UsageError(f"tensor {info.name!r}: dtype {info.dtype} has no HDF5 type "
                                     "(float8 is not written to HDF5)")
                np_dt = dt.stored.newbyteorder("<") if dt.itemsize > 1 else dt.stored
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_layout(h5py.h5d.CONTIGUOUS)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
            parent, _, leaf = dpath.rpartition("/")
            g = f.require_group(parent) if parent else f
            ds = g.create_dataset(leaf, shape=info.shape, dtype=np_dt, dcpl=dcpl)
            attrs = dict(dspec.get("attrs") or {})
            if info.dtype == "bfloat16" and "dtype" not in attrs and not dspec.get("opaque"):
                # Keras 3 reads bfloat16 back only through this marker
                attrs["dtype"] = {"type": "str", "vlen": True, "cset": "utf8", "size": None,
                                  "space": "scalar", "shape": None, "value": "bfloat16"}
            _set_attrs(ds, attrs, dpath)
            if info.nbytes:
                off = ds.id.get_offset()
                if off is None:  # HDF5 kept it elsewhere (scalars): write through h5py, block by block
                    _write_through_h5py(ds, ckpt, info, np_dt, progress)
                else:
                    offsets.append((off, dpath, info))
    return offsets


def _write_through_h5py(ds, ckpt: Checkpoint, info: TensorInfo, np_dt, progress: Progress | None) -> None:
    for start, block in ckpt.iter_stored(info.name):
        block = np.ascontiguousarray(block)
        if np_dt.kind == "V":
            block = block.view(np_dt)
        if info.shape:
            ds[start:start + block.shape[0]] = block
        else:
            ds[()] = block.reshape(())
        if progress:
            progress(block.nbytes)
