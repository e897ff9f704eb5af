"""The one source guard of every command that reads a checkpoint and writes an
output (``convert``, ``fix``, and any later one).

:class:`SourceGuard` remembers, for each source file, what identifies its
contents without reading them all: device and inode (replaced by another
file), size (truncated, grown), mtime and ctime in nanoseconds (written to:
``ctime`` changes on every write and cannot be set back by ``touch``), and a
digest of the bytes at its start and end (a rewrite of the header, or of the
last tensor, that kept every time stamp's coarse tick). :meth:`check` raises
:class:`~tietool.errors.CorruptCheckpointError` naming the source when any of
these changed; :meth:`watching` checks on the way out of the body that
writes, and reports an error met while the source changed (a verification
that found other bytes, a short read) as that change. The writer's
verification compares every byte it copied with the source, so a change the
guard's sample misses is still found there; ``--no-verify`` keeps the stat and
sample checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from typing import Iterable, Iterator

from tietool.errors import CorruptCheckpointError

#: Bytes hashed at each end of a source file.
SAMPLE_BYTES = 64 * 1024
CHANGED = "changed while reading (truncated or rewritten?); nothing written"

Identity = tuple[int, int, int, int, int, bytes]


class SourceChanged(CorruptCheckpointError):
    """A source changed while it was read (nothing was written)."""


class SourceGuard:
    """See the module notes. ``paths`` (and :meth:`add`) are the files read;
    folders and missing paths are ignored (a folder's files are added one by
    one by the caller)."""

    def __init__(self, paths: Iterable[str] = ()) -> None:
        self.identities: dict[str, Identity] = {}
        self.add(paths)

    def add(self, paths: Iterable[str]) -> None:
        for p in paths:
            p = os.fspath(p)
            if p not in self.identities:
                ident = identity(p)
                if ident is not None:
                    self.identities[p] = ident

    def changed(self) -> str | None:
        """The first source whose identity changed, or None."""
        for p, ident in self.identities.items():
            if identity(p) != ident:
                return p
        return None

    def check(self) -> None:
        p = self.changed()
        if p is not None:
            raise SourceChanged(CHANGED, p)

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Check on the way out; an error met while the source changed is
        reported as the change. (:func:`~tietool.io.safe_output.atomic_output`
        does this for what is written; this is for the reading before it.)"""
        try:
            yield
        except Exception:
            self.check()
            raise
        self.check()

    @classmethod
    def of(cls, paths: Iterable[str]) -> SourceGuard:
        """A guard of ``paths``, a folder standing for the files directly in it."""
        files: list[str] = []
        for p in paths:
            p = os.fspath(p)
            if os.path.isdir(p):
                with contextlib.suppress(OSError):
                    files += [os.path.join(p, n) for n in sorted(os.listdir(p))]
            else:
                files.append(p)
        return cls(files)


def identity(path: str) -> Identity | None:
    """(device, inode, size, mtime, ctime, digest of both ends) of a regular
    file; None for anything else or a file that cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        h = hashlib.blake2b(digest_size=16)
        h.update(os.pread(fd, SAMPLE_BYTES, 0))
        if st.st_size > SAMPLE_BYTES:
            h.update(os.pread(fd, SAMPLE_BYTES, max(SAMPLE_BYTES, st.st_size - SAMPLE_BYTES)))
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, h.digest()
    except OSError:
        return None
    finally:
        os.close(fd)
