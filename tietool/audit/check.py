"""Audit config against weights: ``tietool check PATH...``.

For each checkpoint: the tie flag(s) the config declares (top level and
nested ``text_config`` / ``decoder`` / ..., an absent key meaning the model
type's default in transformers 5, see :mod:`tietool.ties.data`), what the
weights store (no head, an identical or transposed copy, a different head,
copies that differ among themselves), and whether they agree. Reads headers,
and only the tensor bytes a decision needs (the stored head against the
embedding; the copies against each other).

What transformers 5.24 does with each disagreement (tested in
``tests/test_check_fix_pt.py`` by loading the damaged fixtures):

* flag false, no head stored: ``lm_head.weight`` is reported missing and
  initialised at random;
* flag true (declared or default), a different head stored: transformers 5
  warns and does not tie them, so the stored head is used; a loader that
  trusts the flag instead ties the output to the embedding and drops the head;
* top-level and nested flags disagree: transformers 5 follows the top level.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tietool import config as configlib
from tietool.errors import TietoolError
from tietool.formats import open_checkpoint
from tietool.model import Checkpoint, TieRole
from tietool.textsafe import bounded
from tietool.ties import data as tiedata
from tietool.ties.majority import Agreement, Copy, agreement
from tietool.ties.verify import (
    COPIES_DIFFER,
    IMPLICIT,
    NEAR,
    NO_DECODER,
    SEPARATE,
    SHARED,
    TIED,
    TRANSPOSED,
    TieGroup,
    declared_tie,
    find_ties,
    has_output_layer,
    verify_group,
)

FLAG = "tie_word_embeddings"
#: Sub-configs whose tie flag a composite architecture may read.
NESTED = ("text_config", "decoder", "language_config", "llm_config", "thinker_config", "text_model")

# what is stored
NO_HEAD = "no head"
SHARED_STORAGE = "shared storage"
IDENTICAL = "identical copy"
TRANSPOSED_COPY = "transposed copy"
DIFFERENT = "different head"
DIFFER = "copies differ"
NO_EMBEDDING = "no embedding"

# problem codes
UNTIED_NO_HEAD = "untied-no-head"
TIED_DIFFERENT_HEAD = "tied-different-head"
FLAGS_DISAGREE = "flags-disagree"
COPIES_DIFFER_CODE = "copies-differ"


@dataclass(frozen=True)
class Flag:
    key: str  # dotted JSON path in the config: "tie_word_embeddings", "text_config.tie_word_embeddings"
    value: bool
    declared: bool  # False: absent from the config, the model type's default

    def label(self) -> str:
        return f"{self.key}={str(self.value).lower()}" + ("" if self.declared else " (default)")

    def to_json(self) -> dict:
        return {"key": self.key, "value": self.value, "declared": self.declared}


@dataclass(frozen=True)
class Problem:
    code: str
    message: str

    def to_json(self) -> dict:
        return {"code": self.code, "message": self.message}


def _required(value: str | None, field_name: str, kind: str) -> str:
    if value is None:
        raise ValueError(f"a {kind} repair has no {field_name}")
    return value


@dataclass(frozen=True)
class Repair:
    """One change ``fix`` makes. ``kind``: ``set-flag`` (``key`` = dotted
    config path, ``value``), ``use-copy`` (``tensor`` gets the bytes of
    ``source``), ``write-head`` / ``drop-head`` (``tensor``)."""

    kind: str
    message: str
    key: str | None = None
    value: bool | None = None
    tensor: str | None = None
    source: str | None = None

    @property
    def tensor_name(self) -> str:
        """``tensor``, for the kinds that name one."""
        return _required(self.tensor, "tensor", self.kind)

    @property
    def source_name(self) -> str:
        """``source``, for ``use-copy`` and ``write-head``."""
        return _required(self.source, "source", self.kind)

    @property
    def key_path(self) -> tuple[str, ...]:
        """``key`` as a path into the config, for ``set-flag``."""
        return tuple(_required(self.key, "key", self.kind).split("."))

    def to_json(self) -> dict:
        d = {"kind": self.kind, "message": self.message}
        for k in ("key", "value", "tensor", "source"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d


@dataclass(frozen=True)
class CheckResult:
    path: str
    ok: bool | None  # None: could not be read
    tied: bool | None  # the effective tie flag
    stored: str | None
    format: str | None = None
    model: str | None = None  # ORG/NAME@REV for a Hugging Face cache snapshot
    flags: tuple[Flag, ...] = ()
    embedding: str | None = None
    heads: tuple[str, ...] = ()
    weights_tied: bool | None = None  # what the weights say (None: they do not decide)
    problems: tuple[Problem, ...] = ()
    repairs: tuple[Repair, ...] = ()
    needs_prefer: bool = False  # stored copies differ with no majority: a repair needs --prefer
    error: str | None = None
    agreement: dict | None = field(default=None, compare=False)

    def to_json(self) -> dict:
        return {
            "path": self.path, "ok": self.ok, "tied": self.tied, "problems": [p.message for p in self.problems],
            "problem_codes": [p.code for p in self.problems], "stored": self.stored,
            "weights_tied": self.weights_tied, "flags": [f.to_json() for f in self.flags],
            "embedding": self.embedding, "heads": list(self.heads), "format": self.format, "model": self.model,
            "repairs": [r.to_json() for r in self.repairs], "agreement": self.agreement, "error": self.error,
        }


# -- the config side ------------------------------------------------------------------

def config_flags(ckpt: Checkpoint) -> tuple[tuple[Flag, ...], bool | None]:
    """The tie flags the config declares and the effective one (None: the
    config says nothing about tying)."""
    cfg = ckpt.config
    if not isinstance(cfg, dict):
        return (), None
    if not configlib.is_hf_config(cfg):
        d = declared_tie(ckpt)
        if d.get("value") is None:
            return (), None
        return (Flag(str(d.get("key")), bool(d["value"]), True),), bool(d["value"])
    flags = []
    if isinstance(cfg.get(FLAG), bool):
        flags.append(Flag(FLAG, cfg[FLAG], True))
    for sub in NESTED:
        node = cfg.get(sub)
        if isinstance(node, dict) and isinstance(node.get(FLAG), bool):
            flags.append(Flag(f"{sub}.{FLAG}", node[FLAG], True))
    if flags:
        return tuple(flags), flags[0].value
    default = tiedata.default_tie(cfg.get("model_type"))
    value = True if default is None else default
    return (Flag(FLAG, value, False),), value


# -- the weights side ----------------------------------------------------------------

def _stored(g: TieGroup) -> str:
    if g.kind in (NO_DECODER, IMPLICIT):
        return NO_HEAD
    if g.kind == SHARED:
        return SHARED_STORAGE
    if g.verdict in (NEAR, COPIES_DIFFER):
        return DIFFER
    if g.kind == SEPARATE:
        return DIFFERENT
    if g.verdict == TIED:
        return TRANSPOSED_COPY if g.kind == TRANSPOSED else IDENTICAL
    return DIFFERENT


@dataclass
class Analysis:
    """Everything ``check`` and ``fix`` decide from one open checkpoint."""

    ckpt: Checkpoint
    flags: tuple[Flag, ...]
    tied: bool | None
    group: TieGroup | None
    stored: str
    weights_tied: bool | None
    agreement: Agreement | None
    problems: list[Problem]
    repairs: list[Repair]
    needs_prefer: list[str]  # the copies to choose from when no majority exists
    head_pt: str | None  # the architecture's PyTorch head name (transformers 5 _tied_weights_keys)

    @property
    def embedding(self) -> str | None:
        if self.group is None:
            return None
        return next((m.name for m in self.group.members if m.role == TieRole.EMBEDDING and m.stored), None)

    @property
    def heads(self) -> tuple[str, ...]:
        if self.group is None:
            return ()
        return tuple(m.name for m in self.group.members if m.role == TieRole.DECODER)


#: The head, when no name for it is known: read after "no", "a stored", "a different" (no article of its own).
NO_HEAD_NAME = "output layer"


def _the(label: str) -> str:
    """``label`` as the subject or object of a sentence: "the output layer" or the tensor's name."""
    return "the output layer" if label == NO_HEAD_NAME else label


def _head_label(a_head_pt: str | None, group: TieGroup | None) -> str:
    if group is not None:
        dec = [m.name for m in group.members if m.role == TieRole.DECODER]
        if dec:
            return dec[0]
    return a_head_pt or NO_HEAD_NAME


def _choose(a: Analysis, prefer: str | None) -> str | None:
    """The copy ``--prefer`` names: ``embedding`` (the first stored copy, the
    input embedding), ``decoder`` (the last: the copy the output layer reads),
    or a tensor name."""
    names = [m.name for m in a.group.distinct()] if a.group else []
    if prefer is None or not names:
        return None
    if prefer == "embedding":
        return names[0]
    if prefer == "decoder":
        return names[-1]
    return prefer if prefer in names else None


def analyse(ckpt: Checkpoint, prefer: str | None = None) -> Analysis:
    from tietool.errors import UsageError

    flags, tied = config_flags(ckpt)
    cfg = ckpt.config if isinstance(ckpt.config, dict) else {}
    archs = cfg.get("architectures") if isinstance(cfg.get("architectures"), list) else []
    head = tiedata.head_name(archs[0]) if archs else None
    head_pt = head[0] if head else None
    groups = find_ties(ckpt)
    a = Analysis(ckpt, flags, tied, None, NO_EMBEDDING, None, None, [], [], [], head_pt)
    if not groups:
        return a
    g = a.group = groups[0]
    verify_group(ckpt, g, declared_tie(ckpt))
    a.stored = _stored(g)
    a.weights_tied = {NO_HEAD: True, SHARED_STORAGE: True, IDENTICAL: True, TRANSPOSED_COPY: True,
                      DIFFERENT: False}.get(a.stored)
    emb = a.embedding or "the embedding"
    has_head = has_output_layer({"architectures": archs}) if archs else None
    if a.stored in (NO_HEAD, SHARED_STORAGE) and has_head is False:
        a.weights_tied = None  # a base model (BertModel): no output layer to tie
    declared = [f for f in flags if f.declared]
    values = {f.value for f in declared}
    target = a.weights_tied if a.weights_tied is not None else tied
    head_label = (_head_label(head_pt, g) if a.stored not in (NO_HEAD, SHARED_STORAGE)
                  else (head_pt or NO_HEAD_NAME))

    def set_all(value: bool, why: str) -> None:
        keys = [f.key for f in declared] or [FLAG]
        for k in keys:
            current = next((f.value for f in flags if f.key == k), None)
            needed = current != value or not any(f.key == k and f.declared for f in flags)
            if needed and not any(r.kind == "set-flag" and r.key == k for r in a.repairs):
                a.repairs.append(Repair("set-flag", f"set {k} to {str(value).lower()} ({why})", key=k, value=value))

    if len(values) > 1 and target is not None:
        top = next((f for f in declared if f.key == FLAG), declared[0])
        others = [f for f in declared if f.value != top.value]
        nested = others[0]
        if a.weights_tied:
            t5 = (f"transformers 5 reads the top level, so it ties {_the(head_label)} to {emb}" if top.value
                  else f"transformers 5 reads the top level and reports {_the(head_label)} missing (random)")
            other = (f"a loader that reads {nested.key} expects a stored {head_label} and finds none"
                     if not nested.value else f"a loader that reads {nested.key} ties it")
        else:
            t5 = ("transformers 5 reads the top level and keeps the stored head" if not top.value
                  else "transformers 5 reads the top level, sees the stored head differ and keeps it (with a warning)")
            other = (f"a loader that trusts {nested.key}=true ties the output to {emb} and drops the trained head"
                     if nested.value else f"a loader that reads {nested.key} keeps the stored head")
        weights = (f"tied (no {head_label} stored)" if a.weights_tied
                   else f"untied ({_the(head_label)} stored, different)")
        a.problems.append(Problem(FLAGS_DISAGREE, (
            f"{top.label()} at the top level but {nested.label()}, and the weights are {weights}: "
            f"{t5}, while {other}")))
        set_all(target, "every flag the architecture reads agrees with the weights")
    elif a.stored in (NO_HEAD, SHARED_STORAGE) and tied is False and has_head is not False:
        flag = next((f for f in flags if f.value is False), flags[0] if flags else None)
        a.problems.append(Problem(UNTIED_NO_HEAD, (
            f"{flag.label() if flag else 'the config'} says untied but no {head_label} is stored (only {emb}): "
            f"transformers 5 reports {_the(head_label)} missing and initialises it at random, and any loader that "
            "trusts the flag does the same; the head was dropped when saving a tied model")))
        set_all(True, "the head was dropped when saving: the weights are tied")
    elif a.stored == DIFFERENT and tied is True:
        flag = flags[0] if flags else Flag(FLAG, True, False)
        d = next((c for c in g.comparisons if not c["equal"]), {})
        a.problems.append(Problem(TIED_DIFFERENT_HEAD, (
            f"{flag.label()} says tied but a different {head_label} is stored beside {emb} "
            f"({d.get('rows_differ', '?')} of {g.vocab_size} rows differ): transformers 5 keeps the stored head "
            "(it warns and does not tie them), while a loader that trusts the flag (vLLM-style) ties the output to "
            f"{emb} and drops the trained head")))
        set_all(False, "the weights were trained untied")
    if a.stored == DIFFER:
        distinct = g.distinct()
        a.agreement = (Agreement.from_json(g.agreement) if g.agreement is not None
                       else agreement(ckpt, [Copy(m.name, m.stored_info, m.transposed) for m in distinct]))
        odd = a.agreement.odd
        where = "; ".join(f"{o.name} differs from {o.reference} first at {list(o.index)} ({o.value} vs {o.expected})"
                          for o in odd)
        if a.agreement.majority:
            fix_how = f"the majority ({len(a.agreement.majority)} of {len(distinct)}) decides"
        else:
            fix_how = "there is no majority: choose with --prefer embedding|decoder|NAME"
        a.problems.append(Problem(COPIES_DIFFER_CODE, (
            f"the {len(distinct)} stored copies of the tied matrix differ ({where}): a loader uses one of them, so "
            f"its output depends on which, and tietool convert --names pt refuses to merge them; {fix_how}")))
        source = a.agreement.majority[0] if a.agreement.majority else _choose(a, prefer)
        if source is None:
            if prefer is not None:
                raise UsageError(f"--prefer {prefer!r} names none of the copies: "
                                 + bounded(m.name for m in distinct), ckpt.path)
            a.needs_prefer = [m.name for m in distinct]
        else:
            same = next((c for c in a.agreement.classes if source in c), (source,))
            for m in distinct:
                if m.name not in same:
                    a.repairs.append(Repair("use-copy", f"{m.name} := {source} (bit for bit)", tensor=m.name,
                                            source=source))
    return a


# -- the command ----------------------------------------------------------------------

def suggest_output(path: str) -> str:
    p = path.rstrip("/\\") or path
    if os.path.isdir(p):
        return p + "-fixed"
    root, ext = os.path.splitext(p)
    for suf in (".safetensors.index.json", ".h5.index.json", ".weights.json", ".weights.h5"):
        if p.endswith(suf):
            root, ext = p[: -len(suf)], suf
    return root + "-fixed" + ext


def result_from(path: str, a: Analysis, model: str | None = None) -> CheckResult:
    ok = not a.problems
    return CheckResult(
        path=path, ok=ok, tied=a.tied, stored=a.stored, format=a.ckpt.format, model=model, flags=a.flags,
        embedding=a.embedding, heads=a.heads, weights_tied=a.weights_tied, problems=tuple(a.problems),
        repairs=tuple(a.repairs), needs_prefer=bool(a.needs_prefer),
        agreement=a.agreement.to_json() if a.agreement else None)


def check_checkpoint(path: str | os.PathLike, model: str | None = None) -> CheckResult:
    """Check one checkpoint. Raises :class:`~tietool.errors.TietoolError` when
    it cannot be read."""
    path = os.fspath(path)
    with open_checkpoint(path) as ckpt:
        return result_from(path, analyse(ckpt), model)


@dataclass(frozen=True)
class CheckReport:
    checkpoints: tuple[CheckResult, ...]
    seconds: float

    @property
    def unreadable(self) -> int:
        return sum(1 for c in self.checkpoints if c.ok is None)

    @property
    def with_problems(self) -> int:
        return sum(1 for c in self.checkpoints if c.ok is False)

    def to_json(self) -> dict:
        return {"checkpoints": [c.to_json() for c in self.checkpoints],
                "summary": {"checked": len(self.checkpoints),
                            "consistent": sum(1 for c in self.checkpoints if c.ok),
                            "problems": self.with_problems, "unreadable": self.unreadable,
                            "seconds": round(self.seconds, 3)}}


def check_paths(paths: list[str]) -> CheckReport:
    """Check every checkpoint under ``paths`` (:func:`tietool.audit.scan.find_checkpoints`);
    one that cannot be read is listed with its error and the others still checked."""
    import time

    from tietool.audit.scan import find_checkpoints

    t0 = time.monotonic()
    results = []
    for found in find_checkpoints(paths):
        if found.error is not None:
            results.append(CheckResult(found.path, None, None, None, model=found.model, error=found.error))
            continue
        try:
            results.append(check_checkpoint(found.path, found.model))
        except TietoolError as exc:
            results.append(CheckResult(found.path, None, None, None, model=found.model, error=exc.message))
        except (OSError, ValueError) as exc:
            results.append(CheckResult(found.path, None, None, None, model=found.model,
                                       error=f"cannot read ({type(exc).__name__}: {exc})"))
    return CheckReport(tuple(results), time.monotonic() - t0)
