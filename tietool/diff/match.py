"""Which tensor of checkpoint A is which tensor of checkpoint B (``tietool diff``).

Both sides are first listed by every name they answer to: the stored tensors
and, for safetensors, the names recorded as aliases in ``__metadata__``
(``{removed: kept}``, safetensors' and tietool's dedup convention), each
resolved to the stored tensor that holds its bytes. Then, in this order, each
step only looking at what the steps before left unmatched:

1. ``name``: the same name on both sides (``alias`` when one of the two is an
   alias: a tie stored once on one side and twice on the other).
2. ``tietool.names``: tietool's own record. A lossless H5 -> safetensors
   output of a transformers ``tf_model.h5`` names its tensors as transformers'
   TF ``save_pretrained(safe_serialization=True)`` does and records
   ``{dataset path: tensor name}`` in ``__metadata__["tietool.names"]``; the
   names are taken back to the dataset paths.
3. ``tf-pt-rules``: transformers' TF <-> PyTorch name and layout rules
   (:mod:`tietool.convert.ptnames`, what ``convert --names pt`` uses), on whichever
   side has transformers TF names, both if both do. Each tensor gets its
   PyTorch name and the axis permutation from its stored layout to the PyTorch
   one (2-D kernels transposed, conv kernels permuted, ``[1, n]`` biases
   squeezed); a PyTorch-named side keeps its names and layout. Several stored
   copies of one TF variable (BERT's word embeddings under ``bert`` and
   ``mlm___cls``) all pair with the one PyTorch tensor.
4. ``tied-head``: a decoder (LM head) stored on one side only, as a tie that
   the other side leaves out (transformers 5 saves no tied ``lm_head.weight``),
   pairs with the other side's embedding, transposed when it is ``[hidden,
   vocab]``.

Everything still unmatched is ``only-a`` or ``only-b``. A pair carries the
permutation that takes B's stored layout to A's (None: same element order).
"""

from __future__ import annotations

from dataclasses import dataclass

from tietool.errors import UsageError
from tietool.model import Checkpoint, TensorInfo

NAME = "name"
ALIAS = "alias"
RECORD = "tietool.names"
RULES = "tf-pt-rules"
TIED_HEAD = "tied-head"


@dataclass(frozen=True)
class Entry:
    """One name a checkpoint answers to, and the stored tensor behind it."""

    name: str
    info: TensorInfo
    alias: bool = False  # a name recorded in __metadata__, not stored itself


@dataclass(frozen=True)
class TensorPair:
    a: Entry | None
    b: Entry | None
    match: str | None  # NAME, ALIAS, RECORD, RULES, TIED_HEAD; None when unmatched
    perm: tuple[int, ...] | None = None  # B stored layout -> A stored layout; None: same element order
    squeeze: bool = False  # same bytes, shapes differ by a leading 1 ([1, n] vs [n])
    key: str = ""  # the name used for grouping and display (the PyTorch name when rules matched)

    @property
    def transform(self) -> str | None:
        if self.perm is not None:
            return "transpose" if self.perm == (1, 0) else "permute" + str(list(self.perm))
        return "squeeze" if self.squeeze else None


def entries(ckpt: Checkpoint) -> dict[str, Entry]:
    """Every name of ``ckpt``: stored tensors, then metadata aliases."""
    out = {t.name: Entry(t.name, t) for t in ckpt}
    for removed, kept in ckpt.records.aliases.items():
        out[removed] = Entry(removed, ckpt.tensors[kept], alias=True)
    return out


def _record(ckpt: Checkpoint) -> dict[str, str]:
    """``{stored name: dataset path}`` from a lossless output's tietool.names."""
    return {v: k for k, v in (ckpt.records.names or {}).items()}


def _pt_view(ckpt: Checkpoint, ents: dict[str, Entry]) -> dict[str, tuple[str, tuple[int, ...] | None, bool]] | None:
    """``{name: (PyTorch name, permutation stored -> PyTorch, squeezed)}`` for a
    transformers TF checkpoint; None for any other."""
    from tietool.convert.ptnames import pt_entries

    try:
        plan = pt_entries(ckpt)
    except UsageError:
        return None
    view: dict[str, tuple[str, tuple[int, ...] | None, bool]] = {}
    for e in plan:
        t = e.transform
        perm = (1, 0) if t == "transpose" else (t if isinstance(t, tuple) else None)
        view[e.source.name] = (e.pt_name, perm, t == "squeeze0")
    for name, ent in ents.items():
        if ent.alias and ent.info.name in view:
            view[name] = view[ent.info.name]
    return view


def _compose(pa: tuple[int, ...] | None, pb: tuple[int, ...] | None, rank: int) -> tuple[int, ...] | None:
    """The permutation taking B's stored layout to A's, when both map to one
    PyTorch layout by ``pa`` / ``pb``: ``c[i] = pb[inverse(pa)[i]]``."""
    if pa is None and pb is None:
        return None
    ident = tuple(range(rank))
    pa = pa or ident
    pb = pb or ident
    inv = [0] * len(pa)
    for i, p in enumerate(pa):
        inv[p] = i
    c = tuple(pb[inv[i]] for i in range(len(pa)))
    return None if c == ident else c


class _Matcher:
    def __init__(self, ca: Checkpoint, cb: Checkpoint):
        self.ca, self.cb = ca, cb
        self.ea, self.eb = entries(ca), entries(cb)
        self.left_a = dict.fromkeys(self.ea)  # ordered sets of unmatched names
        self.left_b = dict.fromkeys(self.eb)
        self.pairs: list[TensorPair] = []

    def add(self, a: str, b: str, match: str, perm=None, squeeze: bool = False, key: str | None = None,
            used_a: bool = True, used_b: bool = True) -> None:
        ea, eb = self.ea[a], self.eb[b]
        if match == NAME and (ea.alias or eb.alias):
            match = ALIAS
        self.pairs.append(TensorPair(ea, eb, match, perm, squeeze, key or a))
        if used_a:
            self.left_a.pop(a, None)
        if used_b:
            self.left_b.pop(b, None)

    def by_name(self) -> None:
        for n in list(self.left_a):
            if n in self.left_b:
                self.add(n, n, NAME)

    def by_record(self) -> None:
        ra, rb = _record(self.ca), _record(self.cb)
        if not ra and not rb:
            return
        back_b = {rb.get(n, n): n for n in self.left_b}
        for n in list(self.left_a):
            m = back_b.get(ra.get(n, n))
            if m is not None and m in self.left_b:
                self.add(n, m, RECORD)

    def by_rules(self) -> None:
        va, vb = _pt_view(self.ca, self.ea), _pt_view(self.cb, self.eb)
        if va is None and vb is None:
            return
        ident: dict = {}
        keyed_a = self._keyed(self.left_a, va or ident)
        keyed_b = self._keyed(self.left_b, vb or ident)
        for key, la in keyed_a.items():
            lb = keyed_b.get(key)
            if not lb:
                continue
            if len(la) == len(lb):
                couples = list(zip(la, lb, strict=True))
            elif len(la) > len(lb):
                couples = [(x, lb[0]) for x in la]
            else:
                couples = [(la[0], y) for y in lb]
            for (a, pa, sa), (b, pb, sb) in couples:
                rank = len(self.ea[a].info.shape)
                perm = _compose(pa, pb, rank) if rank == len(self.eb[b].info.shape) else None
                self.add(a, b, RULES, perm, squeeze=(sa != sb), key=key)
            for a, _, _ in la:
                self.left_a.pop(a, None)
            for b, _, _ in lb:
                self.left_b.pop(b, None)

    @staticmethod
    def _keyed(left: dict, view: dict) -> dict[str, list[tuple[str, tuple[int, ...] | None, bool]]]:
        out: dict[str, list] = {}
        for n in left:
            key, perm, squeezed = view.get(n, (n, None, False))
            out.setdefault(key, []).append((n, perm, squeezed))
        return out

    def tied_heads(self) -> None:
        if not self.left_a and not self.left_b:
            return
        self._tied_heads(self.ca, self.left_a, self.cb, swap=False)
        self._tied_heads(self.cb, self.left_b, self.ca, swap=True)

    def _tied_heads(self, side: Checkpoint, left: dict, other: Checkpoint, swap: bool) -> None:
        """A decoder unmatched on ``side`` whose group's embedding is paired
        with an embedding of ``other``, when ``other`` declares the tie."""
        from tietool.ties.heads import tied_heads
        from tietool.ties.verify import declared_tie

        heads = {n for n in left if not (self.ea if not swap else self.eb)[n].alias}
        # a tied head: the side that stores it and the side that leaves it out both declare the tie
        if not heads or declared_tie(side).get("value") is False or declared_tie(other).get("value") is False:
            return
        partner: dict = {}
        for p in self.pairs:
            mine, theirs = (p.b, p.a) if swap else (p.a, p.b)
            if mine is not None and theirs is not None:
                partner.setdefault(mine.name, (theirs.name, p.key))
        try:
            links = tied_heads(side, partner, heads)
        except UsageError:
            return
        for emb, m in links:
            if m.name in left:
                theirs, key = partner[emb.name]
                other_shape = (self.ea if swap else self.eb)[theirs].info.shape
                mine_shape = tuple(m.shape)
                perm = (1, 0) if len(mine_shape) == 2 and mine_shape != tuple(other_shape) and \
                    mine_shape == tuple(other_shape)[::-1] else None
                if swap:
                    self.add(theirs, m.name, TIED_HEAD, perm, key=key, used_a=False)
                else:
                    self.add(m.name, theirs, TIED_HEAD, perm, key=key, used_b=False)

    def rest(self) -> None:
        for n in self.left_a:
            self.pairs.append(TensorPair(self.ea[n], None, None, key=n))
        for n in self.left_b:
            self.pairs.append(TensorPair(None, self.eb[n], None, key=n))


def match_checkpoints(ca: Checkpoint, cb: Checkpoint) -> list[TensorPair]:
    """Every name of A and of B, paired where they can be (see the module doc)."""
    m = _Matcher(ca, cb)
    m.by_name()
    m.by_record()
    m.by_rules()
    m.tied_heads()
    m.rest()
    return m.pairs
