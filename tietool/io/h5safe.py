"""The only way tietool touches HDF5: safe accessors over h5py.

Modelled on keras' ``saving_lib`` helpers, stricter: soft and external links,
external storage and virtual datasets are refused; every dataset's declared
size is checked against what it stores and against the file before anything
is read; attributes are size-capped. h5py's own errors are turned into
one-line :class:`~tietool.errors.CorruptCheckpointError`.

Filter plugins are shared libraries: a hostile file naming a filter must not
make HDF5 dlopen something from ``HDF5_PLUGIN_PATH``. HDF5 can only switch
plugin loading off for the whole process (and h5py 3.14 exposes no
``H5PLset_loading_state``), so importing this module changes nothing; instead
every dataset is checked on open (:meth:`SafeH5.dataset_entry`): a filter
that is not one of HDF5's built-in filters or h5py's LZF
(:data:`BUILTIN_FILTERS`) is refused before HDF5 is asked about it, so HDF5
never looks a plugin up for tietool. The ``tietool`` command additionally
points ``HDF5_PLUGIN_PATH`` at nothing for its own process
(:func:`tietool.cli.commands.main`).
"""

from __future__ import annotations

import contextlib
import os
import zlib
from dataclasses import dataclass, replace
from typing import IO, Any, Callable, Iterator

import h5py
import numpy as np

from tietool import dtypes
from tietool.errors import CorruptCheckpointError, TietoolError, UnsafeCheckpointError, UnsupportedFormatError
from tietool.io import h5heaps, h5values
from tietool.io.h5walk import Walk, chunk_tiles
from tietool.textsafe import bounded

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Largest attribute we will read (model_config of a huge model is a few MB).
MAX_ATTR_BYTES = 64 * 1024 * 1024
#: Chunks of one chunked dataset (each costs HDF5 an index entry when read).
MAX_CHUNKS = 100_000
#: Chunks one read may touch (:meth:`SafeH5.read_rows` splits larger reads).
READ_CHUNKS = 1024
#: Bytes of one chunk: HDF5 holds a whole chunk, and its filters' output, in memory to read any part of it.
MAX_CHUNK_BYTES = 32 * 1024 * 1024
#: Chunked/compressed datasets may legitimately store less than they declare,
#: but not this much less (DEFLATE tops out near 1032:1).
MAX_EXPANSION = 1100
EXPANSION_FLOOR = 1 << 20


def is_hdf5(path: str) -> bool:
    """HDF5 signature at offset 0 or at a power-of-two user-block offset."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            pos = 0
            while pos + 8 <= size:
                fh.seek(pos)
                if fh.read(8) == HDF5_SIGNATURE:
                    return True
                pos = 512 if pos == 0 else pos * 2
    except OSError:
        return False
    return False


def open_file(source: str | IO[bytes], label: str, size: int | None = None) -> h5py.File:
    """Open read-only. ``label`` is the name used in error messages."""
    errors = (OSError, EOFError, zlib.error) + h5heaps.zip_errors()
    try:
        if isinstance(source, str):
            return h5py.File(source, "r", locking=False)
        return h5py.File(source, "r")
    except errors as exc:
        raise CorruptCheckpointError(f"not a readable HDF5 file ({_h5_reason(exc)})", label) from None


#: What h5py raises for a file it cannot read (its error stack mapped to
#: builtins), and what a ``.keras`` member read through raises.
#: (``zipfile.BadZipFile`` too, once zipfile is imported: :func:`tietool.io.h5heaps.zip_errors`.)
H5_ERRORS: tuple[type[BaseException], ...] = (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError,
                                              EOFError, zlib.error)
#: Modules h5py calls into: an error raised there is still h5py's.
H5_CALLEES = ("numpy", "zipfile", "zlib", "io", "_io", "codecs", "encodings", "_compression", "struct")


def raised_in_h5py(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while h5py had control: the traceback's
    last frame that is neither h5py nor a library h5py calls into (numpy,
    the ``zipfile`` member it reads through) comes before an h5py frame. An
    error raised by tietool's own code (or any other Python code, such as a
    callback h5py runs) is a bug, never "corrupt file"."""
    in_h5py = False
    tb = exc.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module == "h5py" or module.startswith("h5py."):
            in_h5py = True
        elif not module.startswith(H5_CALLEES):
            in_h5py = False
        tb = tb.tb_next
    return in_h5py


def _h5_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # h5py messages look like "Unable to synchronously open file (file signature not found)"
    if "(" in text and text.endswith(")"):
        text = text[text.rfind("(") + 1 : -1]
    return text


@dataclass
class DatasetEntry:
    path: str  # full path without the leading "/" (opened again to read: nothing is kept open)
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    offset: int | None  # contiguous, allocated, little-endian: raw byte offset in the HDF5 file
    object_key: Any  # the object's address: equal for hard links to one dataset
    needs_view: str | None  # bfloat16 stored as opaque: view raw bytes as this
    chunks: tuple[int, ...] | None = None  # a chunked dataset's chunk shape


class SafeH5:
    """A read-only HDF5 file walked through checks. ``label`` names the file
    in every error; ``file_size`` bounds what datasets may claim."""

    def __init__(self, source: str | IO[bytes], label: str, file_size: int | None = None):
        self.label = label
        if file_size is None and isinstance(source, str):
            file_size = os.path.getsize(source)
        self.file_size = file_size
        self.source = source
        self.file = open_file(source, label)
        self._heaps_checked = False
        self._open_dataset: tuple[str, h5py.Dataset] | None = None
        # The whole file's walk, kept once complete (paths and addresses, nothing open): reading a
        # checkpoint walks it and convert's lossless layout description walks it again.
        self._tree: list[tuple[str, Any, bool]] | None = None  # (path, address, is a group)
        self._entries: dict[Any, DatasetEntry] = {}  # checked datasets, by object address
        self.walks = 0  # walks of the file's groups so far (a replay of the cached walk is not one)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.file.close()

    # -- guarded calls ----------------------------------------------------
    def guard(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run an h5py call; HDF5's failures become one clear error.

        Only errors raised inside h5py (or below it: HDF5, numpy, the
        ``.keras`` archive member HDF5 reads through) become
        :class:`~tietool.errors.CorruptCheckpointError`; tietool's own
        errors pass unchanged, and a bug in tietool's code (a ``TypeError``
        or ``KeyError`` raised by tietool itself, also in a callback h5py
        runs) surfaces as what it is: an internal error, not a corrupt file."""
        errors = H5_ERRORS + h5heaps.zip_errors()
        try:
            return fn()
        except errors as exc:
            if isinstance(exc, TietoolError) or not raised_in_h5py(exc):
                raise
            raise CorruptCheckpointError(f"cannot read {what} ({_h5_reason(exc)})", self.label) from None

    # -- links and walking -------------------------------------------------
    def hard_link(self, group: h5py.Group, name: str, path: str) -> Any:
        """The address of the object the hard link ``name`` of ``group``
        names, read from the link itself (nothing opened); any other link
        is refused as :meth:`check_link` refuses it."""
        info = self.guard(path, lambda: group.id.links.get_info(name.encode("utf-8")))
        if info.type != h5py.h5l.TYPE_HARD:
            self.check_link(group, name, path)
            raise UnsafeCheckpointError(f"link at /{path} of type {info.type} refused", self.label)
        return info.u

    def check_link(self, group: h5py.Group, name: str, path: str) -> None:
        link = self.guard(path, lambda: group.get(name, getlink=True))
        if isinstance(link, h5py.SoftLink):
            raise UnsafeCheckpointError(f"soft link at /{path} (to {link.path}) refused", self.label)
        if isinstance(link, h5py.ExternalLink):
            raise UnsafeCheckpointError(
                f"external link at /{path} (to {link.filename}:{link.path}) refused", self.label
            )
        if link is None:
            raise CorruptCheckpointError(f"/{path} is missing", self.label)

    def get(self, path: str) -> h5py.Group | h5py.Dataset:
        """Object at ``path``, each step's link checked."""
        node = self.file
        walked = []
        for part in path.strip("/").split("/"):
            if not part:
                continue
            walked.append(part)
            here = "/".join(walked)
            if not isinstance(node, h5py.Group) or not self.guard(here, lambda: part in node):  # noqa: B023 (called at once)
                raise CorruptCheckpointError(f"/{'/'.join(walked)} is missing", self.label)
            self.check_link(node, part, "/".join(walked))
            node = self.guard("/".join(walked), lambda: node[part])  # noqa: B023 (called at once)
        return node

    def has(self, path: str) -> bool:
        node = self.file
        for part in path.strip("/").split("/"):
            if not isinstance(node, h5py.Group) or not self.guard(path, lambda: part in node):  # noqa: B023 (called at once)
                return False
            self.check_link(node, part, path)
            node = self.guard(path, lambda: node[part])  # noqa: B023 (called at once)
        return True

    def walk(self, root: str = "") -> Iterator[DatasetEntry]:
        """Every dataset below ``root``, in name order, links checked
        (:meth:`visit`). A dataset reached by two hard links is yielded
        twice, with the same ``object_key``."""
        for path, obj, key, is_group in self._objects(root):
            if is_group:
                continue
            entry = self._entries.get(key)
            if entry is None:
                obj = obj if obj is not None else self._open(path)
                if not isinstance(obj, h5py.Dataset):
                    continue
                entry = self._entries[key] = self.dataset_entry(obj, path, key)
            yield replace(entry, path=path) if entry.path != path else entry

    def visit(self, root: str = "") -> Iterator[tuple[str, h5py.Group | h5py.Dataset]]:
        """``(path, object)`` for ``root``'s group and every group and dataset
        below it, depth first in name order, each link checked. Groups are
        told apart by their object address, not their path: a group reached
        again (a hard link, a link back up) is not walked again, so a link
        graph that fans out and loops costs its objects, not its paths.
        Bounded by :data:`~tietool.io.h5walk.MAX_OBJECTS`, ``MAX_LINKS`` and ``MAX_DEPTH``."""
        for path, obj, _key, _is_group in self._objects(root):
            yield path, (obj if obj is not None else self._open(path))

    def _objects(self, root: str) -> Iterator[tuple[str, Any, Any, bool]]:
        """``(path, object or None, address, is a group)`` of a walk from ``root``
        (:class:`~tietool.io.h5walk.Walk`); the whole file is walked once,
        then replayed from the paths and addresses it found (objects None:
        nothing is kept open, each costs HDF5 some kilobytes)."""
        self.walks += self._tree is None or bool(root.strip("/"))
        if root.strip("/"):
            for path, obj, key in Walk(self).start(self.get(root), root.strip("/")):
                yield path, obj, key, isinstance(obj, h5py.Group)
            return
        if self._tree is not None:
            for path, key, is_group in self._tree:
                yield path, None, key, is_group
            return
        tree = []
        for path, obj, key in Walk(self).start(self.file, ""):
            tree.append((path, key, isinstance(obj, h5py.Group)))
            yield path, obj, key, tree[-1][2]
        self._tree = tree

    def _open(self, path: str) -> h5py.Group | h5py.Dataset:
        """An object the walk reached at ``path`` (its links checked then)."""
        return self.guard(f"/{path}", lambda: self.file[path]) if path else self.file

    def object_key(self, obj, path: str):
        # The object header address: one per stored object, shared by hard links.
        return self.guard(f"/{path}", lambda: h5py.h5o.get_info(obj.id).addr)

    # -- datasets -----------------------------------------------------------
    def dataset_entry(self, ds: h5py.Dataset, path: str, key: Any = None) -> DatasetEntry:
        """A dataset checked before anything is read from it: no virtual or
        external storage, a tensor dtype, only built-in filters, and a
        declared size that its storage and the file can hold."""
        where = f"dataset /{path}"
        self._check_storage_is_local(ds, where)
        shape = self.guard(where, lambda: ds.shape)
        if shape is None:  # null dataspace
            raise CorruptCheckpointError(f"{where} has no dataspace", self.label)
        shape = tuple(int(d) for d in shape)
        h5dtype = self.guard(where, lambda: ds.dtype)
        dt, needs_view = self._tensor_dtype(ds, h5dtype, where)
        declared = dtypes.nbytes_for(shape, dt.name)
        dcpl = self.guard(where, lambda: ds.id.get_create_plist())
        layout = self.guard(where, lambda: dcpl.get_layout())
        self._check_filters(dcpl, where)
        stored = self.guard(where, lambda: ds.id.get_storage_size())
        offset = chunks = None
        size = f"{declared} bytes ({_shape(shape)} {dt.name})"
        if layout == h5py.h5d.CONTIGUOUS:
            raw_offset = self._contiguous_offset(ds, declared, stored, size, where)
            if raw_offset is not None and (h5dtype.byteorder in "<=|" or needs_view):
                offset = raw_offset
        elif layout == h5py.h5d.CHUNKED:
            self._check_chunked(declared, stored, size, where)
            chunks = self._check_chunks(ds, dcpl, dt.itemsize, where)
        elif layout == h5py.h5d.COMPACT:
            if declared > 64 * 1024:
                raise CorruptCheckpointError(f"{where} is compact but declares {declared} bytes", self.label)
        else:
            raise UnsupportedFormatError(f"{where} has an unsupported storage layout", self.label)
        key = self.object_key(ds, path) if key is None else key
        return DatasetEntry(path, shape, dt.name, declared, offset, key, needs_view, chunks)

    def _check_storage_is_local(self, ds: h5py.Dataset, where: str) -> None:
        if self.guard(where, lambda: ds.is_virtual):
            raise UnsafeCheckpointError(f"{where} is a virtual dataset (reads other files); refused", self.label)
        external = self.guard(where, lambda: ds.external)
        if external:
            files = bounded(str(e[0]) for e in external)
            raise UnsafeCheckpointError(f"{where} keeps its data in external file(s) {files}; refused", self.label)

    def _tensor_dtype(self, ds: h5py.Dataset, h5dtype: np.dtype, where: str) -> tuple[dtypes.DType, str | None]:
        """The tensor dtype, and ``"bfloat16"`` when the raw bytes must be viewed as such."""
        needs_view = None
        dt = dtypes.from_numpy(h5dtype) if h5dtype.kind != "V" else None
        if h5dtype.kind == "V" and h5dtype.itemsize == 2 and h5dtype.fields is None:
            # bfloat16 has no HDF5 type: Keras stores it as 2-byte opaque, and
            # Keras 3 marks it with a `dtype` attribute. No other 2-byte opaque
            # type is written by Keras, so an unmarked one is read the same way.
            marker = self.attr(ds, "dtype", where) if "dtype" in self.attr_names(ds) else None
            if marker in (None, "bfloat16"):
                dt, needs_view = dtypes.DTYPES["bfloat16"], "bfloat16"
        if dt is None:
            raise UnsupportedFormatError(f"{where} has dtype {h5dtype} which is not a tensor dtype", self.label)
        return dt, needs_view

    def _check_filters(self, dcpl: Any, where: str) -> None:
        for i in range(self.guard(where, lambda: dcpl.get_nfilters())):
            code = self.guard(where, lambda: dcpl.get_filter(i))[0]  # noqa: B023 (called at once)
            if not _filter_available(code):
                raise UnsupportedFormatError(
                    f"{where} needs HDF5 filter {code}, which is not built in (filter plugins are never loaded)",
                    self.label,
                )

    def _contiguous_offset(self, ds: h5py.Dataset, declared: int, stored: int, size: str, where: str) -> int | None:
        """The byte offset of a contiguous dataset's data (None: nothing
        stored, for an empty one), checked to hold the declared size inside the file."""
        if declared and stored != declared:
            raise UnsafeCheckpointError(f"{where} declares {size} but stores {stored}; refused", self.label)
        raw_offset = self.guard(where, lambda: ds.id.get_offset())
        if not declared:
            return None
        if raw_offset is None:
            raise CorruptCheckpointError(f"{where} has no data stored", self.label)
        if self.file_size is not None and raw_offset + declared > self.file_size:
            raise CorruptCheckpointError(
                f"{where} data ends at byte {raw_offset + declared}, past the end of the file "
                f"({self.file_size} bytes): truncated?",
                self.label,
            )
        return raw_offset

    def _check_chunked(self, declared: int, stored: int, size: str, where: str) -> None:
        if declared > EXPANSION_FLOOR and declared > MAX_EXPANSION * max(stored, 1):
            raise UnsafeCheckpointError(
                f"{where} declares {size} but stores only {stored}; refused as a shape/decompression bomb",
                self.label,
            )
        if self.file_size is not None and stored > self.file_size:
            raise CorruptCheckpointError(f"{where} claims more stored bytes than the file has", self.label)

    def _check_chunks(self, ds: h5py.Dataset, dcpl: Any, itemsize: int, where: str) -> tuple[int, ...]:
        """Refuse, before anything is read, a chunk HDF5 would have to hold
        whole in memory past :data:`MAX_CHUNK_BYTES` (a small gzip chunk can
        inflate to gigabytes) and more than :data:`MAX_CHUNKS` chunks."""
        chunk = self.guard(where, lambda: dcpl.get_chunk())
        chunk_bytes = itemsize * int(np.prod(chunk, dtype=object))
        if chunk_bytes > MAX_CHUNK_BYTES:
            raise UnsafeCheckpointError(f"{where} has chunks of {chunk_bytes} bytes ({_shape(tuple(chunk))}; "
                                        f"limit {MAX_CHUNK_BYTES}); refused", self.label)
        count = self.guard(where, lambda: ds.id.get_num_chunks())
        if count > MAX_CHUNKS:
            raise UnsafeCheckpointError(f"{where} is stored in {count} chunks (limit {MAX_CHUNKS}); refused",
                                        self.label)
        return tuple(int(c) for c in chunk)

    def read_rows(self, entry: DatasetEntry, start: int, stop: int, cols: slice | None = None) -> np.ndarray:
        """Rows ``start:stop`` (and, for a 2-D dataset, columns ``cols``: an
        HDF5 hyperslab), in native byte order, in stored form (bfloat16's
        2-byte opaque as uint16: :func:`tietool.dtypes.stored_dtype`)."""
        ds = self._dataset(entry.path)
        where = f"dataset /{entry.path}"
        if not entry.shape:
            arr = np.asarray(self.guard(where, lambda: ds[()]))
        else:
            box = [slice(start, stop)] + [slice(0, d) for d in entry.shape[1:]]
            if cols is not None:
                box[1] = slice(*cols.indices(entry.shape[1])[:2])
            arr = self._read_box(entry, tuple(box), where)
        if entry.needs_view:
            arr = np.ascontiguousarray(arr).view(dtypes.stored_dtype(entry.needs_view))
        elif arr.dtype.byteorder == (">" if np.little_endian else "<"):
            arr = arr.astype(arr.dtype.newbyteorder("="))
        return arr

    def _dataset(self, path: str) -> h5py.Dataset:
        """The dataset at ``path`` (checked when the file was walked), kept
        open while reads of it follow one another."""
        last = self._open_dataset  # one read of the attribute: threads may replace it
        if last is None or last[0] != path:
            last = self._open_dataset = (path, self.guard(f"dataset /{path}", lambda: self.file[path]))
        return last[1]

    def _read_box(self, entry: DatasetEntry, box: tuple[slice, ...], where: str) -> np.ndarray:
        """The hyperslab ``box``; of a chunked dataset, in reads of at most
        :data:`READ_CHUNKS` chunks each (HDF5 keeps some kilobytes of state per
        chunk a read touches: one read over 90,000 tiny chunks took 1.2 GB)."""
        ds = self._dataset(entry.path)
        spans = [b.stop - b.start for b in box]
        if entry.chunks is None or min(spans) <= 0:
            return self.guard(where, lambda: ds[box])
        out = np.empty(spans, dtype=self.guard(where, lambda: ds.dtype))
        for tile in chunk_tiles(box, entry.chunks, READ_CHUNKS):
            part = self.guard(where, lambda: ds[tile])  # noqa: B023 (called at once)
            out[tuple(slice(t.start - b.start, t.stop - b.start) for t, b in zip(tile, box, strict=True))] = part
        return out

    # -- attributes ---------------------------------------------------------
    def attr_names(self, obj) -> list[str]:
        return self.guard("attributes", lambda: list(obj.attrs.keys()))

    def attr(self, obj, name: str, where: str | None = None) -> Any:
        """An attribute's value, size-capped; bytes decoded as UTF-8; numpy
        string arrays turned into lists of str."""
        where = where or (obj.name or "/")
        label = f"attribute {name!r} of {where}"

        def _read():
            aid = obj.attrs.get_id(name)
            try:
                size = aid.get_storage_size()
            except RuntimeError:  # HDF5 reports an empty attribute's 0 bytes as a failure
                size = 0
            if size > MAX_ATTR_BYTES:
                raise UnsafeCheckpointError(f"{label} is {size} bytes (limit {MAX_ATTR_BYTES})", self.label)
            if aid.get_type().detect_class(h5py.h5t.VLEN) or h5values.is_vlen_string(aid.get_type()):
                self.check_global_heaps()
            return obj.attrs[name]

        value = self.guard(label, _read)
        return h5values.plain(value, label, self.label)

    def check_global_heaps(self) -> None:
        """Variable-length strings live in global heap collections: check
        them all once, before the first such value is read (:mod:`.h5heaps`)."""
        if self._heaps_checked:
            return
        size = self.file_size
        if size is None:
            size = self.guard("file size", lambda: self.file.id.get_filesize())
        # every dataset reachable, walked as reading will walk it (by address, bounded); HDF5's own
        # H5Ovisit took 37 s over a group of 410,000 hard links before any limit could apply
        datasets = ((obj if obj is not None else self._open(path)).id
                    for path, obj, _key, is_group in self._objects("") if not is_group)
        extents = self.guard("object headers", lambda: h5heaps.data_extents(datasets, self.label, MAX_CHUNKS))
        h5heaps.check_heaps(self.source, extents, size, self.label)
        self._heaps_checked = True

    def json_attr(self, obj, name: str) -> Any:
        """A JSON-valued attribute parsed as data (never deserialized as objects)."""
        from tietool.config import parse_json_text

        text = self.attr(obj, name)
        if not isinstance(text, str):
            raise CorruptCheckpointError(f"attribute {name!r} is not a JSON string", self.label)
        return parse_json_text(text, f"{self.label}:{name}")


#: HDF5's built-in filters (deflate, shuffle, fletcher32, szip, n-bit,
#: scale-offset) and the LZF filter h5py registers itself. Any other id would
#: make HDF5 search its plugin path, so it is refused without asking HDF5.
BUILTIN_FILTERS = frozenset({1, 2, 3, 4, 5, 6, 32000})


def _filter_available(code: int) -> bool:
    if code not in BUILTIN_FILTERS:
        return False
    try:
        return bool(h5py.h5z.filter_avail(code))
    except Exception:
        return False


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
