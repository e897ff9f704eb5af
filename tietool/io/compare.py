"""The one comparison kernel: two tensors' elements folded block by block.

``verify-tie`` (:mod:`tietool.ties.compare`) and ``diff``
(:mod:`tietool.diff.checkpoints`) both stream blocks of two tensors through
:meth:`Tally.fold`, which keeps every figure either reports.

Exact by default: elements are compared as bits (each block viewed as
unsigned integers of the dtype's item size), so bfloat16 is compared as
stored, NaN equals NaN only with the same payload, and -0.0 differs from
0.0. Tolerances, only when asked, follow ``numpy.isclose`` on float64
upcasts (``|a - b| <= atol + rtol * |b|``), with a NaN matching any NaN:
a NaN payload carries no value, so it cannot be "far" from another NaN.
Only the elements whose bits differ are upcast and looked at closer.

Blocks come in stored form (:mod:`tietool.dtypes`: bfloat16 and float8 as
unsigned integers); they are turned into values (``ml_dtypes``, for those)
only when a tolerance or a difference needs numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tietool import dtypes
from tietool.io.blockread import BufferPool

#: Elements folded at once (float64 temporaries of 512 KB each).
PART = 1 << 16
#: Row indices kept (``first_rows``).
FIRST_ROWS = 10
#: "near copy": every element within these of the other (numpy.isclose).
NEAR_RTOL = 1e-2
NEAR_ATOL = 1e-6


@dataclass
class Tally:
    """Figures of one pair, folded block by block (flat indices in A's layout;
    a row is A's first axis). ``norms``: also ``||a||``, ``||a - b||`` and the
    largest relative difference (``diff``'s ``rel_l2`` and ``max_rel``)."""

    shape: tuple[int, ...]
    atol: float | None = None
    rtol: float | None = None
    norms: bool = True
    dtype_names: tuple[str, str] | None = None  # A's and B's canonical dtypes (blocks in stored form)
    elements: int = 0
    elements_differ: int = 0  # beyond the tolerance (bits, when exact)
    bits_differ: int = 0
    rows_differ: int = 0
    first_rows: list[int] = field(default_factory=list)
    first: int | None = None  # flat index of the first element that differs beyond the tolerance
    max_abs: float | None = None  # over the elements whose bits differ, where both are numbers
    max_rel: float | None = None
    sq_diff: float = 0.0
    sq_a: float = 0.0
    clean_until: int | None = None  # elements [0, clean_until) identical, their ||a|| not summed yet
    nan_mismatch: int = 0  # NaN on one side only
    near: bool = True  # every element within NEAR_RTOL / NEAR_ATOL
    last_row: int = -1
    row_elems: int = field(init=False)
    _pool: BufferPool = field(init=False, default_factory=BufferPool, repr=False)

    def __post_init__(self) -> None:
        self.row_elems = max(1, math.prod(self.shape[1:])) if len(self.shape) > 1 else 1

    @property
    def tolerance(self) -> bool:
        return self.atol is not None or self.rtol is not None

    def fold(self, a: np.ndarray, b: np.ndarray, start: int) -> None:
        """Elements ``start:start + a.size`` of A (flat) against the same of B,
        in parts of :data:`PART` elements (bounded float64 temporaries)."""
        a = a.reshape(-1)
        b = b.reshape(-1)
        for s in range(0, a.size, PART):
            self._fold(a[s:s + PART], b[s:s + PART], start + s)

    def finish_norm(self, blocks) -> None:
        """Sum ``||a||`` over the identical prefix, from A's ``blocks`` (in
        order), now that the pair is known to differ (``diff``'s ``rel_l2``)."""
        if not (self.norms and self.bits_differ and self.clean_until):
            return
        done = 0
        for block in blocks:
            flat = block.reshape(-1)[: self.clean_until - done]
            self._sum_a(flat)
            done += flat.size
            if done >= self.clean_until:
                break

    def release(self) -> None:
        """Drop the scratch buffers (the figures stay)."""
        self._pool.clear()

    # -- one part ---------------------------------------------------------------------
    def _fold(self, a: np.ndarray, b: np.ndarray, start: int) -> None:
        self.elements += a.size
        same = self.dtype_names is None or self.dtype_names[0] == self.dtype_names[1]
        if same and a.dtype == b.dtype and a.dtype.itemsize in (1, 2, 4, 8):
            kind = f"u{a.dtype.itemsize}"
            neq = a.view(kind) != b.view(kind)
        else:
            fa, fb = self._values(a, b)
            fa, fb = fa.astype(np.float64), fb.astype(np.float64)
            neq = ~((fa == fb) | (np.isnan(fa) & np.isnan(fb)))
        n = int(np.count_nonzero(neq))
        if not n:
            if self.bits_differ:
                self._sum_a(a)
            elif self.clean_until is None or self.clean_until == start:
                self.clean_until = start + a.size
            return
        if not self.bits_differ and self.clean_until is None:
            self.clean_until = start
        self.bits_differ += n
        a, b = self._values(a, b)  # numbers from here on (bfloat16's need ml_dtypes)
        if n == a.size:  # every element: no gather, and ||a|| from the same upcast
            idx = None
            fa, fb = self._f64(0, a), self._f64(1, b)
            if self.norms:
                self._sum_f64(fa)
        else:
            self._sum_a(a)
            idx = np.flatnonzero(neq)
            fa, fb = self._f64(0, a[idx]), self._f64(1, b[idx])
        bad = self._measure(fa, fb)
        if bad is None:
            if idx is None:
                self._hits_all(a.size, start)
                return
            hits = idx
        else:
            hits = np.flatnonzero(bad) if idx is None else idx[bad]
        self._hits(hits, a.size, start)

    def _measure(self, fa: np.ndarray, fb: np.ndarray) -> np.ndarray | None:
        """Fold the differing elements' figures; the mask of those beyond the
        tolerance (None when exact: all of them)."""
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            d = np.subtract(fa, fb, out=self._scratch(2, fa.size))
            np.abs(d, out=d)  # NaN where either is NaN (and inf - inf)
            sq = float(np.einsum("i,i->", d, d))
            ok = None
            if math.isnan(sq):  # some NaN: leave those out, count one-sided ones
                ok = ~np.isnan(d)
                self.nan_mismatch += int(np.count_nonzero(np.isnan(fa) != np.isnan(fb)))
                dd = d[ok]
                sq = float(np.einsum("i,i->", dd, dd)) if dd.size else 0.0
            if ok is None or ok.any():
                self.max_abs = max(self.max_abs or 0.0, float(np.max(d, where=True if ok is None else ok,
                                                                      initial=0.0)))
                if self.norms:
                    self.sq_diff += sq
                    self._max_rel(d, fb, ok)
            if self.near:
                self.near = bool(np.all(np.isclose(fa, fb, rtol=NEAR_RTOL, atol=NEAR_ATOL, equal_nan=True)))
            if not self.tolerance:
                return None
            return ~np.isclose(fa, fb, rtol=self.rtol or 0.0, atol=self.atol or 0.0, equal_nan=True)

    def _max_rel(self, d: np.ndarray, fb: np.ndarray, ok: np.ndarray | None) -> None:
        scale = np.abs(fb, out=self._scratch(3, fb.size))
        live = scale > 0 if ok is None else (scale > 0) & ok
        np.divide(d, scale, out=scale, where=live)
        self.max_rel = max(self.max_rel or 0.0, float(np.max(scale, where=live, initial=0.0)))

    def _hits(self, hits: np.ndarray, size: int, start: int) -> None:
        """Elements ``start + hits`` (ascending) differ beyond the tolerance."""
        if not hits.size:
            return
        if hits.size == size:
            self._hits_all(size, start)
            return
        self.elements_differ += int(hits.size)
        if self.first is None:
            self.first = start + int(hits[0])
        rows = (start + hits) // self.row_elems  # ascending
        fresh = rows[np.concatenate(([rows[0] > self.last_row], rows[1:] != rows[:-1]))]
        self.rows_differ += int(fresh.size)
        self._note_rows(fresh[: FIRST_ROWS - len(self.first_rows)])
        self.last_row = int(rows[-1])

    def _hits_all(self, size: int, start: int) -> None:
        """Every element of ``start:start + size`` differs."""
        self.elements_differ += size
        if self.first is None:
            self.first = start
        first, last = start // self.row_elems, (start + size - 1) // self.row_elems
        first = max(first, self.last_row + 1)
        self.rows_differ += last - first + 1
        self._note_rows(range(first, min(last + 1, first + FIRST_ROWS - len(self.first_rows))))
        self.last_row = last

    def _note_rows(self, rows) -> None:
        if len(self.first_rows) < FIRST_ROWS:
            self.first_rows.extend(int(r) for r in rows)

    def _values(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A's and B's blocks as values (views; native dtypes as they are)."""
        if self.dtype_names is None:
            return a, b
        return dtypes.as_values(a, self.dtype_names[0]), dtypes.as_values(b, self.dtype_names[1])

    # -- scratch ----------------------------------------------------------------------
    def _scratch(self, slot: int, n: int) -> np.ndarray:
        """A reused float64 buffer: a fresh 512 KB array per part costs page faults."""
        return self._pool.array(slot, np.float64, (n,))

    def _f64(self, slot: int, x: np.ndarray) -> np.ndarray:
        out = self._scratch(slot, x.size)
        np.copyto(out, x.reshape(-1), casting="unsafe")
        return out

    def _sum_a(self, a: np.ndarray) -> None:
        if not self.norms:
            return
        a = self._values(a, a)[0]
        for s in range(0, a.size, PART):
            self._sum_f64(self._f64(4, a[s:s + PART]))

    def _sum_f64(self, f: np.ndarray) -> None:
        sq = float(np.einsum("i,i->", f, f))
        if not math.isfinite(sq):
            f = f[np.isfinite(f)]
            sq = float(np.einsum("i,i->", f, f))
        self.sq_a += sq
