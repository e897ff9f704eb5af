"""keras-hub backbones <-> transformers 5 classes, as data: one :class:`Family` per target class.

Weights (``WEIGHTS``): ``(transformers name, op, keras-hub variable(s))``. keras-hub names are the
dataset paths of the preset's ``model.weights.h5`` below ``layers/``: ``/x`` is the backbone's
layer ``x``; ``x`` alone is under the family's decoder block group (``layers/<block>`` for layer 0,
``layers/<block>_<i>`` for layer i). ``{i}`` in a transformers name is the layer index. Ops (what
the bytes do; :mod:`.plan` turns them into plan transforms):

* ``same``: bytes and shape as stored; ``flat``: bytes as stored, 1-D; ``rows``: bytes as stored,
  2-D ``[prod(shape[:-1]), shape[-1]]`` (GPT-2's attention output kernel ``[heads, head_dim,
  hidden]`` is its Conv1D ``c_proj.weight [hidden_in, hidden]``);
* ``T``: the kernel viewed 2-D with its first axis as rows (``[hidden, heads, head_dim]`` ->
  ``[hidden, heads*head_dim]``), transposed (``nn.Linear`` stores ``[out, in]``); ``Tl``: viewed
  with its last axis as columns (``[heads, head_dim, hidden]`` -> ``[heads*head_dim, hidden]``),
  transposed; ``heads_T``: ``[heads, hidden, head_dim]`` (Gemma) transposed per head ->
  ``[heads*head_dim, hidden]``;
* ``cat_cols``: kernels viewed as ``T`` does, side by side (GPT-2's fused ``c_attn.weight``);
  ``cat``: flattened, one after the other (``c_attn.bias``).

``op:dims`` gives the keras-hub shape where it is not the transformers one moved back (the way back,
``--names keras-hub``): ``h`` hidden, ``q`` query heads, ``k`` key/value heads, ``d`` head_dim.

The head (``HEAD``) is written only when the preset stores one: keras-hub keeps an untied head as
the ``ReversibleEmbedding``'s ``reverse_embeddings`` (``vars/1``, ``[hidden, vocab]``); a tied
model stores none, and transformers ties ``lm_head.weight`` to the embedding on load.

Config (``CONFIG``): transformers key -> rule. ``"=k"``: the keras-hub config's ``k``; any other
value is a constant; a tuple names a derived value (:mod:`.hfconfig`). ``IGNORE``: settings that
do not change this class's computation. ``REQUIRE``: keras-hub
settings the class can only represent with these values (anything else is exit 2 naming it).
``WHEN``: the settings that choose this class among those of one backbone (GemmaBackbone is
transformers' Gemma or Gemma 2).

``tools/kerashub_hf_tables.py`` checks every weight row against keras-hub's own importer
(``keras_hub/src/utils/transformers/convert_*.py``), element by element.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Family:
    name: str  # tietool's name for the family (and the fixture folder)
    backbone: str  # keras-hub backbone class
    model_type: str
    architecture: str  # the transformers class written in ``architectures``
    block: str  # the decoder block's H5 group name (layer 0)
    weights: tuple[tuple[str, str, tuple[str, ...]], ...]
    head: tuple[str, str, tuple[str, ...]] | None
    config: dict[str, Any]
    require: dict[str, tuple] = field(default_factory=dict)
    when: dict[str, tuple] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()  # settings that do not change this class's computation
    prefix: str = "model."  # the base model's prefix in the CausalLM's names
    module: str = ""  # the keras-hub module of the backbone class (config.json on the way back)
    head_dim_arg: bool = False  # the backbone takes head_dim (else it is hidden_dim // num_query_heads)
    rope_factor_arg: str | None = None  # the backbone's linear rope scaling argument
    tie: str = "tied"  # the backbone's head: "tied" always, "untied" always, "arg" its tie_word_embeddings
    kh_fixed: dict[str, Any] = field(default_factory=dict)  # keras-hub arguments the way back sets as they are
    tokenizer: str | None = None  # the keras-hub tokenizer class (its module: the backbone's)


def _w(hf: str, op: str, *kh: str) -> tuple[str, str, tuple[str, ...]]:
    return hf, op, kh


# -- the decoder blocks the Llama-like families share --------------------------------------

_LLAMA_BLOCK = (
    _w("model.layers.{i}.input_layernorm.weight", "same", "_self_attention_layernorm/vars/0"),
    _w("model.layers.{i}.post_attention_layernorm.weight", "same", "_feedforward_layernorm/vars/0"),
    _w("model.layers.{i}.self_attn.q_proj.weight", "T:h,q,d", "_self_attention_layer/_query_dense/vars/0"),
    _w("model.layers.{i}.self_attn.k_proj.weight", "T:h,k,d", "_self_attention_layer/_key_dense/vars/0"),
    _w("model.layers.{i}.self_attn.v_proj.weight", "T:h,k,d", "_self_attention_layer/_value_dense/vars/0"),
    _w("model.layers.{i}.self_attn.o_proj.weight", "Tl:q,d,h", "_self_attention_layer/_output_dense/vars/0"),
    _w("model.layers.{i}.mlp.gate_proj.weight", "T", "_feedforward_gate_dense/vars/0"),
    _w("model.layers.{i}.mlp.up_proj.weight", "T", "_feedforward_intermediate_dense/vars/0"),
    _w("model.layers.{i}.mlp.down_proj.weight", "T", "_feedforward_output_dense/vars/0"),
)
_QKV_BIAS = (
    _w("model.layers.{i}.self_attn.q_proj.bias", "flat:q,d", "_self_attention_layer/_query_dense/vars/1"),
    _w("model.layers.{i}.self_attn.k_proj.bias", "flat:k,d", "_self_attention_layer/_key_dense/vars/1"),
    _w("model.layers.{i}.self_attn.v_proj.bias", "flat:k,d", "_self_attention_layer/_value_dense/vars/1"),
)
_QK_NORM_QWEN3 = (
    _w("model.layers.{i}.self_attn.q_norm.weight", "same", "_self_attention_layer/_query_dense_layer_norm/vars/0"),
    _w("model.layers.{i}.self_attn.k_norm.weight", "same", "_self_attention_layer/_key_dense_layer_norm/vars/0"),
)
_EMBED = _w("model.embed_tokens.weight", "same", "/reversible_embedding/vars/0")
_HEAD = _w("lm_head.weight", "T", "/reversible_embedding/vars/1")

_GEMMA_ATTN = (
    _w("model.layers.{i}.self_attn.q_proj.weight", "heads_T:q,h,d", "attention/query_dense/vars/0"),
    _w("model.layers.{i}.self_attn.k_proj.weight", "heads_T:k,h,d", "attention/key_dense/vars/0"),
    _w("model.layers.{i}.self_attn.v_proj.weight", "heads_T:k,h,d", "attention/value_dense/vars/0"),
    _w("model.layers.{i}.self_attn.o_proj.weight", "Tl:q,d,h", "attention/output_dense/vars/0"),
    _w("model.layers.{i}.mlp.gate_proj.weight", "T", "gating_ffw/vars/0"),
    _w("model.layers.{i}.mlp.up_proj.weight", "T", "gating_ffw_2/vars/0"),
    _w("model.layers.{i}.mlp.down_proj.weight", "T", "ffw_linear/vars/0"),
    _w("model.norm.weight", "same", "/rms_normalization/vars/0"),
    _EMBED,
)
_GEMMA2_NORMS = (
    _w("model.layers.{i}.input_layernorm.weight", "same", "pre_attention_norm/vars/0"),
    _w("model.layers.{i}.post_attention_layernorm.weight", "same", "post_attention_norm/vars/0"),
    _w("model.layers.{i}.pre_feedforward_layernorm.weight", "same", "pre_ffw_norm/vars/0"),
    _w("model.layers.{i}.post_feedforward_layernorm.weight", "same", "post_ffw_norm/vars/0"),
)

# -- config rules the families share --------------------------------------------------------

_SIZES = {
    "vocab_size": "=vocabulary_size", "hidden_size": "=hidden_dim", "intermediate_size": "=intermediate_dim",
    "num_hidden_layers": "=num_layers", "num_attention_heads": "=num_query_heads",
    "num_key_value_heads": "=num_key_value_heads", "rms_norm_eps": "=layer_norm_epsilon",
}
_LLAMA_LIKE = {**_SIZES, "head_dim": ("head_dim",), "hidden_act": "silu", "attention_dropout": "=dropout",
               "rope_parameters": ("rope",)}
_GEMMA_LIKE = {**_SIZES, "head_dim": "=head_dim", "intermediate_size": ("half", "intermediate_dim"),
               "hidden_activation": "gelu_pytorch_tanh", "attention_dropout": "=dropout", "attention_bias": False,
               "rope_parameters": ("rope_fixed", 10000.0)}

#: keras-hub 0.32's Gemma and Gemma 3 decoder blocks build their attention with
#: ``query_head_dim_normalize=True`` whatever the backbone says (gemma_decoder_block.py,
#: gemma3_decoder_block.py): queries are always scaled by head_dim ** -0.5, so the setting changes
#: nothing keras-hub computes, and ``query_pre_attn_scalar`` is ``head_dim``.
_GEMMA_IGNORED = ("query_head_dim_normalize",)

FAMILIES: tuple[Family, ...] = (
    Family(
        name="gpt2", tokenizer="GPT2Tokenizer",
        backbone="GPT2Backbone", model_type="gpt2", architecture="GPT2LMHeadModel",
        block="transformer_decoder", prefix="transformer.", module="keras_hub.src.models.gpt2.gpt2_backbone",
        weights=(
            _w("transformer.wte.weight", "same", "/reversible_embedding/vars/0"),
            _w("transformer.wpe.weight", "same", "/position_embedding/vars/0"),
            _w("transformer.ln_f.weight", "same", "/layer_normalization/vars/0"),
            _w("transformer.ln_f.bias", "same", "/layer_normalization/vars/1"),
            _w("transformer.h.{i}.ln_1.weight", "same", "_self_attention_layer_norm/vars/0"),
            _w("transformer.h.{i}.ln_1.bias", "same", "_self_attention_layer_norm/vars/1"),
            _w("transformer.h.{i}.ln_2.weight", "same", "_feedforward_layer_norm/vars/0"),
            _w("transformer.h.{i}.ln_2.bias", "same", "_feedforward_layer_norm/vars/1"),
            _w("transformer.h.{i}.attn.c_attn.weight", "cat_cols:h,q,d", "_self_attention_layer/query_dense/vars/0",
               "_self_attention_layer/key_dense/vars/0", "_self_attention_layer/value_dense/vars/0"),
            _w("transformer.h.{i}.attn.c_attn.bias", "cat:q,d", "_self_attention_layer/query_dense/vars/1",
               "_self_attention_layer/key_dense/vars/1", "_self_attention_layer/value_dense/vars/1"),
            _w("transformer.h.{i}.attn.c_proj.weight", "rows:q,d,h", "_self_attention_layer/output_dense/vars/0"),
            _w("transformer.h.{i}.attn.c_proj.bias", "same", "_self_attention_layer/output_dense/vars/1"),
            _w("transformer.h.{i}.mlp.c_fc.weight", "same", "_feedforward_intermediate_dense/vars/0"),
            _w("transformer.h.{i}.mlp.c_fc.bias", "same", "_feedforward_intermediate_dense/vars/1"),
            _w("transformer.h.{i}.mlp.c_proj.weight", "same", "_feedforward_output_dense/vars/0"),
            _w("transformer.h.{i}.mlp.c_proj.bias", "same", "_feedforward_output_dense/vars/1"),
        ),
        head=None,  # GPT2Backbone's embedding is always tied
        config={"vocab_size": "=vocabulary_size", "n_embd": "=hidden_dim", "n_layer": "=num_layers",
                "n_head": "=num_heads", "n_inner": "=intermediate_dim", "n_positions": "=max_sequence_length",
                "resid_pdrop": "=dropout", "embd_pdrop": "=dropout", "attn_pdrop": "=dropout",
                "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"},
    ),
    Family(
        name="llama3", tokenizer="Llama3Tokenizer",
        backbone="Llama3Backbone", model_type="llama", architecture="LlamaForCausalLM",
        block="llama_transformer_decoder", module="keras_hub.src.models.llama3.llama3_backbone",
        rope_factor_arg="rope_position_scaling_factor", tie="arg",
        weights=(_EMBED, _w("model.norm.weight", "same", "/llama_layer_norm/vars/0"), *_LLAMA_BLOCK),
        head=_HEAD,
        config={**_LLAMA_LIKE, "attention_bias": False, "mlp_bias": False},
    ),
    Family(
        name="mistral", tokenizer="MistralTokenizer",
        backbone="MistralBackbone", model_type="mistral", architecture="MistralForCausalLM",
        block="mistral_transformer_decoder", module="keras_hub.src.models.mistral.mistral_backbone",
        head_dim_arg=True, rope_factor_arg="rope_scaling_factor", tie="untied",
        weights=(_EMBED, _w("model.norm.weight", "same", "/mistral_layer_normalization/vars/0"), *_LLAMA_BLOCK),
        head=_HEAD,
        config={**_LLAMA_LIKE, "sliding_window": "=sliding_window"},
    ),
    Family(
        name="qwen2", tokenizer="QwenTokenizer",
        backbone="QwenBackbone", model_type="qwen2", architecture="Qwen2ForCausalLM",
        block="qwen_transformer_decoder", module="keras_hub.src.models.qwen.qwen_backbone",
        rope_factor_arg="rope_scaling_factor", tie="arg",
        weights=(_EMBED, _w("model.norm.weight", "same", "/qwen_layer_norm/vars/0"), *_LLAMA_BLOCK, *_QKV_BIAS),
        head=_HEAD,
        config={**_LLAMA_LIKE, "use_sliding_window": False},
        require={"use_sliding_window_attention": (False,)},
        ignore=("sliding_window_size",),  # no window (use_sliding_window_attention is False)
    ),
    Family(
        name="qwen3", tokenizer="Qwen3Tokenizer",
        backbone="Qwen3Backbone", model_type="qwen3", architecture="Qwen3ForCausalLM",
        block="qwen3_transformer_decoder", module="keras_hub.src.models.qwen3.qwen3_backbone",
        head_dim_arg=True, rope_factor_arg="rope_scaling_factor", tie="arg",
        weights=(_EMBED, _w("model.norm.weight", "same", "/qwen3_layer_norm/vars/0"), *_LLAMA_BLOCK,
                 *_QK_NORM_QWEN3),
        head=_HEAD,
        config={**_LLAMA_LIKE, "attention_bias": False, "use_sliding_window": ("truthy", "sliding_window_size"),
                "sliding_window": "=sliding_window_size",
                "layer_types": ("layer_types", "qwen3")},
    ),
    Family(
        name="gemma", tokenizer="GemmaTokenizer",
        backbone="GemmaBackbone", model_type="gemma", architecture="GemmaForCausalLM",
        block="gemma_decoder_block", module="keras_hub.src.models.gemma.gemma_backbone",
        weights=(*_GEMMA_ATTN,
                 _w("model.layers.{i}.input_layernorm.weight", "same", "pre_attention_norm/vars/0"),
                 _w("model.layers.{i}.post_attention_layernorm.weight", "same", "pre_ffw_norm/vars/0")),
        head=None,  # GemmaBackbone's embedding is always tied
        config={**{k: v for k, v in _GEMMA_LIKE.items() if k != "hidden_activation"},
                "hidden_act": "gelu_pytorch_tanh"},  # GemmaConfig's name for it
        when={"use_post_ffw_norm": (False,), "use_post_attention_norm": (False,)},
        require={"attention_logit_soft_cap": (None,), "final_logit_soft_cap": (None,),
                 "use_sliding_window_attention": (False,)},
        ignore=("sliding_window_size", "query_head_dim_normalize"),  # no window; see _GEMMA_IGNORED
    ),
    Family(
        name="gemma2", tokenizer="GemmaTokenizer",
        backbone="GemmaBackbone", model_type="gemma2", architecture="Gemma2ForCausalLM",
        block="gemma_decoder_block", module="keras_hub.src.models.gemma.gemma_backbone",
        weights=(*_GEMMA_ATTN, *_GEMMA2_NORMS),
        head=None,
        config={**_GEMMA_LIKE, "query_pre_attn_scalar": "=head_dim",
                "attn_logit_softcapping": "=attention_logit_soft_cap",
                "final_logit_softcapping": "=final_logit_soft_cap",
                "sliding_window": "=sliding_window_size", "layer_types": ("layer_types", "gemma2")},
        when={"use_post_ffw_norm": (True,), "use_post_attention_norm": (True,)},
        ignore=_GEMMA_IGNORED,
    ),
    Family(
        name="gemma3", tokenizer="Gemma3Tokenizer",
        backbone="Gemma3Backbone", model_type="gemma3_text", architecture="Gemma3ForCausalLM",
        block="gemma3_decoder_block", module="keras_hub.src.models.gemma3.gemma3_backbone",
        weights=(*_GEMMA_ATTN, *_GEMMA2_NORMS,
                 _w("model.layers.{i}.self_attn.q_norm.weight", "same", "attention/query_norm/vars/0"),
                 _w("model.layers.{i}.self_attn.k_norm.weight", "same", "attention/key_norm/vars/0")),
        head=None,
        config={**_GEMMA_LIKE, "intermediate_size": "=intermediate_dim", "query_pre_attn_scalar": "=head_dim",
                "attn_logit_softcapping": "=attention_logit_soft_cap",
                "final_logit_softcapping": "=final_logit_soft_cap",
                "sliding_window": "=sliding_window_size", "layer_types": ("layer_types", "gemma3"),
                "rope_parameters": ("rope_gemma3",), "use_bidirectional_attention": False},
        require={"use_query_key_norm": (True,), "use_post_ffw_norm": (True,), "use_post_attention_norm": (True,),
                 "vision_encoder": (None,), "use_bidirectional_attention": (False,),
                 "is_embedding_model": (False,), "pooling_intermediate_dim": (None,), "embedding_dim": (None,)},
        ignore=("image_size", *_GEMMA_IGNORED),  # image_size: the vision encoder's (there is none)
        kh_fixed={"image_size": 896},  # required by the constructor, used by the vision encoder only
    ),
)


def candidates(backbone: str) -> list[Family]:
    return [f for f in FAMILIES if f.backbone == backbone]


def backbones() -> list[str]:
    return sorted({f.backbone for f in FAMILIES})


def by_model_type(model_type: str) -> list[Family]:
    return [f for f in FAMILIES if f.model_type == model_type]
