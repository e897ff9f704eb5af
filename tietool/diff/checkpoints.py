"""Two checkpoints compared tensor by tensor: ``tietool diff A B``.

Pairs come from :mod:`tietool.diff.match` (same name, aliases, tietool's name
records, transformers' TF <-> PyTorch rules, a tied head left out). Each pair
is streamed in bounded blocks of A's rows: B's rows when the two share an
element order, B's *columns* when B is stored transposed (as ``verify-tie``
reads a transposed copy), so memory is bounded by a few blocks whatever the
tensor size. A transposed pair of at most :data:`WHOLE_TRANSPOSE_BLOCKS`
blocks (32 MB) is read in one piece per side: a column block costs one read
per row. Conv kernels (permuted) and ``[1, n]`` biases are small and read
whole, up to :data:`MAX_WHOLE_BYTES`.

Exact by default: elements compared as bits (bfloat16 as stored; NaN equals
NaN only with the same payload; -0.0 differs from 0.0). With ``atol``/``rtol``
the test is ``verify-tie``'s: ``numpy.isclose(a, b)`` on float64 upcasts
(``|a - b| <= atol + rtol * |b|``, an option not given counts as 0), any NaN
matching any NaN. Per pair: ``max_abs`` = max ``|a - b|`` and ``max_rel`` =
max ``|a - b| / |b|`` (the scale ``isclose`` judges by; elements where b is 0
count in ``max_abs`` only), over the elements whose bits differ;
``rel_l2`` = ``||a - b|| / ||a||`` over the whole tensor; elements and rows
(A's first axis) that differ beyond the tolerance (bits, when exact); the
first such element's index, in A's layout.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from tietool.blocks import DIFF_BLOCK_BYTES
from tietool.errors import UsageError
from tietool.formats import open_checkpoint
from tietool.io.blockread import BlockReader, transpose_into
from tietool.io.compare import Tally
from tietool.model import Checkpoint, TensorInfo

#: Bytes of A's rows read per step (B adds as much): tietool.blocks.DIFF_BLOCK_BYTES.
BLOCK_BYTES = DIFF_BLOCK_BYTES
#: A transposed pair up to this many blocks is read in one piece per side.
WHOLE_TRANSPOSE_BLOCKS = 4
#: Largest tensor read whole (permuted conv kernels, squeezed biases).
MAX_WHOLE_BYTES = 256 * 1024 * 1024

IDENTICAL = "identical"
NEAR = "near"
DIFFERS = "differs"
ONLY_A = "only-a"
ONLY_B = "only-b"
SHAPE = "shape-mismatch"
DTYPE = "dtype-mismatch"
STATUSES = (DIFFERS, SHAPE, DTYPE, ONLY_A, ONLY_B, NEAR, IDENTICAL)  # report order
MATCHING = (IDENTICAL, NEAR)
NO_LAYER = "(no layer)"


def _num(x: float | None) -> float | str | None:
    """A JSON-safe number (inf / nan as strings)."""
    if x is None or math.isfinite(x):
        return x
    return str(x)


@dataclass(frozen=True)
class TensorDiff:
    """How one pair (or one unmatched tensor) compares."""

    a: str | None
    b: str | None
    status: str
    match: str | None  # how the pair was found (tietool.diff.match); None when unmatched
    transform: str | None  # B's layout relative to A's: transpose, permute[...], squeeze
    layer: str  # the block the tensor belongs to (``transformer.h.0``) or NO_LAYER
    key: str  # the name shown and grouped by (the PyTorch name when TF<->PT rules matched)
    shape_a: tuple[int, ...] | None = None
    shape_b: tuple[int, ...] | None = None
    dtype_a: str | None = None
    dtype_b: str | None = None
    stored_a: str | None = None  # the stored tensor behind an alias
    stored_b: str | None = None
    elements: int = 0
    elements_differ: int = 0
    bits_differ: int = 0
    rows_differ: int = 0
    first_index: tuple[int, ...] | None = None
    max_abs: float | None = None
    max_rel: float | None = None
    rel_l2: float | None = None
    nan_mismatch: int = 0

    @property
    def matches(self) -> bool:
        return self.status in MATCHING

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "a": self.a, "b": self.b, "status": self.status, "match": self.match, "transform": self.transform,
            "layer": self.layer, "key": self.key,
            "max_abs": _num(self.max_abs), "max_rel": _num(self.max_rel), "rel_l2": _num(self.rel_l2),
            "shape_a": list(self.shape_a) if self.shape_a is not None else None,
            "shape_b": list(self.shape_b) if self.shape_b is not None else None,
            "dtype_a": self.dtype_a, "dtype_b": self.dtype_b,
            "elements": self.elements, "elements_differ": self.elements_differ, "bits_differ": self.bits_differ,
            "rows_differ": self.rows_differ,
            "first_index": list(self.first_index) if self.first_index is not None else None,
            "nan_mismatch": self.nan_mismatch,
        }
        if self.stored_a:
            d["stored_a"] = self.stored_a
        if self.stored_b:
            d["stored_b"] = self.stored_b
        return d


@dataclass(frozen=True)
class LayerSummary:
    layer: str
    tensors: int
    differ: int  # pairs that do not match (any status but identical / near)
    elements: int
    elements_differ: int
    max_abs: float | None
    max_rel_l2: float | None

    def to_json(self) -> dict[str, Any]:
        return {"layer": self.layer, "tensors": self.tensors, "differ": self.differ, "elements": self.elements,
                "elements_differ": self.elements_differ, "max_abs": _num(self.max_abs),
                "max_rel_l2": _num(self.max_rel_l2)}


@dataclass(frozen=True)
class DiffResult:
    a: str
    b: str
    format_a: str
    format_b: str
    atol: float | None
    rtol: float | None
    tensors: tuple[TensorDiff, ...]
    layers: tuple[LayerSummary, ...]

    @property
    def exact(self) -> bool:
        return self.atol is None and self.rtol is None

    @property
    def identical(self) -> bool:
        """Everything matched, and matches (bit for bit, or within the tolerance)."""
        return all(t.matches for t in self.tensors)

    def summary(self) -> dict[str, Any]:
        by_status = {s: 0 for s in STATUSES}
        by_match: dict[str, int] = {}
        for t in self.tensors:
            by_status[t.status] += 1
            if t.match:
                by_match[t.match] = by_match.get(t.match, 0) + 1
        return {
            "pairs": sum(1 for t in self.tensors if t.match), "by_status": by_status, "by_match": by_match,
            "transformed": sum(1 for t in self.tensors if t.transform),
            "elements": sum(t.elements for t in self.tensors),
            "elements_differ": sum(t.elements_differ for t in self.tensors),
            "comparison": "exact (bitwise)" if self.exact else f"atol={self.atol or 0.0}, rtol={self.rtol or 0.0}",
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "identical": self.identical, "a": self.a, "b": self.b, "format_a": self.format_a,
            "format_b": self.format_b, "atol": self.atol, "rtol": self.rtol,
            "tensors": [t.to_json() for t in self.tensors], "summary": self.summary(),
            "layers": [g.to_json() for g in self.layers],
        }


# -- layers -------------------------------------------------------------------------------

def layer_of(name: str) -> str:
    """The block a tensor belongs to: its name up to the first layer index
    (``transformer.h.0``, ``encoder.block.1``; TF ``h_._0`` read as ``h.0``);
    Keras ``vars/N`` and ``:0`` are not layer indices."""
    parts = [p for p in re.split(r"[/.]", re.sub(r"_\._", ".", re.sub(r":\d+$", "", name))) if p]
    for i, p in enumerate(parts):
        if p.isdigit() and i > 0 and parts[i - 1] != "vars":
            return ".".join(parts[: i + 1])
    return NO_LAYER


def layer_sort_key(layer: str) -> tuple:
    if layer == NO_LAYER:
        return (1,)
    head, _, idx = layer.rpartition(".")
    return (0, head, int(idx))


def summarize_layers(tensors: list[TensorDiff]) -> tuple[LayerSummary, ...]:
    groups: dict[str, list[TensorDiff]] = {}
    for t in tensors:
        groups.setdefault(t.layer, []).append(t)
    out = []
    for layer in sorted(groups, key=layer_sort_key):
        ts = groups[layer]
        abs_ = [t.max_abs for t in ts if t.max_abs is not None]
        l2 = [t.rel_l2 for t in ts if t.rel_l2 is not None]
        out.append(LayerSummary(layer, len(ts), sum(1 for t in ts if not t.matches),
                                sum(t.elements for t in ts), sum(t.elements_differ for t in ts),
                                max(abs_) if abs_ else None, max(l2) if l2 else None))
    return tuple(out)


# -- streaming comparison ----------------------------------------------------------------

class _Side:
    """Bounded reads of one checkpoint's tensors."""

    def __init__(self, ckpt: Checkpoint):
        self.ckpt = ckpt
        self.blocks = BlockReader(ckpt)

    def close(self) -> None:
        self.blocks.close()

    def rows(self, info: TensorInfo, r0: int, r1: int, slot: int) -> np.ndarray:
        if not info.shape:
            return self.ckpt.data.read_rows(info, 0, 1)
        return self.blocks.rows(info, r0, r1, slot)

    def whole(self, info: TensorInfo) -> np.ndarray:
        if info.nbytes > MAX_WHOLE_BYTES:
            raise UsageError(f"{info.name}: {info.nbytes:,} bytes is too large to compare in this layout "
                             f"(at most {MAX_WHOLE_BYTES:,} read whole)", self.ckpt.path)
        return self.ckpt.read_stored(info.name)


def _step(info: TensorInfo, other: TensorInfo, block_bytes: int) -> int:
    rows = info.shape[0] if info.shape else 1
    row_bytes = max(1, max(info.nbytes, other.nbytes) // max(1, rows))
    return max(1, block_bytes // row_bytes)


def compare_tensors(sa: _Side, ia: TensorInfo, sb: _Side, ib: TensorInfo, perm, squeeze: bool,
                    atol: float | None, rtol: float | None, block_bytes: int = BLOCK_BYTES) -> Tally:
    """Stream one pair; ``perm`` takes B's stored layout to A's."""
    acc = Tally(tuple(ia.shape), atol, rtol, dtype_names=(ia.dtype, ib.dtype))
    if perm == (1, 0) and len(ia.shape) == 2 and max(ia.nbytes, ib.nbytes) <= WHOLE_TRANSPOSE_BLOCKS * block_bytes:
        # small enough: B read in one piece and transposed tile by tile (a column block of a
        # row-major tensor is one read per row: thousands of small reads for a [3072, 768] kernel)
        R, C = ia.shape
        raw = sb.rows(ib, 0, C, 1)
        acc.fold(sa.rows(ia, 0, R, 0), transpose_into(raw, sb.blocks.scratch(2, raw.dtype, (R, C))), 0)
    elif perm == (1, 0) and len(ia.shape) == 2:
        R, C = ia.shape
        step = _step(ia, ib, block_bytes)
        for r0 in range(0, R, step):
            r1 = min(R, r0 + step)
            a = sa.rows(ia, r0, r1, 0)
            raw = sb.blocks.block(ib, 0, C, r0, r1, slot=1)
            b = transpose_into(raw, sb.blocks.scratch(2, raw.dtype, (r1 - r0, C)))
            acc.fold(a, b, r0 * C)
    elif perm is not None or squeeze:
        a = sa.whole(ia)
        b = sb.whole(ib)
        b = np.transpose(b, perm) if perm is not None else b.reshape(a.shape)
        acc.fold(np.ascontiguousarray(a), np.ascontiguousarray(b), 0)
    elif ia.shape:
        step = _step(ia, ib, block_bytes)
        for r0 in range(0, ia.shape[0], step):
            r1 = min(ia.shape[0], r0 + step)
            acc.fold(sa.rows(ia, r0, r1, 0), sb.rows(ib, r0, r1, 1), r0 * acc.row_elems)
    else:
        acc.fold(sa.rows(ia, 0, 1, 0), sb.rows(ib, 0, 1, 1), 0)
    if acc.bits_differ and acc.clean_until:
        # the identical prefix: its ||a|| is only needed now that the pair differs
        acc.finish_norm(block for _, block in sa.ckpt.iter_chunks(ia.name, block_bytes))
    acc.release()  # results are cached per pair: keep the figures, not the scratch buffers
    return acc


def _shapes_fit(ia: TensorInfo, ib: TensorInfo, perm, squeeze: bool) -> bool:
    if perm is not None:
        return len(ia.shape) == len(ib.shape) and all(ia.shape[i] == ib.shape[p] for i, p in enumerate(perm))
    if squeeze:
        return math.prod(ia.shape) == math.prod(ib.shape)
    return tuple(ia.shape) == tuple(ib.shape)


def _check_tolerance(atol: float | None, rtol: float | None) -> None:
    for label, v in (("--atol", atol), ("--rtol", rtol)):
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise UsageError(f"{label} must be a finite number >= 0 (got {v})")


def diff_checkpoints(a: str | os.PathLike, b: str | os.PathLike, atol: float | None = None,
                     rtol: float | None = None, block_bytes: int = BLOCK_BYTES) -> DiffResult:
    """Compare every tensor of checkpoint ``a`` with its counterpart in ``b``
    (file, shard index, ``.keras`` or model folder; any layouts)."""
    from tietool.diff.match import match_checkpoints

    _check_tolerance(atol, rtol)
    a, b = os.fspath(a), os.fspath(b)
    with open_checkpoint(a) as ca, open_checkpoint(b) as cb:
        table = _kerashub_table(a, ca, b, cb, atol, rtol)  # a keras-hub preset against a transformers folder
        pairs = match_checkpoints(ca, cb) if table is None else []
        sa, sb = _Side(ca), _Side(cb)
        cache: dict[tuple, Tally] = {}
        out: list[TensorDiff] = []
        try:
            for p in pairs:
                out.append(_one(p, sa, sb, atol, rtol, block_bytes, cache))
        finally:
            sa.close()
            sb.close()
        fa, fb = ca.format, cb.format
        out += table or []
    order = {s: i for i, s in enumerate(STATUSES)}
    out.sort(key=lambda t: (order[t.status], layer_sort_key(t.layer)))
    return DiffResult(a, b, fa, fb, atol, rtol, tuple(out), summarize_layers(out))


def _kerashub_table(a: str, ca: Checkpoint, b: str, cb: Checkpoint, atol, rtol) -> list[TensorDiff] | None:
    """Pairs made by the keras-hub <-> transformers family table
    (:mod:`tietool.convert.kerashub_hf.pairing`); None when it does not apply."""
    from tietool.convert.kerashub_hf import pairing

    if not pairing.applies(a, ca, b, cb):
        return None
    preset_is_a = pairing.is_preset(a)
    out = []
    for na, nb, t in pairing.pairs(a, ca, b, cb):
        key = nb if preset_is_a else na
        common: dict[str, Any] = dict(a=na, b=nb, match=pairing.MATCH if t else None, transform=None,
                                      layer=layer_of(key or na or nb or ""), key=key or na or nb or "")
        if t is None:
            out.append(TensorDiff(status=ONLY_B if na is None else ONLY_A, **common))
            continue
        g = (cb if preset_is_a else ca).tensors[t.name]
        shapes = (tuple(t.shape), tuple(g.shape)) if preset_is_a else (tuple(g.shape), tuple(t.shape))
        dtypes_ = (t.source.dtype, g.dtype) if preset_is_a else (g.dtype, t.source.dtype)
        common.update(shape_a=shapes[0], shape_b=shapes[1], dtype_a=dtypes_[0], dtype_b=dtypes_[1],
                      transform="kerashub-layout")
        if tuple(g.shape) != tuple(t.shape):
            out.append(TensorDiff(status=SHAPE, **common))
            continue
        acc = pairing.compare(ca if preset_is_a else cb, t, cb if preset_is_a else ca, atol, rtol)
        status = DTYPE if dtypes_[0] != dtypes_[1] else (
            DIFFERS if acc.elements_differ else NEAR if acc.bits_differ else IDENTICAL)
        out.append(TensorDiff(status=status, elements=acc.elements, elements_differ=acc.elements_differ,
                              bits_differ=acc.bits_differ, rows_differ=acc.rows_differ,
                              max_abs=acc.max_abs if acc.bits_differ else 0.0,
                              max_rel=acc.max_rel if acc.bits_differ else 0.0,
                              rel_l2=_rel_l2(acc) if acc.bits_differ else 0.0, nan_mismatch=acc.nan_mismatch,
                              **common))
    return out


def _rel_l2(acc: Tally) -> float:
    if acc.sq_a > 0:
        return math.sqrt(acc.sq_diff) / math.sqrt(acc.sq_a)
    return math.inf if acc.sq_diff else 0.0


def _storage(info: TensorInfo) -> Any:
    return ("storage", info.file, info.storage_key) if info.storage_key is not None else (info.file, info.name)


def _one(p, sa: _Side, sb: _Side, atol, rtol, block_bytes: int, cache: dict) -> TensorDiff:
    ea, eb = p.a, p.b
    ia = ea.info if ea else None
    ib = eb.info if eb else None
    common: dict[str, Any] = dict(
        a=ea.name if ea else None, b=eb.name if eb else None, match=p.match, transform=p.transform,
        layer=layer_of(p.key), key=p.key,
        shape_a=tuple(ia.shape) if ia else None, shape_b=tuple(ib.shape) if ib else None,
        dtype_a=ia.dtype if ia else None, dtype_b=ib.dtype if ib else None,
        stored_a=ia.name if ia and ea and ea.alias else None, stored_b=ib.name if ib and eb and eb.alias else None)
    if ia is None:
        return TensorDiff(status=ONLY_B, **common)
    if ib is None:
        return TensorDiff(status=ONLY_A, **common)
    if not _shapes_fit(ia, ib, p.perm, p.squeeze):
        return TensorDiff(status=SHAPE, **common)
    key = (_storage(ia), _storage(ib), p.perm, p.squeeze)
    acc = cache.get(key)
    if acc is None:
        acc = cache[key] = compare_tensors(sa, ia, sb, ib, p.perm, p.squeeze, atol, rtol, block_bytes)
    if ia.dtype != ib.dtype:
        status = DTYPE
    elif acc.elements_differ:
        status = DIFFERS
    elif acc.bits_differ:
        status = NEAR
    else:
        status = IDENTICAL
    rel_l2 = _rel_l2(acc) if acc.bits_differ else (0.0 if status == IDENTICAL else None)
    first = tuple(int(i) for i in np.unravel_index(acc.first, ia.shape)) if acc.first is not None and ia.shape else (
        () if acc.first is not None else None)
    return TensorDiff(status=status, elements=acc.elements, elements_differ=acc.elements_differ,
                      bits_differ=acc.bits_differ, rows_differ=acc.rows_differ, first_index=first,
                      max_abs=acc.max_abs if acc.bits_differ else (0.0 if status == IDENTICAL else None),
                      max_rel=acc.max_rel if acc.bits_differ else (0.0 if status == IDENTICAL else None),
                      rel_l2=rel_l2, nan_mismatch=acc.nan_mismatch, **common)


__all__ = ["diff_checkpoints", "DiffResult", "TensorDiff", "LayerSummary", "layer_of", "STATUSES"]
