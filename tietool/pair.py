"""The embedding/decoder pair of a checkpoint, as the layer needs it.

The pair is the one ``verify-tie`` finds and proves (``tietool.ties``); no
TensorFlow here, so ``run`` can check its inputs against the header before
the layer (and TensorFlow) is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import UsageError
from .formats import open_checkpoint
from .model import Checkpoint, TensorInfo


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


def choose_pair(ckpt: Checkpoint, embedding: str | None = None, decoder: str | None = None) -> PairChoice:
    """The verified tie group's embedding, and its decoder when the two differ."""
    from .ties import declared_tie, find_ties, verify_group

    if decoder is not None and embedding is None:
        raise UsageError("--decoder needs --embedding too", ckpt.path)
    groups = find_ties(ckpt, embedding, decoder)
    if not groups:
        raise UsageError("no embedding matrix found to build the layer from (use --embedding NAME)", ckpt.path)
    group = verify_group(ckpt, groups[0], declared_tie(ckpt))
    embeds = [m for m in group.distinct() if m.role == "embedding"]
    if not embeds:
        raise UsageError("the tie group has no stored embedding matrix", ckpt.path)
    emb = embeds[0].info
    if group.tied or not [m for m in group.distinct() if m.role == "decoder"]:
        # Proven identical, or implicit (nothing else stored): one shared matrix.
        return PairChoice(emb, None, False, True, group.kind)
    dec = next(m for m in group.distinct() if m.role == "decoder")
    return PairChoice(emb, dec.info, dec.transposed, False, group.kind)


def load_pair(path, embedding: str | None = None, decoder: str | None = None) -> Pair:
    with open_checkpoint(path) as ckpt:
        choice = choose_pair(ckpt, embedding, decoder)
        matrix = ckpt.read(choice.embedding.name)
        kernel = None
        if choice.decoder is not None:
            stored = ckpt.read(choice.decoder.name)
            # Keras kernels are [hidden, vocab]; PyTorch lm_head.weight is [vocab, hidden].
            kernel = np.ascontiguousarray(stored if choice.decoder_transposed else stored.T)
        return Pair(choice.embedding.name, choice.decoder.name if choice.decoder else None,
                    choice.tied, choice.kind, matrix, kernel)
