"""Walking an HDF5 file's groups and reading chunked datasets, bounded.

A walk tells groups apart by their object address, not their path: a group
reached again (a hard link, a link back up) is not walked again, so a link
graph that fans out and loops costs its objects, not its paths. Reads of a
chunked dataset are split so that each touches a bounded number of chunks.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Iterator

import h5py

from tietool.errors import UnsafeCheckpointError

# Limits of one walk through a file (README, "Limits"): exceeding one is
# UnsafeCheckpointError (exit 2) within seconds, not a walk without end.
#: Objects (groups and datasets), each counted once however many links reach it.
MAX_OBJECTS = 20_000
#: Links followed (hard links to an object already seen included).
MAX_LINKS = 50_000
#: Groups nested in groups.
MAX_DEPTH = 64

def chunk_tiles(box: tuple[slice, ...], chunks: tuple[int, ...], limit: int) -> Iterator[tuple[slice, ...]]:
    """Chunk-aligned parts of ``box`` that each touch at most ``limit``
    chunks, filling the last axes first (whole rows where they fit)."""
    first = [b.start // c for b, c in zip(box, chunks, strict=True)]
    count_on = [(b.stop - 1) // c - f + 1 for b, c, f in zip(box, chunks, first, strict=True)]
    step = [1] * len(box)
    count = 1
    for ax in reversed(range(len(box))):
        step[ax] = max(1, min(count_on[ax], limit // count))
        count *= step[ax]
    axes = [[slice(max(b.start, k * c), min(b.stop, (k + st) * c)) for k in range(f, f + n, st)]
            for b, c, f, n, st in zip(box, chunks, first, count_on, step, strict=True)]
    yield from itertools.product(*axes)


class Walk:
    """One walk: every object seen, by its address (a group is walked once,
    a dataset opened once), and the counts against the limits. Nothing is
    kept open: one open HDF5 dataset costs some kilobytes."""

    def __init__(self, h5: Any):  # a tietool.io.h5safe.SafeH5 (which imports this module)
        self.h5 = h5
        self.seen: dict[Any, bool] = {}  # address -> is a group
        self.objects = 0
        self.links = 0

    def start(self, group: h5py.Group, prefix: str) -> Iterator[tuple[str, Any, Any]]:
        """``(path, object, address)`` for ``group`` and everything below it;
        ``object`` is None for a dataset reached again by another hard link."""
        yield from self.group(group, prefix, 0, self.h5.object_key(group, prefix))

    def group(self, group: h5py.Group, prefix: str, depth: int, key: Any) -> Iterator[tuple[str, Any, Any]]:
        h5 = self.h5
        if depth > MAX_DEPTH:
            raise UnsafeCheckpointError(f"groups nested deeper than {MAX_DEPTH} at /{prefix}", h5.label)
        self.seen[key] = True
        self._count_object()
        yield prefix, group, key
        count = h5.guard(f"/{prefix}", lambda: len(group))
        if self.links + count > MAX_LINKS:  # before listing (and sorting) the names
            raise UnsafeCheckpointError(f"more than {MAX_LINKS} links; refused", h5.label)
        names = h5.guard(f"/{prefix}", lambda: sorted(group.keys(), key=natural_key))
        for name in names:
            self.links += 1
            path = f"{prefix}/{name}" if prefix else name
            addr = h5.hard_link(group, name, path)
            is_group = self.seen.get(addr)
            if is_group:
                continue  # walked already
            obj = None
            if is_group is None:
                obj = h5.guard(f"/{path}", lambda: group[name])  # noqa: B023 (called at once)
                if isinstance(obj, h5py.Group):
                    yield from self.group(obj, path, depth + 1, addr)
                    continue
                if not isinstance(obj, h5py.Dataset):
                    continue  # named datatypes carry no data: nothing to list
                self.seen[addr] = False
            self._count_object()  # a dataset counts again for each hard link to it
            yield path, obj, addr

    def _count_object(self) -> None:
        self.objects += 1
        if self.objects > MAX_OBJECTS:
            raise UnsafeCheckpointError(f"more than {MAX_OBJECTS} objects; refused", self.h5.label)


def natural_key(name: str) -> list:
    """Sort "vars/2" before "vars/10" (Keras 3 numbers variables)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part]
