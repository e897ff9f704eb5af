"""The summary of one conversion: :class:`ConversionResult`.

``to_json()`` is what ``tietool convert --json`` prints; its keys and their
order are part of the CLI's output and differ by naming scheme (``--names
pt`` adds what the PyTorch renaming did).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PtDetails:
    """What ``--names pt`` did besides renaming (PyTorch output names)."""

    transposed: tuple[str, ...] = ()
    permuted: tuple[str, ...] = ()
    squeezed: tuple[str, ...] = ()
    reshaped: tuple[str, ...] = ()
    pt_class: str | None = None
    dropped: dict[str, str] = field(default_factory=dict)  # source name -> why
    copies_merged: dict[str, str] = field(default_factory=dict)  # each stored copy -> the PyTorch name written once
    tied_heads_left_out: dict[str, str] = field(default_factory=dict)  # head -> embedding


@dataclass(frozen=True)
class ConversionResult:
    source: str  # as given
    source_format: str
    names: str  # "keras" or "pt"
    to: str
    to_inferred: str | None  # why ``to`` was chosen when it was not given
    output: str  # as given, or the default beside the source
    files: tuple[str, ...]  # the files written (paths under ``output``)
    copied_files: tuple[str, ...]  # the source folder's other files, copied unchanged
    tensors: int
    bytes: int  # tensor data
    file_bytes: int  # the written files' sizes
    aliases: dict[str, str]  # removed copy -> the name it is recorded under
    verified: bool
    seconds: float
    notes: tuple[str, ...] = ()
    pt: PtDetails | None = None  # with names == "pt"
    fsynced: bool = True  # False with --no-fsync: the output may not be on disk yet

    @property
    def aliases_recorded(self) -> int:
        return len(self.aliases)

    def to_json(self) -> dict[str, Any]:
        head = {"source": self.source, "source_format": self.source_format}
        body = {"output": self.output, "files": list(self.files), "copied_files": list(self.copied_files),
                "tensors": self.tensors, "bytes": self.bytes, "file_bytes": self.file_bytes}
        tail = {"aliases": dict(self.aliases), "aliases_recorded": self.aliases_recorded,
                "verified": self.verified, "fsynced": self.fsynced, "seconds": self.seconds}
        if self.pt is None:
            return {**head, "names": self.names, "to": self.to, "to_inferred": self.to_inferred, **body, **tail,
                    "notes": list(self.notes)}
        p = self.pt
        pt = {"transposed": list(p.transposed), "permuted": list(p.permuted), "squeezed": list(p.squeezed),
              "reshaped": list(p.reshaped), "pt_class": p.pt_class, "dropped": dict(p.dropped),
              "copies_merged": dict(p.copies_merged), "tied_heads_left_out": dict(p.tied_heads_left_out)}
        out = {**head, "to": self.to, "names": self.names, **body, **pt, **tail, "to_inferred": self.to_inferred}
        if self.notes:  # only links left out of the copy (sidefiles); absent otherwise
            out["notes"] = list(self.notes)
        return out
