"""The embedding/decoder pair of a checkpoint, as the layer needs it.

The pair is the one ``verify-tie`` finds and proves (``tietool.ties``); no
TensorFlow here, so ``run`` can check its inputs against the header before
the layer (and TensorFlow) is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import UsageError
from .formats import open_checkpoint
from .model import Checkpoint, TensorInfo

Progress = Callable[[str, int, int], None]  # (phase, bytes done, bytes total)


@dataclass
class PairChoice:
    embedding: TensorInfo  # [vocab, hidden]
    decoder: TensorInfo | None  # a stored decoder the layer must use (untied); None when tied
    decoder_transposed: bool  # the stored decoder is [hidden, vocab] (a Keras kernel)
    tied: bool
    kind: str  # how verify-tie says the tie is stored


@dataclass
class Pair:
    embedding: str
    decoder: str | None
    tied: bool
    kind: str
    embedding_matrix: np.ndarray  # [vocab, hidden], bit-identical to the stored one
    decoder_kernel: np.ndarray | None  # [hidden, vocab] when untied


def choose_pair(ckpt: Checkpoint, embedding: str | None = None, decoder: str | None = None,
                progress: Progress | None = None) -> PairChoice:
    """The verified tie group's embedding, and its decoder when the two differ.
    ``progress("compare", done, total)`` counts the bytes compared."""
    from .ties import declared_tie, find_ties, verify_group

    if decoder is not None and embedding is None:
        raise UsageError("--decoder needs --embedding too", ckpt.path)
    groups = find_ties(ckpt, embedding, decoder)
    if not groups:
        raise UsageError("no embedding matrix found to build the layer from (use --embedding NAME)", ckpt.path)
    group = verify_group(ckpt, groups[0], declared_tie(ckpt), tick=_counter(progress, "compare", groups[0].distinct()))
    embeds = [m for m in group.distinct() if m.role == "embedding"]
    if not embeds:
        raise UsageError("the tie group has no stored embedding matrix", ckpt.path)
    emb = embeds[0].info
    if group.tied or not [m for m in group.distinct() if m.role == "decoder"]:
        # Proven identical, or implicit (nothing else stored): one shared matrix.
        return PairChoice(emb, None, False, True, group.kind)
    dec = next(m for m in group.distinct() if m.role == "decoder")
    return PairChoice(emb, dec.info, dec.transposed, False, group.kind)


def load_pair(path, embedding: str | None = None, decoder: str | None = None,
              progress: Callable[[str, int, int], None] | None = None) -> Pair:
    """Verify and read the pair; ``progress(phase, done, total)`` counts the
    bytes compared (``"compare"``, when there are stored copies) and read
    (``"read"``)."""
    with open_checkpoint(path) as ckpt:
        choice = choose_pair(ckpt, embedding, decoder, progress)
        tick = _counter(progress, "read", [choice.embedding] + ([choice.decoder] if choice.decoder else []))
        matrix = _read(ckpt, choice.embedding, tick)
        kernel = None
        if choice.decoder is not None:
            stored = _read(ckpt, choice.decoder, tick)
            # Keras kernels are [hidden, vocab]; PyTorch lm_head.weight is [vocab, hidden].
            kernel = np.ascontiguousarray(stored if choice.decoder_transposed else stored.T)
        return Pair(choice.embedding.name, choice.decoder.name if choice.decoder else None,
                    choice.tied, choice.kind, matrix, kernel)


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
