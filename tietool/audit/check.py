"""Audit config against weights: ``tietool check PATH...``.

For each checkpoint: the tie declaration (:func:`tietool.ties.declaration.tie_declaration`,
the one rule: what transformers 5 does with this config, by its class), the
flags the config writes, what the weights store (no head, an identical or
transposed copy, a different head, copies that differ among themselves), and
whether they agree. Reads headers, and only the tensor bytes a decision needs
(the stored head against the embedding; the copies against each other).

What transformers 5 does with each disagreement (tested in
``tests/interop/test_check_fix_pt.py`` by loading the damaged fixtures):

* declared false, no head stored: ``lm_head.weight`` is reported missing and
  initialised at random (a problem);
* declared true, a different head stored: transformers 5 warns and does not
  tie them, so the stored head is used; a loader that trusts the flag instead
  ties the output to the embedding and drops the head (a problem; a warning
  for a class that forces the flag, as T5 does: its config.json key is not
  what transformers 5 reads);
* a written flag that transformers 5 does not follow (Llava's
  ``text_config.tie_word_embeddings`` when the top level says true):
  transformers 4.x reads ``get_text_config(decoder=True)``'s flag; a warning
  when such a loader builds a different model from these weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tietool.errors import TietoolError, UsageError
from tietool.formats import open_checkpoint
from tietool.model import Checkpoint, TieRole
from tietool.textsafe import bounded
from tietool.ties import data as tiedata
from tietool.ties.declaration import RULES_KERAS, RULES_KERASHUB, TieDeclaration, tie_declaration
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
    declared: bool  # False: absent from the config, the config class's default
    read: bool = True  # False: written in the config, but the model class does not read it

    def label(self) -> str:
        return f"{self.key}={str(self.value).lower()}" + ("" if self.declared else " (default)")

    def to_json(self) -> dict:
        return {"key": self.key, "value": self.value, "declared": self.declared, "read": self.read}


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
    declaration: TieDeclaration | None = None
    warnings: tuple[Problem, ...] = ()

    def to_json(self) -> dict:
        return {
            "path": self.path, "ok": self.ok, "tied": self.tied, "problems": [p.message for p in self.problems],
            "tie_declaration": self.declaration.to_json() if self.declaration is not None else None,
            "warnings": [w.message for w in self.warnings], "warning_codes": [w.code for w in self.warnings],
            "problem_codes": [p.code for p in self.problems], "stored": self.stored,
            "weights_tied": self.weights_tied, "flags": [f.to_json() for f in self.flags],
            "embedding": self.embedding, "heads": list(self.heads), "format": self.format, "model": self.model,
            "repairs": [r.to_json() for r in self.repairs], "agreement": self.agreement, "error": self.error,
        }


# -- the config side ------------------------------------------------------------------

def config_flags(ckpt: Checkpoint) -> tuple[TieDeclaration, tuple[Flag, ...]]:
    """The tie declaration (:func:`tietool.ties.declaration.tie_declaration`,
    the one rule) and the tie flags written in the config: those the class
    reads, then those it does not (``read=False``); when the class reads none
    that is written, its default as an undeclared flag."""
    decl = tie_declaration(ckpt.config)
    cfg = ckpt.config if isinstance(ckpt.config, dict) else {}
    if decl.rules in (RULES_KERAS, RULES_KERASHUB):
        return decl, ((Flag(str(decl.key), bool(decl.value), True),) if decl.value is not None else ())
    flags = [Flag(k, v, True) for k in decl.keys if isinstance(v := _at(cfg, k), bool)]
    if not flags and decl.value is not None and decl.flag_key and not decl.forced:
        flags.append(Flag(decl.flag_key, decl.value, False))
    flags += [Flag(k, v, True, read=False) for k, v in decl.unread]
    return decl, tuple(flags)


def _at(cfg: dict, key: str) -> object:
    node: object = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


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
    declaration: TieDeclaration
    warnings: list[Problem]  # true, but no reason to fail (exit 0)

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
    decl, flags = config_flags(ckpt)
    cfg = ckpt.config if isinstance(ckpt.config, dict) else {}
    archs = cfg.get("architectures") if isinstance(cfg.get("architectures"), list) else []
    head = tiedata.head_name(archs[0]) if archs else None
    a = Analysis(ckpt, flags, decl.value, None, NO_EMBEDDING, None, None, [], [], [], head[0] if head else None,
                 decl, [])
    groups = find_ties(ckpt)
    if not groups:
        return a
    g = a.group = groups[0]
    verify_group(ckpt, g, declared_tie(ckpt))
    a.stored = _stored(g)
    a.weights_tied = {NO_HEAD: True, SHARED_STORAGE: True, IDENTICAL: True, TRANSPOSED_COPY: True,
                      DIFFERENT: False}.get(a.stored)
    has_head = has_output_layer({"architectures": archs}) if archs else None
    if a.stored in (NO_HEAD, SHARED_STORAGE) and has_head is False:
        a.weights_tied = None  # a base model (BertModel): no output layer to tie
    _unread_flags(a)
    _flag_against_weights(a, has_head)
    if a.stored == DIFFER:
        _copies(a, prefer)
    return a


def _labels(a: Analysis) -> tuple[str, str]:
    """(head, embedding) as the messages name them."""
    head = (_head_label(a.head_pt, a.group) if a.stored not in (NO_HEAD, SHARED_STORAGE)
            else (a.head_pt or NO_HEAD_NAME))
    return head, a.embedding or "the embedding"


def _set_flags(a: Analysis, value: bool, why: str) -> None:
    """Repairs setting every flag the class reads (the one it reads at its level when none is written)."""
    if a.declaration.forced:
        return  # the class ignores the key (T5 reads it as its output scaling): never rewritten
    keys = [f.key for f in a.flags if f.declared and f.read] or [a.declaration.flag_key or FLAG]
    for k in keys:
        current = next((f.value for f in a.flags if f.key == k and f.declared), None)
        if current != value and not any(r.kind == "set-flag" and r.key == k for r in a.repairs):
            a.repairs.append(Repair("set-flag", f"set {k} to {str(value).lower()} ({why})", key=k, value=value))


def _transformers4_key(cfg: dict) -> str:
    """The flag transformers 4.x reads: ``config.get_text_config(decoder=True).tie_word_embeddings``
    (transformers 4.57 ``PreTrainedModel.tie_embeddings_and_encoder_decoder``; ``get_text_config`` takes
    the first of ``decoder``, ``generator``, ``text_config`` present, else the config itself)."""
    sub = next((k for k in ("decoder", "generator", "text_config") if isinstance(cfg.get(k), dict)), None)
    return f"{sub}.{FLAG}" if sub else FLAG


def _unread_flags(a: Analysis) -> None:
    """Flags written in the config that disagree with the value transformers 5 uses (a nested flag the class
    reads only when its own is false, or one it never reads: transformers writes such pairs itself). A warning,
    not a problem, where a loader reading that flag builds a different model from these weights; nothing where
    it would not."""
    decl = a.declaration
    if decl.value is None:
        return
    head, emb = _labels(a)
    cfg = a.ckpt.config if isinstance(a.ckpt.config, dict) else {}
    for f in a.flags:
        if not f.declared or f.value == decl.value:
            continue
        if f.value and a.stored == DIFFERENT:
            what = f"ties the output to {emb} and drops the trained {head}"
        elif not f.value and a.stored in (NO_HEAD, SHARED_STORAGE):
            what = f"finds no {head} stored (only {emb}) and initialises it at random"
        else:
            continue
        if _transformers4_key(cfg) != f.key:
            continue  # no loader we know of reads that flag: nothing to warn about
        who = "transformers 4.x (it reads get_text_config(decoder=True))"
        reads = ", ".join(decl.keys) or "no flag"
        a.warnings.append(Problem(FLAGS_DISAGREE, (
            f"{f.label()} differs from what transformers 5 uses ({decl.architecture or 'this class'} reads {reads}: "
            f"{decl.describe()}): {who} {what}")))
        a.repairs.append(Repair("set-flag", f"set {f.key} to {str(decl.value).lower()} (the value transformers 5 "
                                "uses: every loader then builds the same model)", key=f.key, value=decl.value))


def _flag_against_weights(a: Analysis, has_head: bool | None) -> None:
    decl, tied = a.declaration, a.tied
    head, emb = _labels(a)
    if a.stored in (NO_HEAD, SHARED_STORAGE) and tied is False and has_head is not False:
        cure = ("; the class ties nothing whatever the flag says: the head must be stored" if decl.forced
                else ", and any loader that trusts the flag does the same; the head was dropped when saving a "
                     "tied model")
        a.problems.append(Problem(UNTIED_NO_HEAD, (
            f"the tie declaration is {decl.describe()} but no {head} is stored (only {emb}): transformers 5 "
            f"reports {_the(head)} missing and initialises it at random{cure}")))
        _set_flags(a, True, "the head was dropped when saving: the weights are tied")
    elif a.stored == DIFFERENT and tied is True and decl.forced:
        written = next((f for f in a.flags if f.key == decl.level_key), None)
        if written is None or written.value:
            a.warnings.append(Problem(TIED_DIFFERENT_HEAD, (
                f"the tie declaration is {decl.describe()} and a different {head} is stored beside {emb}: "
                "transformers 5 keeps the stored head (it warns and does not tie them), while a loader that trusts "
                f"config.json's {FLAG}" + (f"={str(written.value).lower()}" if written else " (absent: true)")
                + f" ties the output to {emb} and drops the trained head")))
    elif a.stored == DIFFERENT and tied is True:
        d = next((c for c in a.group.comparisons if not c["equal"]), {}) if a.group else {}
        a.problems.append(Problem(TIED_DIFFERENT_HEAD, (
            f"the tie declaration is {decl.describe()} but a different {head} is stored beside {emb} "
            f"({d.get('rows_differ', '?')} of {a.group.vocab_size if a.group else '?'} rows differ): transformers 5 "
            "keeps the stored head (it warns and does not tie them), while a loader that trusts the flag "
            f"(vLLM-style) ties the output to {emb} and drops the trained head")))
        _set_flags(a, False, "the weights were trained untied")


def _copies(a: Analysis, prefer: str | None) -> None:
    ckpt, g = a.ckpt, a.group
    assert g is not None
    distinct = g.distinct()
    a.agreement = (Agreement.from_json(g.agreement) if g.agreement is not None
                   else agreement(ckpt, [Copy(m.name, m.stored_info, m.transposed) for m in distinct]))
    odd = a.agreement.odd
    where = bounded((f"{o.name} differs from {o.reference} first at {list(o.index)} ({o.value} vs {o.expected})"
                     for o in odd), sep="; ")
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
        return
    same = next((c for c in a.agreement.classes if source in c), (source,))
    for m in distinct:
        if m.name not in same:
            a.repairs.append(Repair("use-copy", f"{m.name} := {source} (bit for bit)", tensor=m.name, source=source))


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
        agreement=a.agreement.to_json() if a.agreement else None, declaration=a.declaration,
        warnings=tuple(a.warnings))


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
