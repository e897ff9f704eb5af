"""The embedding/decoder pair of a checkpoint, as the layer needs it.

The pair is the one ``verify-tie`` finds and proves (``tietool.ties.verify``); no
TensorFlow here, so ``run`` can check its inputs against the header before
the layer (and TensorFlow) is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from tietool import kerashub
from tietool.errors import UsageError
from tietool.formats import open_checkpoint
from tietool.model import Checkpoint, TensorInfo

Progress = Callable[[str, int, int], None]  # (phase, bytes done, bytes total)

#: Keras dtype policy classes a quantised layer may name (built by ``run``, nothing else).
QUANTIZED_POLICIES = ("QuantizedDTypePolicy", "Int4DTypePolicy")


@dataclass(frozen=True)
class OutputLayer:
    """What the layer does besides the matmul, from the config and the layout.

    ``vars`` names the Keras 3 layer's stored variables (``vars/0``, ``vars/1``
    ...) in order when the layer is quantised: ``run`` loads them with Keras'
    own ``load_own_variables``, so scales, zero points and packing are used as
    Keras uses them."""

    soft_cap: float | None = None  # final_logit_soft_cap / logit_soft_cap
    dtype: str | None = None  # Keras dtype policy name of the model ("bfloat16", "mixed_bfloat16")
    quantization: dict | None = None  # {"class_name", "mode", "source_name"}
    vars: tuple[str, ...] = ()
    input_dim: int | None = None
    output_dim: int | None = None

    def to_json(self) -> dict:
        return {"soft_cap": self.soft_cap, "dtype": self.dtype, "quantization": self.quantization,
                "vars": list(self.vars), "input_dim": self.input_dim, "output_dim": self.output_dim}


@dataclass
class PairChoice:
    embedding: TensorInfo  # [vocab, hidden]
    decoder: TensorInfo | None  # a stored decoder the layer must use (untied); None when tied
    decoder_transposed: bool  # the stored decoder is [hidden, vocab] (a Keras kernel)
    tied: bool
    kind: str  # how verify-tie says the tie is stored
    output: OutputLayer = OutputLayer()


@dataclass
class Pair:
    embedding: str
    decoder: str | None
    tied: bool
    kind: str
    embedding_matrix: np.ndarray  # [vocab, hidden], bit-identical to the stored one
    decoder_kernel: np.ndarray | None  # [hidden, vocab] when untied
    output: OutputLayer = OutputLayer()
    layer_vars: tuple[np.ndarray, ...] = ()  # the quantised layer's stored variables, in order


def choose_pair(ckpt: Checkpoint, embedding: str | None = None, decoder: str | None = None,
                progress: Progress | None = None, linear: bool = True) -> PairChoice:
    """The verified tie group's embedding, and its decoder when the two differ.
    ``progress("compare", done, total)`` counts the bytes compared."""
    from tietool.ties.verify import declared_tie, find_ties, verify_group

    if decoder is not None and embedding is None:
        raise UsageError("--decoder needs --embedding too", ckpt.path)
    groups = find_ties(ckpt, embedding, decoder)
    if not groups:
        raise UsageError("no embedding matrix found to build the layer from (use --embedding NAME)", ckpt.path)
    group = verify_group(ckpt, groups[0], declared_tie(ckpt), tick=_counter(progress, "compare", groups[0].distinct()))
    if linear and group.verdict == "no output layer":
        why = group.reason.removesuffix(": no output layer")
        raise UsageError(f"verify-tie finds no output layer here ({why}): run does not invent one; "
                         "name a pair with --embedding/--decoder if there is one", ckpt.path)
    out = output_layer(ckpt, group)
    embeds = [m for m in group.distinct() if m.role == "embedding"]
    if not embeds:
        raise UsageError("the tie group has no stored embedding matrix", ckpt.path)
    emb = embeds[0].stored_info
    if group.tied or not [m for m in group.distinct() if m.role == "decoder"]:
        # Proven identical, or implicit (nothing else stored): one shared matrix.
        return PairChoice(emb, None, False, True, group.kind, out)
    dec = next(m for m in group.distinct() if m.role == "decoder")
    if tuple(dec.shape) not in ((group.vocab_size, group.hidden_size), (group.hidden_size, group.vocab_size)):
        raise UsageError(f"the output layer {dec.name!r} {list(dec.shape)} is a head of another width than the "
                         f"embedding [{group.vocab_size}, {group.hidden_size}]: it cannot be rebuilt as the tied "
                         "layer (run rebuilds the embedding's reverse pass)", ckpt.path)
    vg = kerashub.vars_group(dec.name)
    if vg is not None and vg[1] == 0 and f"{vg[0]}/1" in ckpt.tensors:
        bias = ckpt.tensors[f"{vg[0]}/1"]
        if tuple(bias.shape) == (group.vocab_size,):
            raise UsageError(f"the output layer {dec.name!r} adds a bias {bias.name!r}: run rebuilds the "
                             "embedding's reverse pass (a matmul), not this head", ckpt.path)
    return PairChoice(emb, dec.stored_info, dec.transposed, False, group.kind, out)


def output_layer(ckpt: Checkpoint, group) -> OutputLayer:
    """Soft cap, dtype policy and quantisation of the group's layer, from the
    keras-hub config (data) and the stored dtypes."""
    kh = kerashub.read_config(ckpt.config)
    emb = next(m for m in group.distinct() if m.role == "embedding").info
    quant = kh.quantization_of(emb.layer) if kh is not None else None
    names: tuple[str, ...] = ()
    in_dim = out_dim = None
    if kerashub.is_integer(emb.dtype):
        names = tuple(kerashub.group_vars(ckpt, emb.name))
        infos = [ckpt.tensors[n] for n in names]
        in_dim = emb.shape[0]
        g_idx = [t for t in infos[1:] if len(t.shape) == 1 and t.shape[0] != in_dim]
        if quant is None:
            if len(infos) >= 2 and len(infos[1].shape) == 1 and tuple(infos[1].shape) == (in_dim,):
                quant = {"class_name": "QuantizedDTypePolicy", "mode": "int8", "source_name": None}
            else:
                raise UsageError(f"{emb.name!r} is quantised ({emb.dtype}) in a layout tietool cannot tell "
                                 "without the model's config (int4 block size); use the .keras or preset", ckpt.path)
        if quant["class_name"] not in QUANTIZED_POLICIES:
            raise UsageError(f"quantisation policy {quant['class_name']!r} is not one run rebuilds", ckpt.path)
        mode = str(quant["mode"])
        out_dim = g_idx[0].shape[0] if g_idx else (emb.shape[1] * 2 if mode.startswith("int4") else emb.shape[1])
    elif quant is not None and str(quant.get("mode")) not in ("int8", "int4"):
        # float8 (or a mode to come) keeps a float matrix and computes through scales
        # run does not rebuild: refused, never a silent plain matmul
        raise UsageError(f"the config quantises the embedding layer {emb.layer!r} as {quant.get('mode')!r} "
                         f"({quant.get('class_name')}): run rebuilds int8 and int4 layers only", ckpt.path)
    elif quant is not None:
        quant = None  # the policy names a layer whose stored matrix is not quantised
    return OutputLayer(
        soft_cap=kh.soft_cap if kh is not None else None,
        dtype=kh.dtype if kh is not None else None,
        quantization=quant, vars=names, input_dim=in_dim, output_dim=out_dim,
    )


def load_pair(path, embedding: str | None = None, decoder: str | None = None,
              progress: Callable[[str, int, int], None] | None = None, linear: bool = True) -> Pair:
    """Verify and read the pair; ``progress(phase, done, total)`` counts the
    bytes compared (``"compare"``) and read (``"read"``). ``linear=False``
    (embedding lookups only) also serves a checkpoint whose embedding has no
    output layer."""
    with open_checkpoint(path) as ckpt:
        choice = choose_pair(ckpt, embedding, decoder, progress, linear=linear)
        tick = _counter(progress, "read", [choice.embedding] + ([choice.decoder] if choice.decoder else []))
        matrix = _read(ckpt, choice.embedding, tick)
        kernel = None
        if choice.decoder is not None:
            stored = _read(ckpt, choice.decoder, tick)
            # Keras kernels are [hidden, vocab]; PyTorch lm_head.weight is [vocab, hidden].
            kernel = np.ascontiguousarray(stored if choice.decoder_transposed else stored.T)
        layer_vars = tuple(ckpt.read(n) for n in choice.output.vars)
        return Pair(choice.embedding.name, choice.decoder.name if choice.decoder else None,
                    choice.tied, choice.kind, matrix, kernel, choice.output, layer_vars)


def _counter(progress: Progress | None, phase: str, items: list) -> Callable[[int], None] | None:
    """``tick(n)`` reporting ``progress(phase, done, total)`` over ``items``
    (TensorInfo or tie-group members); None without progress or when there
    is nothing to compare (a single item for "compare")."""
    infos = [getattr(i, "info", i) for i in items]
    if progress is None or (phase == "compare" and len(infos) < 2):
        return None
    total = sum(i.nbytes for i in infos)
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        progress(phase, done[0], total)
    return tick


def _read(ckpt: Checkpoint, info: TensorInfo, tick: Callable[[int], None] | None) -> np.ndarray:
    """The whole tensor (as ``Checkpoint.read``), read in bounded blocks so
    that progress can be told."""
    if tick is None or not info.shape:
        return ckpt.read(info.name)
    out = None
    for start, block in ckpt.iter_chunks(info.name):
        if out is None:
            out = np.empty(info.shape, dtype=block.dtype)
        out[start:start + block.shape[0]] = block
        tick(block.nbytes)
    return out if out is not None else ckpt.read(info.name)
