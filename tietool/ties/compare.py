"""Streaming comparison of one reference matrix against its stored copies.

The reference ``A`` is ``[vocab, hidden]``. Each other member is either the
same layout (``[vocab, hidden]``) or transposed (``[hidden, vocab]``, a Keras
Dense kernel or a ReversibleEmbedding ``reverse_embeddings``). All members
are walked together, one block of vocabulary rows ``v0:v1`` at a time: the
rows of ``A`` and of each untransposed copy, and *columns* ``v0:v1`` of each
transposed copy. So every copy is read exactly once and memory stays bounded
by a few blocks, whatever the size of the matrix.

Exact by default: elements are compared as bits (each block viewed as
unsigned integers of the dtype's item size), so bfloat16 is compared as
stored, NaN equals NaN only with the same payload, and -0.0 differs from
0.0. Tolerances, only when asked, follow ``numpy.isclose`` on float64
upcasts (``|a - b| <= atol + rtol * |b|``), with a NaN matching any NaN:
a NaN payload carries no value, so it cannot be "far" from another NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from tietool import dtypes
from tietool.blocks import BLOCK_BYTES
from tietool.io.blockread import BlockReader, transpose_into
from tietool.model import Checkpoint, TensorInfo

# BLOCK_BYTES (tietool.blocks): bytes of reference rows handled per step (each copy adds about as much).

#: Row indices listed in a report.
FIRST_ROWS = 10
#: "near copy": every element within these of the reference (numpy.isclose).
NEAR_RTOL = 1e-2
NEAR_ATOL = 1e-6


@dataclass
class Difference:
    """How one stored copy compares with the reference, accumulated by block."""

    name: str
    reference: str
    transposed: bool
    tolerance: bool  # compared with atol/rtol rather than bits
    same_dtype: bool = True
    elements: int = 0
    elements_differ: int = 0  # beyond tolerance (bits, when exact)
    bits_differ: int = 0  # bitwise, whatever the tolerance
    rows_differ: int = 0
    first_rows: list[int] = field(default_factory=list)
    max_abs_diff: float = 0.0  # over differing elements where both are numbers
    nan_mismatch: int = 0  # NaN on one side only
    near: bool = True  # every element within NEAR_RTOL/NEAR_ATOL
    dtype_names: tuple[str, str] | None = None  # (reference, member) when blocks come in stored form

    def values(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Blocks of the reference and the member as float64 values."""
        if self.dtype_names is not None:
            a, b = dtypes.as_values(a, self.dtype_names[0]), dtypes.as_values(b, self.dtype_names[1])
        return a.astype(np.float64), b.astype(np.float64)

    @property
    def equal(self) -> bool:
        return self.elements_differ == 0

    @property
    def identical(self) -> bool:
        return self.bits_differ == 0 and self.same_dtype

    def as_dict(self) -> dict:
        d = {
            "member": self.name,
            "reference": self.reference,
            "transposed": self.transposed,
            "equal": self.equal,
            "identical": self.identical,
            "elements": self.elements,
            "elements_differ": self.elements_differ,
        }
        if self.tolerance:
            d["bits_differ"] = self.bits_differ
        if not self.same_dtype:
            d["same_dtype"] = False
        if self.bits_differ or self.elements_differ:
            d.update(
                rows_differ=self.rows_differ,
                first_rows=list(self.first_rows),
                max_abs_diff=self.max_abs_diff,
                nan_mismatch=self.nan_mismatch,
                near_copy=bool(self.near and not self.equal),
            )
        return d


def _uint_view(arr: np.ndarray) -> np.ndarray:
    """The same memory as unsigned integers (no copy, any strides)."""
    return arr.view(f"u{arr.dtype.itemsize}") if arr.dtype.itemsize in (1, 2, 4, 8) else arr


def compare_block(diff: Difference, a: np.ndarray, b: np.ndarray, first_row: int,
                  atol: float | None, rtol: float | None) -> None:
    """Fold one block (``a`` and ``b`` both ``[rows, hidden]``) into ``diff``."""
    diff.elements += a.size
    if a.dtype == b.dtype and diff.same_dtype:
        bits = _uint_view(a) != _uint_view(b)
    else:
        fa, fb = diff.values(a, b)
        bits = ~((fa == fb) | (np.isnan(fa) & np.isnan(fb)))
    nbits = int(np.count_nonzero(bits))
    diff.bits_differ += nbits
    if not nbits:
        return
    # Only the elements whose bits differ need a closer look (as values: bfloat16's need ml_dtypes).
    fa, fb = diff.values(a[bits], b[bits])
    if diff.tolerance:
        close = np.isclose(fa, fb, rtol=rtol or 0.0, atol=atol or 0.0, equal_nan=True)
        bad = ~close
    else:
        bad = np.ones(fa.shape, dtype=bool)
    nbad = int(np.count_nonzero(bad))
    diff.elements_differ += nbad
    na, nb = np.isnan(fa), np.isnan(fb)
    diff.nan_mismatch += int(np.count_nonzero(na != nb))
    numbers = ~(na | nb)
    if numbers.any():
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.abs(fa[numbers] - fb[numbers])
        d = d[~np.isnan(d)]  # inf - inf
        if d.size:
            diff.max_abs_diff = max(diff.max_abs_diff, float(d.max()))
    if diff.near:
        diff.near = bool(np.all(np.isclose(fa, fb, rtol=NEAR_RTOL, atol=NEAR_ATOL, equal_nan=True)))
    if nbad or not diff.tolerance:
        mask = np.zeros(bits.shape, dtype=bool)
        mask[bits] = bad
        rows = np.flatnonzero(mask.any(axis=1))
        diff.rows_differ += int(rows.size)
        room = FIRST_ROWS - len(diff.first_rows)
        if room > 0:
            diff.first_rows.extend(int(r) + first_row for r in rows[:room])


def compare_copies(ckpt: Checkpoint, reference: TensorInfo, others: list[tuple[TensorInfo, bool]],
                   atol: float | None = None, rtol: float | None = None,
                   block_bytes: int = BLOCK_BYTES, tick: Callable[[int], None] | None = None) -> list[Difference]:
    """Compare ``reference`` ``[V, H]`` with each ``(info, transposed)`` in one
    pass. Returns one :class:`Difference` per other, in order. ``tick(n)``
    is told the bytes read after each block."""
    tolerance = atol is not None or rtol is not None
    V, H = reference.shape
    diffs = [Difference(o.name, reference.name, t, tolerance, same_dtype=(o.dtype == reference.dtype),
                        dtype_names=(reference.dtype, o.dtype)) for o, t in others]
    if not others or V == 0 or H == 0:
        return diffs
    row_bytes = max(1, H * max(1, dtypes.DTYPES[reference.dtype].itemsize))
    step = max(1, block_bytes // row_bytes)
    with BlockReader(ckpt) as reader:
        for v0 in range(0, V, step):
            v1 = min(V, v0 + step)
            a = reader.rows(reference, v0, v1, slot=0)
            for (info, transposed), diff in zip(others, diffs, strict=True):
                if transposed:
                    raw = reader.block(info, 0, H, v0, v1, slot=1)
                    b = transpose_into(raw, reader.scratch(2, raw.dtype, (v1 - v0, H)))
                else:
                    b = reader.rows(info, v0, v1, slot=1)
                compare_block(diff, a, b, v0, atol, rtol)
                if tick is not None:
                    tick(b.nbytes)
                del b
            if tick is not None:
                tick(a.nbytes)
            del a
    return diffs


__all__ = ["Difference", "compare_copies", "compare_block", "BLOCK_BYTES"]
