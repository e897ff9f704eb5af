"""A tie group: the embedding and its stored copies (:class:`Member`), how the
tie is stored and the verdict (:class:`TieGroup`), built by
:mod:`tietool.ties.detect` and proved by :mod:`tietool.ties.verify`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tietool.model import TensorInfo, TieRole
from tietool.ties.rules import TIED


@dataclass
class Member:
    name: str
    role: TieRole
    shape: tuple[int, ...]
    dtype: str
    transposed: bool = False
    stored: bool = True  # False: a name recorded only as an alias (safetensors metadata)
    same_storage_as: str | None = None  # hard link / alias of an earlier member
    info: TensorInfo | None = field(default=None, repr=False, compare=False)

    @property
    def stored_info(self) -> TensorInfo:
        """The stored tensor (every member but an alias-only name has one)."""
        if self.info is None:
            raise ValueError(f"{self.name!r} is an alias, not a stored tensor")
        return self.info

    def as_dict(self) -> dict:
        d = {"name": self.name, "role": self.role, "shape": list(self.shape), "dtype": self.dtype,
             "transposed": self.transposed, "stored": self.stored}
        if self.same_storage_as is not None:
            d["same_storage_as"] = self.same_storage_as
        return d


@dataclass
class TieGroup:
    members: list[Member]
    kind: str
    verdict: str
    vocab_size: int
    hidden_size: int
    reason: str = ""
    tie_source: str | None = None  # what establishes an implicit tie
    comparisons: list[dict] = field(default_factory=list)
    consistency: dict | None = None
    agreement: dict | None = None  # copies that differ: classes, strict majority, odd ones out (tietool.ties.majority)

    @property
    def tied(self) -> bool:
        return self.verdict == TIED

    def distinct(self) -> list[Member]:
        """One member per stored object, the reference first."""
        return [m for m in self.members if m.stored and m.same_storage_as is None]

    def to_json(self) -> dict:
        return self.as_dict()

    def as_dict(self) -> dict:
        d: dict[str, Any] = {
            "members": [m.as_dict() for m in self.members],
            "kind": self.kind,
            "verdict": self.verdict,
            "tied": self.tied,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "reason": self.reason,
        }
        if self.tie_source:
            d["tie_source"] = self.tie_source
        if self.comparisons:
            d["comparisons"] = self.comparisons
            worst = [c for c in self.comparisons if not c["equal"] or not c["identical"]]
            if worst:
                d["max_abs_diff"] = max(c.get("max_abs_diff", 0.0) for c in worst)
                d["rows_differ"] = max(c.get("rows_differ", 0) for c in worst)
                rows = sorted({r for c in worst for r in c.get("first_rows", [])})
                d["first_rows"] = rows[:10]
        if self.consistency is not None:
            d["consistency"] = self.consistency
        if self.agreement is not None:
            d["agreement"] = self.agreement
        return d
