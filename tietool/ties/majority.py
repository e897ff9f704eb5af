"""Which stored copies of one matrix agree: the strict majority, the odd ones
out, and the first differing element of each odd copy (its full index).

Used by ``verify-tie`` (reports) and ``fix`` (repairs copies from the
majority). Every comparison is bitwise and streamed (:mod:`tietool.ties.compare`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tietool import dtypes
from tietool.io.blockread import BlockReader
from tietool.model import Checkpoint, TensorInfo
from tietool.ties.compare import compare_copies


@dataclass(frozen=True)
class Copy:
    name: str
    info: TensorInfo
    transposed: bool  # stored [hidden, vocab]


@dataclass(frozen=True)
class OddCopy:
    name: str
    reference: str  # a majority copy (or the first copy, with no majority)
    index: tuple[int, ...]  # first differing element, in the odd copy's own layout
    value: str  # the odd copy's value there
    expected: str  # the reference's

    def to_json(self) -> dict:
        return {"name": self.name, "reference": self.reference, "index": list(self.index),
                "value": self.value, "expected": self.expected}


@dataclass(frozen=True)
class Agreement:
    classes: tuple[tuple[str, ...], ...]  # bit-identical copies, largest class first
    majority: tuple[str, ...] | None  # strictly more than half of the copies, when some class has that
    odd: tuple[OddCopy, ...]  # each copy outside the majority (outside the first copy's class, with none)

    @classmethod
    def from_json(cls, d: dict) -> "Agreement":
        return cls(tuple(tuple(c) for c in d["classes"]), tuple(d["majority"]) if d["majority"] else None,
                   tuple(OddCopy(o["name"], o["reference"], tuple(o["index"]), o["value"], o["expected"])
                         for o in d["odd_ones_out"]))

    def to_json(self) -> dict:
        return {"classes": [list(c) for c in self.classes],
                "majority": list(self.majority) if self.majority else None,
                "odd_ones_out": [o.to_json() for o in self.odd]}


def _first_difference(ckpt: Checkpoint, reader: BlockReader, ref: Copy, other: Copy, row: int) -> OddCopy:
    """The first element of ``row`` (a vocabulary row) where the copies differ."""
    def vocab_row(c: Copy, slot: int) -> np.ndarray:
        if c.transposed:
            return np.array(reader.block(c.info, 0, c.info.shape[0], row, row + 1, slot=slot)).reshape(-1)
        return np.array(reader.rows(c.info, row, row + 1, slot=slot)).reshape(-1)

    a, b = vocab_row(ref, 0), vocab_row(other, 1)
    size = a.dtype.itemsize
    ua = a.view(f"u{size}") if size in (1, 2, 4, 8) else a
    ub = b.view(f"u{size}") if size in (1, 2, 4, 8) else b
    cols = np.nonzero(ua != ub)[0]
    col = int(cols[0]) if cols.size else 0
    index = (col, row) if other.transposed else (row, col)
    value_b = dtypes.as_values(b[col:col + 1], other.info.dtype)[0].item()  # printed: bfloat16 needs ml_dtypes
    value_a = dtypes.as_values(a[col:col + 1], ref.info.dtype)[0].item()
    return OddCopy(other.name, ref.name, index, repr(value_b), repr(value_a))


def agreement(ckpt: Checkpoint, copies: list[Copy]) -> Agreement:
    """Group ``copies`` (same matrix, [vocab, hidden] or transposed) into
    bit-identical classes and find the strict majority."""
    classes: list[list[Copy]] = []
    first_rows: dict[tuple[str, str], int] = {}
    for c in copies:
        placed = False
        for cls in classes:
            ref = cls[0]
            a, b = (ref, c) if not ref.transposed else (c, ref)
            if a.transposed:  # two transposed copies: compare through neither being the reference
                continue
            d = compare_copies(ckpt, a.info, [(b.info, b.transposed)])[0]
            if d.identical:
                cls.append(c)
                placed = True
                break
            if d.first_rows:
                first_rows[(ref.name, c.name)] = d.first_rows[0]
                first_rows[(c.name, ref.name)] = d.first_rows[0]
        if not placed:
            classes.append([c])
    classes.sort(key=len, reverse=True)
    top = classes[0]
    majority = top if 2 * len(top) > len(copies) else None
    ref = top[0] if majority else copies[0]
    odd = []
    with BlockReader(ckpt) as reader:
        for c in copies:
            if c in (majority or [ref]) or (majority is None and c is ref):
                continue
            row = first_rows.get((ref.name, c.name))
            if row is None:
                found = compare_copies(ckpt, ref.info, [(c.info, c.transposed)])[0] if not ref.transposed else None
                row = found.first_rows[0] if found is not None and found.first_rows else 0
            odd.append(_first_difference(ckpt, reader, ref, c, row))
    return Agreement(tuple(tuple(x.name for x in cls) for cls in classes),
                     tuple(x.name for x in majority) if majority else None, tuple(odd))
