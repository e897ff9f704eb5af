"""Heads tied to an embedding, found in the tie groups (one helper for
``convert --names pt`` and ``diff``)."""

from __future__ import annotations

from typing import Container

from tietool.model import Checkpoint, TieRole
from tietool.ties.detect import find_ties
from tietool.ties.group import Member


def tied_heads(ckpt: Checkpoint, embeddings: Container[str], heads: Container[str]) -> list[tuple[Member, Member]]:
    """``(embedding, head)``: each decoder member named in ``heads`` of a tie
    group, with the group's first embedding member named in ``embeddings``
    (the one place ``convert --names pt`` and ``diff`` find a head tied to an
    embedding; what each then requires of the config is its own rule)."""
    out = []
    for g in find_ties(ckpt):
        emb = next((m for m in g.members if m.role == TieRole.EMBEDDING and m.name in embeddings), None)
        if emb is not None:
            out += [(emb, m) for m in g.members if m.role == TieRole.DECODER and m.name in heads]
    return out
