"""Streaming comparison of one reference matrix against its stored copies.

The reference ``A`` is ``[vocab, hidden]``. Each other member is either the
same layout (``[vocab, hidden]``) or transposed (``[hidden, vocab]``, a Keras
Dense kernel or a ReversibleEmbedding ``reverse_embeddings``). All members
are walked together, one block of vocabulary rows ``v0:v1`` at a time: the
rows of ``A`` and of each untransposed copy, and *columns* ``v0:v1`` of each
transposed copy. So every copy is read exactly once and memory stays bounded
by a few blocks, whatever the size of the matrix.

Each block pair goes through the comparison kernel shared with ``diff``
(:class:`tietool.io.compare.Tally`: exact bits by default, ``numpy.isclose``
when a tolerance is asked).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from tietool import dtypes
from tietool.blocks import BLOCK_BYTES
from tietool.io.blockread import BlockReader, transpose_into
from tietool.io.compare import Tally
from tietool.model import Checkpoint, TensorInfo

# BLOCK_BYTES (tietool.blocks): bytes of reference rows handled per step (each copy adds about as much).


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
    near: bool = True  # every element within tietool.io.compare.NEAR_RTOL / NEAR_ATOL

    @classmethod
    def of(cls, copy: TensorInfo, reference: TensorInfo, transposed: bool, tally: Tally) -> "Difference":
        """The figures of ``tally`` (:mod:`tietool.io.compare`) for ``copy`` of ``reference``."""
        return cls(copy.name, reference.name, transposed, tally.tolerance, same_dtype=copy.dtype == reference.dtype,
                   elements=tally.elements, elements_differ=tally.elements_differ, bits_differ=tally.bits_differ,
                   rows_differ=tally.rows_differ, first_rows=list(tally.first_rows),
                   max_abs_diff=tally.max_abs or 0.0, nan_mismatch=tally.nan_mismatch, near=tally.near)

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


def compare_copies(ckpt: Checkpoint, reference: TensorInfo, others: list[tuple[TensorInfo, bool]],
                   atol: float | None = None, rtol: float | None = None,
                   block_bytes: int = BLOCK_BYTES, tick: Callable[[int], None] | None = None) -> list[Difference]:
    """Compare ``reference`` ``[V, H]`` with each ``(info, transposed)`` in one
    pass. Returns one :class:`Difference` per other, in order. ``tick(n)``
    is told the bytes read after each block."""
    V, H = reference.shape
    tallies = [Tally((V, H), atol, rtol, norms=False, dtype_names=(reference.dtype, info.dtype))
               for info, _ in others]
    row_bytes = max(1, H * max(1, dtypes.DTYPES[reference.dtype].itemsize))
    step = max(1, block_bytes // row_bytes)
    with BlockReader(ckpt) as reader:
        for v0 in range(0, V if others and H else 0, step):
            v1 = min(V, v0 + step)
            a = reader.rows(reference, v0, v1, slot=0)
            for (info, transposed), tally in zip(others, tallies, strict=True):
                if transposed:
                    raw = reader.block(info, 0, H, v0, v1, slot=1)
                    b = transpose_into(raw, reader.scratch(2, raw.dtype, (v1 - v0, H)))
                else:
                    b = reader.rows(info, v0, v1, slot=1)
                tally.fold(a, b, v0 * H)
                if tick is not None:
                    tick(b.nbytes)
                del b
            if tick is not None:
                tick(a.nbytes)
            del a
    return [Difference.of(info, reference, transposed, tally)
            for (info, transposed), tally in zip(others, tallies, strict=True)]


__all__ = ["Difference", "compare_copies", "BLOCK_BYTES"]
