"""``tietool convert PRESET --names pt``: a keras-hub preset -> a folder transformers 5 loads.

PRESET is what ``save_to_preset`` writes (``config.json`` naming a keras-hub backbone,
``model.weights.h5`` or its shards with ``model.weights.json``, ``task.json``, tokenizer assets).
OUT gets ``model.safetensors`` (``{"format": "pt"}``, transformers names and layouts, sharded
past the shard size), ``config.json`` (:mod:`.hfconfig`) and the tokenizer (:mod:`.tokenizer`).
Written by :func:`tietool.convert.pipeline.execute`: atomically, every tensor compared with its
source after writing. Nothing of TensorFlow, Keras or keras-hub is imported.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass

from tietool.errors import ConversionError
from tietool.model import Checkpoint

from ...kerashub import backbone_config, is_kerashub_config, read_config
from ..plan import OutputFile, Plan, safetensors_outputs
from ..result import PtDetails
from . import families, hfconfig
from .assemble import Assembly
from .families import Family
from .plan import plan_weights
from .tokenizer import convert_tokenizer

PT_METADATA = {"format": "pt"}
MAX_CONFIG_BYTES = 64 * 1024 * 1024
DEFAULT_SHARD_SIZE = 5 * 10**9
FLOAT_POLICIES = ("float32", "bfloat16", "float16")


def preset_of(src: str) -> str:
    """The preset folder of a preset's own weights file (``PRESET/model.weights.h5`` or its
    ``model.weights.json`` index), else ``src`` as it is."""
    folder = os.path.dirname(src) or "."
    if os.path.basename(src) in ("model.weights.h5", "model.weights.json") and is_preset(folder):
        return folder
    return src


def is_preset(src: str) -> bool:
    """A keras-hub source: a folder whose ``config.json`` is a keras-hub object, or a ``.keras``
    archive whose ``config.json`` is (a task or a backbone); read as JSON, nothing run."""
    try:
        if os.path.isdir(src):
            path = os.path.join(src, "config.json")
            if not os.path.isfile(path) or os.path.getsize(path) > MAX_CONFIG_BYTES:
                return False
            with open(path, encoding="utf-8") as fh:
                return is_kerashub_config(json.load(fh))
        if src.endswith(".keras") and zipfile.is_zipfile(src):
            with zipfile.ZipFile(src) as z:
                info = z.getinfo("config.json")
                if info.file_size > MAX_CONFIG_BYTES:
                    return False
                return is_kerashub_config(json.loads(z.read(info)))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return False
    return False


def choose_family(backbone: str | None, cfg: dict, where: str) -> Family:
    """The family of ``backbone`` whose ``when`` settings ``cfg`` has (exit 2 naming them)."""
    found = families.candidates(backbone or "")
    if not found:
        raise ConversionError(f"keras-hub {backbone} has no transformers export in tietool yet (supported: "
                              f"{', '.join(families.backbones())})", where)
    for fam in found:
        if not hfconfig.mismatches(fam, cfg, fam.when):
            return fam
    settings = sorted({k for f in found for k in f.when})
    raise hfconfig.Unrepresentable(
        f"{backbone} with {', '.join(f'{k}={cfg.get(k)!r}' for k in settings)} matches none of "
        f"{', '.join(f.architecture for f in found)}", where)


@dataclass(frozen=True)
class Export:
    plan: Plan
    tensors: int
    notes: tuple[str, ...]


def plan_export(ckpt: Checkpoint, src: str, shard_bytes: int | None) -> Export:
    """The plan of ``convert PRESET --names pt`` for the opened preset ``ckpt``
    (executed by :func:`tietool.convert.pipeline.convert_to_pt`)."""
    found = backbone_config(ckpt.config)
    kh = read_config(ckpt.config)
    if found is None or kh is None:
        raise ConversionError("config.json is not a keras-hub backbone config", src)
    cls, cfg = found
    fam = choose_family(cls, cfg, src)
    if kh.policy_map or (kh.dtype or "float32") not in FLOAT_POLICIES:
        raise hfconfig.Unrepresentable(f"dtype policy {kh.dtype!r} (quantised layers: {sorted(kh.policy_map)}) "
                                       "has no transformers counterpart here", src)
    weights = plan_weights(ckpt, fam, int(cfg["num_layers"]))
    notes = []
    if isinstance(cfg.get("tie_word_embeddings"), bool) and cfg["tie_word_embeddings"] != weights.tied:
        notes.append(f"config.json says tie_word_embeddings={cfg['tie_word_embeddings']}, the weights "
                     f"{'store no' if weights.tied else 'store a'} head: written as the weights say")
    try:
        hf_cfg = hfconfig.translate(fam, cfg, tie=weights.tied, dtype=kh.dtype)
    except hfconfig.Unrepresentable as exc:
        raise hfconfig.Unrepresentable(exc.message, src) from None
    tok = convert_tokenizer(src) if os.path.isdir(src) else None
    texts = {}
    if tok is not None:
        hf_cfg.update(tok.special_ids)
        texts.update(tok.files)
        texts["generation_config.json"] = json.dumps(
            {**tok.special_ids, "_from_model_config": True}, indent=2, sort_keys=True) + "\n"
    else:
        notes.append("no tokenizer in the preset: no tokenizer.json written")
    texts["config.json"] = json.dumps(hf_cfg, indent=2, sort_keys=True) + "\n"
    outputs = safetensors_outputs(list(weights.tensors), dict(PT_METADATA), "model.safetensors",
                                  DEFAULT_SHARD_SIZE if shard_bytes is None else shard_bytes)
    outputs += [OutputFile(name, "text", text=text) for name, text in texts.items()]
    details = PtDetails(
        transposed=tuple(t.name for t in weights.tensors if t.transform == "transpose"),
        permuted=tuple(t.name for t in weights.tensors if isinstance(t.transform, Assembly)),
        pt_class=fam.architecture)
    if details.permuted:
        notes.append(f"built {len(details.permuted)} tensor(s) from parts (per-head transposes, fused kernels)")
    notes.insert(0, f"{fam.architecture} ({fam.model_type}), " + (
        "tied: no head tensor (transformers ties lm_head to the embedding)" if weights.tied
        else "untied: lm_head.weight is the stored reverse_embeddings, transposed"))
    return Export(Plan(tuple(outputs), multi=True, pt=details), len(weights.tensors), tuple(notes))
