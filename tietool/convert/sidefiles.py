"""Which of the source folder's other files a conversion copies.

The policy (both naming schemes):

* Copied, byte for byte: the config the checkpoint was read with (when it
  sits in the folder) and every other regular file the reader listed in the
  folder (``generation_config.json``, tokenizer files, ``ref_*.npy`` ...).
* Not copied: the source's own weight files and index, any other weights
  file (by name: ``.h5``, ``.safetensors``, ``.bin``, ``.keras``, ... and their
  shard indexes; a stale copy of the weights in another format would load
  instead of the output), hidden files (``.gitattributes``, tietool's own
  temporaries) and the names this run writes.
* Symbolic links are followed only inside the source: a link whose target
  resolves inside the source folder, or, for a Hugging Face cache snapshot
  (``models--ORG--NAME/snapshots/REV/``), inside that repository's
  ``blobs/`` folder (how ``huggingface_hub`` lays files out). The output gets
  the target's bytes, not a link. Any other link (to ``~/.ssh``, ``/etc``,
  another project) is not copied: a converted folder is often shared, and
  tietool does not carry files from outside the checkpoint into it. Such
  links are named in the summary's notes (``--names keras``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..formats import WEIGHT_SUFFIXES
from ..model import Checkpoint


@dataclass(frozen=True)
class SideFiles:
    files: tuple[tuple[str, str], ...]  # (source path, name in the output folder)
    skipped_links: tuple[str, ...]  # names of links that point outside the source

    @property
    def paths(self) -> list[str]:
        return [p for p, _ in self.files]

    @property
    def names(self) -> list[str]:
        return [n for _, n in self.files]


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def link_allowed(path: str, folder: str) -> bool:
    """Whether the link ``path`` in ``folder`` points inside the source (see
    the module docstring)."""
    target = os.path.realpath(path)
    real = os.path.realpath(folder)
    if _inside(target, real):
        return True
    parent = os.path.dirname(real)
    if os.path.basename(parent) == "snapshots":  # models--ORG--NAME/snapshots/REV
        return _inside(target, os.path.join(os.path.dirname(parent), "blobs"))
    return False


def side_files(ckpt: Checkpoint, folder: str, writes: set[str]) -> SideFiles:
    """The files of ``folder`` (the source's folder) to copy beside the output."""
    names: list[str] = []
    cfg = ckpt.config_source
    if cfg and os.path.isfile(cfg) and os.path.dirname(os.path.abspath(cfg)) == os.path.abspath(folder):
        names.append(os.path.basename(cfg))
    names += [n for n in ckpt.folder_files if n not in names]
    own = {os.path.basename(f) for f in ckpt.files if f != cfg}
    files: list[tuple[str, str]] = []
    skipped: list[str] = []
    for n in names:
        if n in own or n in writes or n.startswith(".") or n.endswith(WEIGHT_SUFFIXES):
            continue
        p = os.path.join(folder, n)
        if not os.path.isfile(p):
            continue
        if os.path.islink(p) and not link_allowed(p, folder):
            skipped.append(n)
            continue
        files.append((p, n))
    return SideFiles(tuple(files), tuple(skipped))
