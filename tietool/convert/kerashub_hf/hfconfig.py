"""A keras-hub backbone config -> the transformers 5 ``config.json`` of a :class:`~.families.Family`.

Every keras-hub setting is accounted for: used by a rule of the family's ``CONFIG``, checked by
its ``REQUIRE``/``WHEN``, or one of :data:`HARMLESS` (the layer name, trainability, dtype policy,
read separately). A setting no rule reads is an error naming it (exit 2): a model transformers
would build differently is never written silently.
"""

from __future__ import annotations

from typing import Any, Callable

from tietool.errors import ConversionError
from tietool.textsafe import bounded

from .families import Family

#: keras-hub config keys that do not change the computation (or are read elsewhere).
HARMLESS = ("name", "trainable", "dtype", "tie_word_embeddings")  # the tie: checked against the weights


class Unrepresentable(ConversionError):
    """A keras-hub setting the transformers class cannot represent."""


def _head_dim(cfg: dict) -> tuple[Any, tuple[str, ...]]:
    hd = cfg.get("head_dim")
    if hd is None:
        return cfg["hidden_dim"] // cfg["num_query_heads"], ("head_dim", "hidden_dim", "num_query_heads")
    return hd, ("head_dim",)


def _half(cfg: dict, key: str) -> tuple[Any, tuple[str, ...]]:
    if cfg[key] % 2:
        raise Unrepresentable(f"{key}={cfg[key]} is odd: keras-hub's gate and up kernels are half of it each")
    return cfg[key] // 2, (key,)


def _rope(cfg: dict) -> tuple[Any, tuple[str, ...]]:
    theta = float(cfg.get("rope_max_wavelength", 10000.0))
    keys = ["rope_max_wavelength"]
    linear = None
    for k in ("rope_scaling_factor", "rope_position_scaling_factor"):
        if k in cfg:
            keys.append(k)
            if cfg[k] not in (None, 1, 1.0):
                linear = float(cfg[k])
    llama3 = ("rope_frequency_adjustment_factor", "rope_low_freq_factor", "rope_high_freq_factor",
              "rope_pretraining_sequence_length")
    keys += [k for k in llama3 if k in cfg]
    if cfg.get("rope_frequency_adjustment_factor") is not None:
        if linear is not None:
            raise Unrepresentable("rope_position_scaling_factor together with rope_frequency_adjustment_factor: "
                                  "transformers' rope_parameters take one scaling")
        return {"rope_type": "llama3", "rope_theta": theta, "factor": float(cfg["rope_frequency_adjustment_factor"]),
                "low_freq_factor": float(cfg["rope_low_freq_factor"]),
                "high_freq_factor": float(cfg["rope_high_freq_factor"]),
                "original_max_position_embeddings": int(cfg["rope_pretraining_sequence_length"])}, tuple(keys)
    if linear is not None:
        return {"rope_type": "linear", "rope_theta": theta, "factor": linear}, tuple(keys)
    return {"rope_type": "default", "rope_theta": theta}, tuple(keys)


def _rope_fixed(_cfg: dict, theta: float) -> tuple[Any, tuple[str, ...]]:
    return {"rope_type": "default", "rope_theta": theta}, ()


def _scaled(theta: float, factor: Any) -> dict:
    if factor in (None, 1, 1.0):
        return {"rope_type": "default", "rope_theta": theta}
    return {"rope_type": "linear", "rope_theta": theta, "factor": float(factor)}


def _rope_gemma3(cfg: dict) -> tuple[Any, tuple[str, ...]]:
    # keras-hub Gemma3Backbone: 10k for local (sliding) layers, 1M for global ones
    return ({"sliding_attention": _scaled(10000.0, cfg.get("local_rope_scaling_factor")),
             "full_attention": _scaled(1000000.0, cfg.get("global_rope_scaling_factor"))},
            ("local_rope_scaling_factor", "global_rope_scaling_factor"))


def _layer_types(cfg: dict, kind: str) -> tuple[Any, tuple[str, ...]]:
    n = cfg["num_layers"]
    if kind == "qwen3":  # keras-hub Qwen3 windows every layer when sliding_window_size is set
        sliding = [bool(cfg.get("sliding_window_size"))] * n
        keys: tuple[str, ...] = ("sliding_window_size",)
    else:
        on = bool(cfg.get("use_sliding_window_attention"))
        # keras-hub GemmaBackbone: even layers; Gemma3Backbone: 5 local then 1 global
        sliding = [on and (i % 2 == 0 if kind == "gemma2" else i % 6 < 5) for i in range(n)]
        keys = ("use_sliding_window_attention",)
    return ["sliding_attention" if s else "full_attention" for s in sliding], keys


def _truthy(cfg: dict, key: str) -> tuple[Any, tuple[str, ...]]:
    return bool(cfg.get(key)), (key,)


DERIVED: dict[str, Callable[..., tuple[Any, tuple[str, ...]]]] = {
    "head_dim": _head_dim, "half": _half, "rope": _rope, "rope_fixed": _rope_fixed, "rope_gemma3": _rope_gemma3,
"layer_types": _layer_types, "truthy": _truthy,
}


def mismatches(family: Family, cfg: dict, rules: dict[str, tuple]) -> list[str]:
    """``key=value`` of the settings outside what ``rules`` allows (absent keys pass)."""
    return [f"{k}={cfg[k]!r}" for k, allowed in rules.items() if k in cfg and cfg[k] not in allowed]


def translate(family: Family, cfg: dict, *, tie: bool, dtype: str | None) -> dict:
    """The transformers config of ``family`` for the keras-hub backbone config ``cfg``."""
    bad = mismatches(family, cfg, family.require)
    if bad:
        raise Unrepresentable(f"{family.architecture} cannot represent keras-hub setting(s) {', '.join(bad)}")
    out: dict[str, Any] = {"architectures": [family.architecture], "model_type": family.model_type}
    used: set[str] = set(HARMLESS) | set(family.require) | set(family.when) | set(family.ignore)
    for key, rule in family.config.items():
        if isinstance(rule, str) and rule.startswith("="):
            src = rule[1:]
            if src not in cfg:
                raise Unrepresentable(f"the keras-hub config has no {src!r} (needed for {key})")
            out[key] = cfg[src]
            used.add(src)
        elif isinstance(rule, tuple):
            value, keys = DERIVED[rule[0]](cfg, *rule[1:])
            out[key] = value
            used.update(keys)
        else:
            out[key] = rule
    left = sorted(set(cfg) - used)
    if left:
        raise Unrepresentable(f"keras-hub setting(s) with no {family.architecture} counterpart in tietool's table: "
                              + bounded(f"{k}={cfg[k]!r}" for k in left))
    out["tie_word_embeddings"] = tie
    if dtype is not None:
        out["dtype"] = dtype
    return out
