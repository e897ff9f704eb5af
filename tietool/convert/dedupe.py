"""Stored copies of one tensor, found and verified bit for bit before any
is merged (``--ties dedupe``).

Candidates: the tie groups of :func:`tietool.ties.verify.find_ties` of kind
``duplicate-copies`` / ``shared-storage``, HDF5 hard links (one storage
key), and the same Keras 2 variable stored under two layer groups (the same
weight name after the group: BERT's ``bert/...`` and ``mlm___cls/...``, T5's
``shared``/``encoder``/``decoder``). Each candidate is compared with the
first of its group, streamed; only bit-identical copies are merged.

A group's candidates are first split by shape, dtype and a digest of their
first :data:`PREFIX_BYTES` (one short read per tensor): many same-shaped
matrices that are not copies (Keras 2 layers all named ``kernel:0``) would
otherwise cost a comparison per pair. Only candidates whose prefixes agree
are compared in full.
"""

from __future__ import annotations

import hashlib

from tietool.io import rawio
from tietool.io.tensorcopy import SourceFiles, same_tensor_bytes

from ..formats import format_of
from ..model import Checkpoint, TensorInfo

#: Bytes read from the start of each candidate to split a group before any full comparison.
PREFIX_BYTES = 64 * 1024


def _keras2_suffix(ckpt: Checkpoint, t: TensorInfo) -> str | None:
    if not format_of(ckpt).layer_paths or not t.layer:
        return None
    for prefix in ("", "model_weights/"):
        p = f"{prefix}{t.layer}/"
        if t.name.startswith(p):
            return t.name[len(p):]
    return None


def _ties_groups(ckpt: Checkpoint) -> list[list[str]]:
    """Stored copies of the tied matrix that tie detection names (their bytes
    are compared before anything is merged)."""
    from tietool.ties.verify import DUPLICATE, SHARED, find_ties

    out = []
    for g in find_ties(ckpt):
        if g.kind in (DUPLICATE, SHARED):
            names = [m.name for m in g.members if m.stored and not m.transposed]
            if len(names) > 1:
                out.append(names)
    return out


def _candidate_groups(ckpt: Checkpoint) -> list[list[str]]:
    """Groups of names that may be one tensor stored several times (unioned)."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    buckets: dict[tuple[str, object], list[str]] = {}
    for t in ckpt:
        if t.storage_key is not None:
            buckets.setdefault(("storage", t.storage_key), []).append(t.name)
        suffix = _keras2_suffix(ckpt, t)
        if suffix is not None:
            buckets.setdefault(("suffix", suffix), []).append(t.name)
    for names in [g for g in buckets.values() if len(g) > 1] + _ties_groups(ckpt):
        for n in names:
            parent.setdefault(n, n)
        base = root(names[0])
        for n in names[1:]:
            r = root(n)
            if r != base:
                parent[r] = base
    members: dict[str, list[str]] = {}
    for n in parent:
        members.setdefault(root(n), []).append(n)
    order = {n: i for i, n in enumerate(ckpt.tensors)}
    return [sorted(set(names), key=order.__getitem__) for names in members.values()]


def _prefix_key(t: TensorInfo, files: SourceFiles) -> tuple:
    """Shape, dtype and what the tensor's first bytes digest to (None for a
    tensor not stored as one raw byte range: compared in full)."""
    digest = None
    if t.offset is not None and t.nbytes:
        view = files.buffer(min(PREFIX_BYTES, t.nbytes))
        rawio.read_into(files.fd(t.file), view, t.offset, t.file)
        digest = hashlib.blake2b(view, digest_size=16).digest()
    return tuple(t.shape), t.dtype, t.nbytes, digest


def _split(ckpt: Checkpoint, names: list[str], files: SourceFiles) -> list[list[str]]:
    if len(names) < 3:  # one comparison either way
        return [names]
    parts: dict[tuple, list[str]] = {}
    for n in names:
        parts.setdefault(_prefix_key(ckpt.tensors[n], files), []).append(n)
    if any(key[-1] is None for key in parts):  # one not stored raw: compared with every candidate
        return [names]
    return [g for g in parts.values() if len(g) > 1]


def find_copies(ckpt: Checkpoint, files: SourceFiles) -> dict[str, str]:
    """``{removed: kept}`` for every stored tensor that is a verified
    bit-identical copy of an earlier one."""
    removed: dict[str, str] = {}
    for pending in [g for group in _candidate_groups(ckpt) for g in _split(ckpt, group, files)]:
        while len(pending) > 1:
            kept, rest = pending[0], pending[1:]
            k = ckpt.tensors[kept]
            left = []
            for n in rest:
                t = ckpt.tensors[n]
                same = t.shape == k.shape and t.dtype == k.dtype and (
                    (t.storage_key is not None and t.storage_key == k.storage_key)
                    or same_tensor_bytes(ckpt, k, ckpt, t, files))
                if same:
                    removed[n] = kept
                else:
                    left.append(n)
            pending = left
    return removed
