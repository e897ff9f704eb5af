"""A transformers 5 ``config.json`` -> the keras-hub backbone config of a :class:`~.families.Family`:
the family's ``CONFIG`` rules read backwards (:mod:`.hfconfig` is the forward direction).

Every transformers key is accounted for: read by a rule, one of :data:`HF_HARMLESS` (no effect on
the logits), or an error naming it (exit 2). A constant rule is a requirement (``hidden_act`` must be
``silu`` for Llama 3); two rules reading one keras-hub setting must agree (GPT-2's three dropouts).
"""

from __future__ import annotations

from typing import Any

from tietool.textsafe import bounded

from .families import Family
from .hfconfig import Unrepresentable

#: transformers keys that do not change what the model computes from token ids (or are read elsewhere).
HF_HARMLESS = frozenset((
    "architectures", "model_type", "dtype", "torch_dtype", "transformers_version", "_name_or_path",
    "initializer_range", "use_cache", "bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings",
    "max_position_embeddings", "pretraining_tp", "output_attentions", "output_hidden_states", "return_dict",
    "id2label", "label2id", "problem_type", "tokenizer_class", "is_encoder_decoder", "chunk_size_feed_forward",
    "torchscript", "_sliding_window_pattern", "sliding_window_pattern", "summary_type", "summary_use_proj",
    "summary_activation", "summary_proj_to_labels", "summary_first_dropout", "reorder_and_upcast_attn",
    "use_bidirectional_attention", "cache_implementation",
    # a window no layer uses (each family's table reads these where its layers use one)
    "sliding_window", "max_window_layers", "use_sliding_window", "layer_types",
))
#: transformers' class defaults for keys a saved config may leave out.
HF_DEFAULTS: dict[str, Any] = {"attention_dropout": 0.0, "sliding_window": None, "attn_logit_softcapping": None,
                               "final_logit_softcapping": None, "n_inner": None, "resid_pdrop": 0.1,
                               "embd_pdrop": 0.1, "attn_pdrop": 0.1, "head_dim": None}
#: what GPT-2 must say for keras-hub's GPT2Backbone to compute the same thing.
GPT2_REQUIRED = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False}


def _rope_params(hf: dict) -> dict:
    rp = hf.get("rope_parameters")
    if isinstance(rp, dict):
        return rp
    out = {"rope_type": "default", "rope_theta": hf.get("rope_theta", 10000.0)}
    if isinstance(hf.get("rope_scaling"), dict):
        out.update(hf["rope_scaling"])
        out["rope_type"] = out.get("rope_type") or out.get("type") or "default"
    return out


def _inv_rope(fam: Family, hf: dict, kh: dict) -> None:
    rp = _rope_params(hf)
    kh["rope_max_wavelength"] = float(rp.get("rope_theta", 10000.0))
    kind = rp.get("rope_type", "default")
    if fam.rope_factor_arg:  # keras-hub's defaults, written as save_to_preset writes them
        kh[fam.rope_factor_arg] = 1.0
    if fam.backbone == "Llama3Backbone":
        kh.update(dict.fromkeys(("rope_frequency_adjustment_factor", "rope_low_freq_factor", "rope_high_freq_factor",
                                 "rope_pretraining_sequence_length")))
    if kind == "linear" and fam.rope_factor_arg:
        kh[fam.rope_factor_arg] = float(rp["factor"])
    elif kind == "llama3" and fam.backbone == "Llama3Backbone":
        kh.update(rope_frequency_adjustment_factor=float(rp["factor"]),
                  rope_low_freq_factor=float(rp["low_freq_factor"]),
                  rope_high_freq_factor=float(rp["high_freq_factor"]),
                  rope_pretraining_sequence_length=int(rp["original_max_position_embeddings"]))
    elif kind != "default":
        raise Unrepresentable(f"rope_type {kind!r}: {fam.backbone} has no such rope scaling")


def _inv_rope_fixed(fam: Family, hf: dict, kh: dict, theta: float) -> None:
    rp = _rope_params(hf)
    if rp.get("rope_type", "default") != "default" or float(rp.get("rope_theta", theta)) != theta:
        raise Unrepresentable(f"rope_parameters {rp}: {fam.backbone} uses rope theta {theta} without scaling")


def _factor(rp: dict, theta: float, what: str) -> float:
    if float(rp.get("rope_theta", theta)) != theta or rp.get("rope_type", "default") not in ("default", "linear"):
        raise Unrepresentable(f"{what} rope {rp}: keras-hub Gemma3Backbone uses theta {theta}, linear scaling at most")
    return float(rp.get("factor", 1.0)) if rp.get("rope_type") == "linear" else 1.0


def _inv_rope_gemma3(fam: Family, hf: dict, kh: dict) -> None:
    rp = hf.get("rope_parameters") or {}
    kh["local_rope_scaling_factor"] = _factor(rp.get("sliding_attention", {}), 10000.0, "sliding_attention")
    kh["global_rope_scaling_factor"] = _factor(rp.get("full_attention", {}), 1000000.0, "full_attention")


def _inv_layer_types(fam: Family, hf: dict, kh: dict, kind: str) -> None:
    n = int(hf["num_hidden_layers"])
    types = hf.get("layer_types") or ["full_attention"] * n
    if kind == "qwen3":
        if all(t == "full_attention" for t in types) or not hf.get("use_sliding_window"):
            kh["sliding_window_size"] = None  # keras-hub Qwen3 windows no layer
            return
        if not all(t == "sliding_attention" for t in types):
            raise Unrepresentable(f"layer_types {types}: keras-hub Qwen3 windows every layer or none")
        kh["sliding_window_size"] = hf["sliding_window"]
        return
    for on in (False, True):
        want = ["sliding_attention" if on and (i % 2 == 0 if kind == "gemma2" else i % 6 < 5) else "full_attention"
                for i in range(n)]
        if types == want:
            kh["use_sliding_window_attention"] = on
            kh["sliding_window_size"] = hf.get("sliding_window") or kh.get("sliding_window_size") or 4096
            return
    raise Unrepresentable(f"layer_types {types}: not the pattern keras-hub {fam.backbone} builds")


def _inv_head_dim(fam: Family, hf: dict, kh: dict) -> None:
    default = hf["hidden_size"] // hf["num_attention_heads"]
    hd = hf.get("head_dim") or default
    if fam.head_dim_arg:
        kh["head_dim"] = hd
    elif hd != default:
        raise Unrepresentable(f"head_dim={hd} != hidden_size // num_attention_heads: {fam.backbone} has no head_dim")


def _set(kh: dict, key: str, value: Any, hf_key: str) -> None:
    if key in kh and kh[key] != value:
        raise Unrepresentable(f"{hf_key}={value!r} differs from another setting keras-hub keeps as one {key}")
    kh[key] = value


def to_kerashub(fam: Family, hf: dict) -> dict:
    """The keras-hub backbone constructor arguments for the transformers config ``hf``."""
    kh: dict[str, Any] = dict(fam.kh_fixed)
    for key, allowed in {**fam.require, **fam.when}.items():
        kh[key] = allowed[0]
    if fam.backbone == "GPT2Backbone":
        bad = [f"{k}={hf[k]!r}" for k, v in GPT2_REQUIRED.items() if k in hf and hf[k] != v]
        if bad:
            raise Unrepresentable(f"{', '.join(bad)}: keras-hub GPT2Backbone cannot represent it")
    used = set(HF_HARMLESS) | set(GPT2_REQUIRED)
    for key, rule in fam.config.items():
        used.add(key)
        value = hf.get(key, HF_DEFAULTS.get(key))
        if isinstance(rule, str) and rule.startswith("="):
            if key == "n_inner" and value is None:
                value = 4 * hf["n_embd"]
            if value is None and key not in HF_DEFAULTS:
                raise Unrepresentable(f"config.json has no {key}")
            _set(kh, rule[1:], value, key)
        elif isinstance(rule, tuple):
            _inverse(fam, rule, hf, kh, key, value)
        elif key in hf and hf[key] != rule:
            raise Unrepresentable(f"{key}={hf[key]!r}: keras-hub {fam.backbone} computes as {key}={rule!r}")
    left = sorted(k for k in hf if k not in used)
    if left:
        raise Unrepresentable(f"setting(s) keras-hub {fam.backbone} has no counterpart for in tietool's table: "
                              + bounded(f"{k}={hf[k]!r}" for k in left))
    return kh


def _inverse(fam: Family, rule: tuple, hf: dict, kh: dict, key: str, value: Any) -> None:
    name = rule[0]
    if name == "head_dim":
        _inv_head_dim(fam, hf, kh)
    elif name == "half":
        _set(kh, rule[1], 2 * value, key)
    elif name == "rope":
        _inv_rope(fam, hf, kh)
    elif name == "rope_fixed":
        _inv_rope_fixed(fam, hf, kh, rule[1])
    elif name == "rope_gemma3":
        _inv_rope_gemma3(fam, hf, kh)
    elif name == "layer_types":
        _inv_layer_types(fam, hf, kh, rule[1])
    elif name == "truthy":
        pass  # qwen3's use_sliding_window: read with its layer_types
    else:
        raise ValueError(f"no inverse for {name}")
