"""Proving tied embedding / decoder (LM head) weights with the stored values.

The rules (:mod:`tietool.ties.rules`) and the detection of tie groups
(:mod:`tietool.ties.detect`) read names, shapes and the config only; here the
distinct stored copies of each group are compared in one streaming pass
(:mod:`tietool.ties.compare`) and the verdict is given: :func:`verify_tie` ->
:class:`TieReport`. This module also re-exports the public names of both, so
``tietool.ties.verify`` stays the one import for tie handling.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from tietool.errors import TensorNotFoundError, UsageError
from tietool.model import Checkpoint, TieRole
from tietool.results import JsonResult
from tietool.ties.declaration import TieDeclaration, keras_graph_reuse, tie_declaration
from tietool.ties.detect import Member, TieGroup, build_members, consistency, find_ties
from tietool.ties.rules import (
    COPIES_DIFFER,
    DUPLICATE,
    IMPLICIT,
    NEAR,
    NO_DECODER,
    NO_OUTPUT,
    NOT_TIED,
    SEPARATE,
    SHARED,
    TIED,
    TRANSPOSED,
    UNVERIFIED,
    classify,
    declared_tie,
    has_output_layer,
)

# -- verification ------------------------------------------------------------------------

def _source(declared: dict) -> str:
    """Where the declared value came from, as :class:`TieDeclaration` says it."""
    decl = declared.get("declaration")
    return str(decl.source) if decl is not None else str(declared.get("source"))


def verify_group(ckpt: Checkpoint, g: TieGroup, declared: dict, atol: float | None = None,
                 rtol: float | None = None, tick: Callable[[int], None] | None = None) -> TieGroup:
    """Compare every distinct stored member with the reference (one pass) and
    set kind, verdict and evidence."""
    from tietool.ties.compare import compare_copies

    distinct = g.distinct()
    if len(distinct) < 2:
        return g
    ref = distinct[0]
    pair_shapes = ((g.vocab_size, g.hidden_size), (g.hidden_size, g.vocab_size))
    wide = [m for m in distinct[1:] if tuple(m.shape) not in pair_shapes]
    if wide:
        return _other_width(ckpt, g, declared, wide, atol, rtol)
    others = distinct[1:]
    diffs = compare_copies(ckpt, ref.stored_info, [(m.stored_info, m.transposed) for m in others], atol=atol, rtol=rtol,
                           tick=tick)
    g.comparisons = [d.as_dict() for d in diffs]
    emb_diffs = [d for m, d in zip(others, diffs, strict=True) if m.role == TieRole.EMBEDDING]
    dec_pairs = [(m, d) for m, d in zip(others, diffs, strict=True) if m.role == TieRole.DECODER]
    dec_equal = all(d.equal for _m, d in dec_pairs)
    dec_near = all(d.equal or d.near for _m, d in dec_pairs)
    # A decoder that matches the embedding on most rows is a (damaged) copy,
    # not a head of its own.
    dec_copy = all(d.equal or d.near or 2 * d.rows_differ <= g.vocab_size for _m, d in dec_pairs)
    emb_equal = all(d.equal for d in emb_diffs)
    emb_near = all(d.equal or d.near for d in emb_diffs)
    n_copies = len(distinct)
    if dec_pairs and not dec_copy:
        g.kind = SEPARATE
        g.verdict = NOT_TIED
        d = next(d for _m, d in dec_pairs if not d.equal)
        g.reason = (f"separate decoder {d.name!r} differs from the embedding: max abs diff {d.max_abs_diff:.6g}, "
                    f"{d.rows_differ} of {g.vocab_size} rows differ")
    else:
        if dec_pairs and any(m.transposed for m, _d in dec_pairs):
            g.kind = TRANSPOSED
        else:
            g.kind = DUPLICATE
        if emb_equal and dec_equal:
            g.verdict = TIED
            how = "bitwise identical" if all(d.identical for d in diffs) else f"equal within atol={atol}, rtol={rtol}"
            g.reason = f"{n_copies} stored copies, {how}"
        else:
            worst = max((d for d in diffs if not d.equal), key=lambda d: d.max_abs_diff)
            g.verdict = NEAR if (emb_near and dec_near) else COPIES_DIFFER
            g.reason = (f"{worst.name!r} vs {worst.reference!r}: "
                        f"max abs diff {worst.max_abs_diff:.6g}, {worst.rows_differ} row(s) differ"
                        + (f", first {worst.first_rows}" if worst.first_rows else ""))
            from tietool.ties.majority import Copy, agreement

            g.agreement = agreement(ckpt, [Copy(m.name, m.stored_info, m.transposed) for m in distinct]).to_json()
    _config_against_weights(g, declared)
    return g


def _config_against_weights(g: TieGroup, declared: dict) -> None:
    """What the config says (the tie declaration) against what is stored: ``g.consistency``."""
    decl = declared.get("declaration")
    if declared.get("value") is True and g.kind == SEPARATE and decl is not None and decl.forced:
        g.consistency = consistency(True, None, (
            f"{decl.describe()}: transformers 5 keeps a stored decoder that differs from the embedding (it warns "
            "and does not tie them), so this untied model loads as saved"))
    elif declared.get("value") is True and g.verdict != TIED:
        if g.kind == SEPARATE:
            g.consistency = consistency(False, "config", (
                f"config declares {declared['key']}=true ({_source(declared)}) but a different decoder is stored: "
                + ("transformers 5 keeps the stored decoder (it warns that both are present with different values "
                   "and does not tie them); a loader that ties by the flag alone uses the embedding as the output "
                   "layer and ignores the stored decoder. "
                   if str(declared["key"]).endswith("tie_word_embeddings") else
                   "a loader that ties by the flag alone uses the embedding as the output layer and ignores the "
                   "stored decoder. ")
                + "The weights were trained untied: the config is wrong"))
        else:
            g.consistency = consistency(False, "weights", (
                f"config declares {declared['key']}=true ({_source(declared)}) but the stored copies of the tied "
                "matrix differ: the weights are damaged or stale, and which copy a loader uses decides its output"))
    elif declared.get("value") is True:
        g.consistency = consistency(True, None, "config declares the tie and the weights hold it")
    elif declared.get("value") is False:
        if g.verdict == TIED:
            g.consistency = consistency(True, None, (
                f"config declares {declared['key']}=false; the decoder is stored separately but equals the embedding"))
        else:
            g.consistency = consistency(True, None, f"config declares {declared['key']}=false: untied by design")


def _other_width(ckpt: Checkpoint, g: TieGroup, declared: dict, wide: list[Member], atol, rtol) -> TieGroup:
    """An output embedding whose width differs from the input embedding's
    (RemBERT): a head of its own, not tied by construction. Copies of the
    embedding in the group are still compared."""
    from tietool.ties.compare import compare_copies

    distinct = g.distinct()
    same = [m for m in distinct[1:] if m not in wide]
    if same:
        diffs = compare_copies(ckpt, distinct[0].stored_info, [(m.stored_info, m.transposed) for m in same],
                               atol=atol, rtol=rtol)
        g.comparisons = [d.as_dict() for d in diffs]
    w = wide[0]
    width = w.shape[1] if not w.transposed else w.shape[0]
    how = "wider" if width > g.hidden_size else "narrower"
    g.kind, g.verdict = SEPARATE, NOT_TIED
    g.reason = (f"output embedding {w.name!r} {list(w.shape)} is {how} than the input embedding "
                f"[{g.vocab_size}, {g.hidden_size}]: a head of its own")
    rows = w.shape[0] if not w.transposed else w.shape[1]
    if width == g.hidden_size and rows != g.vocab_size:
        # a head of another vocabulary width (keras-hub PARSeq's [H, V-2])
        g.reason = (f"output layer {w.name!r} {list(w.shape)} is a head of another width ({rows} outputs, not "
                    f"{g.vocab_size}) than the input embedding [{g.vocab_size}, {g.hidden_size}]: a head of its own")
    if declared.get("value") is True:
        g.consistency = consistency(False, "config", (
            f"config declares {declared['key']}=true ({_source(declared)}) but the output embedding has another "
            f"width ({width}) than the input embedding ({g.hidden_size}): the two cannot be one matrix, the config "
            "is wrong"))
    elif declared.get("value") is False:
        g.consistency = consistency(True, None, f"config declares {declared['key']}=false: untied by design "
                                     f"(the output embedding is {how})")
    return g


@dataclass(frozen=True)
class TieReport(JsonResult):
    """What :func:`verify_tie` proved: ``tied`` only when a tie holds and
    every stored copy is identical (or equal within ``atol``/``rtol``);
    ``config`` is what the config declares (:func:`declared_tie`), ``tie_declaration``
    the same as :func:`tietool.ties.declaration.tie_declaration` gives it."""

    path: str
    format: str
    tied: bool
    message: str
    config: dict
    atol: float | None
    rtol: float | None
    groups: tuple[TieGroup, ...]
    tie_declaration: TieDeclaration

    @property
    def exact(self) -> bool:
        return self.atol is None and self.rtol is None

    @classmethod
    def build(cls, ckpt: Checkpoint, declared: dict, groups: list[TieGroup], atol: float | None,
              rtol: float | None) -> TieReport:
        if not groups:
            message = "no embedding matrix found: no output layer to tie"
        else:
            message = "; ".join(f"{g.verdict} ({g.kind}): {g.reason}" for g in groups)
        return cls(ckpt.path, ckpt.format, bool(groups) and all(g.tied for g in groups), message,
                   {k: v for k, v in declared.items() if k != "declaration"}, atol, rtol, tuple(groups),
                   declared.get("declaration") or tie_declaration(ckpt.config))

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "format": self.format,
            "tied": self.tied,
            "message": self.message,
            "config": self.config,
            "tie_declaration": self.tie_declaration.to_json(),
            "exact": self.exact,
            "atol": self.atol,
            "rtol": self.rtol,
            "groups": [g.to_json() for g in self.groups],
        }


def verify_checkpoint(ckpt: Checkpoint, embedding: str | None = None, decoder: str | None = None,
                      atol: float | None = None, rtol: float | None = None,
                      progress: Callable[[str, int, int], None] | None = None) -> TieReport:
    """The report of :func:`verify_tie` for an open checkpoint; ``progress``
    is called as ``progress("compare", bytes read, bytes to read)``."""
    for what, v in (("atol", atol), ("rtol", rtol)):
        if v is not None and (not isinstance(v, (int, float)) or v != v or v < 0):
            raise UsageError(f"--{what} must be a non-negative number, got {v!r}", ckpt.path)
    if embedding is not None and decoder is not None and embedding == decoder:
        raise UsageError("--embedding and --decoder name the same tensor", ckpt.path)
    declared = declared_tie(ckpt)
    groups = find_ties(ckpt, embedding, decoder)
    total = sum(m.stored_info.nbytes for g in groups if len(g.distinct()) > 1 for m in g.distinct())
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress("compare", done[0], total)

    for g in groups:
        verify_group(ckpt, g, declared, atol, rtol, tick if progress is not None else None)
    return TieReport.build(ckpt, declared, groups, atol, rtol)


def verify_tie(path: str | os.PathLike, embedding: str | None = None, decoder: str | None = None,
               atol: float | None = None, rtol: float | None = None,
               progress: Callable[[str, int, int], None] | None = None) -> TieReport:
    """Find the tie groups of ``path`` and prove them with the stored values.

    Returns a :class:`TieReport` (``to_json()`` for the JSON document) with ``tied`` (True only when a tie holds and
    every stored copy is identical, or equal within ``atol``/``rtol`` when
    given), ``config`` (what the config declares) and ``groups``. Raises
    :class:`~tietool.errors.TensorNotFoundError` for an unknown name and
    :class:`~tietool.errors.UsageError` for shapes that cannot pair.
    """
    from tietool.formats import open_checkpoint

    with open_checkpoint(path) as ckpt:
        return verify_checkpoint(ckpt, embedding, decoder, atol, rtol, progress)


__all__ = [
    "COPIES_DIFFER",
    "DUPLICATE",
    "IMPLICIT",
    "NEAR",
    "NOT_TIED",
    "NO_DECODER",
    "NO_OUTPUT",
    "SEPARATE",
    "SHARED",
    "TIED",
    "TRANSPOSED",
    "UNVERIFIED",
    "Member",
    "TensorNotFoundError",
    "TieDeclaration",
    "TieGroup",
    "TieReport",
    "build_members",
    "classify",
    "declared_tie",
    "find_ties",
    "has_output_layer",
    "keras_graph_reuse",
    "tie_declaration",
    "verify_checkpoint",
    "verify_group",
    "verify_tie",
]
