"""``tietool convert PRESET --names pt``: keras-hub presets (fixtures/kerashub_hf, written by
keras-hub 0.32 itself) to transformers 5 folders, checked here without torch:

* every written tensor equals, bit for bit, the keras-hub weights moved by numpy the way
  keras-hub's own importer moves them back (an implementation independent of tietool's writer);
* config.json field by field; the tie as the weights say (no head tensor when tied, ``lm_head``
  from ``reverse_embeddings`` when not), proven by ``verify-tie``;
* settings transformers cannot represent, and weights the table has no place for: exit 2 naming
  them, nothing written.

Loading in transformers 5 and the logits: tests/interop/test_kerashub_hf_pt.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.helpers import one_error_line, run_cli
from tietool.convert import convert_to_pt

KHHF = Path(__file__).resolve().parent.parent / "fixtures" / "kerashub_hf"
MANIFEST = json.loads((KHHF / "MANIFEST.json").read_text())
FAMILIES = sorted(MANIFEST["families"])


def h5_weights(preset: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(preset / "model.weights.h5", "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def block(prefix: str, i: int) -> str:
    return f"layers/{prefix}" + (f"_{i}" if i else "")


def expected(family: str, w: dict[str, np.ndarray], layers: int) -> dict[str, np.ndarray]:
    """The transformers tensors, by numpy, the inverse of keras-hub's convert_<family>.py hooks."""
    out: dict[str, np.ndarray] = {}
    if family == "gpt2":
        out.update({"transformer.wte.weight": w["layers/reversible_embedding/vars/0"],
                    "transformer.wpe.weight": w["layers/position_embedding/vars/0"],
                    "transformer.ln_f.weight": w["layers/layer_normalization/vars/0"],
                    "transformer.ln_f.bias": w["layers/layer_normalization/vars/1"]})
        for i in range(layers):
            b, p = block("transformer_decoder", i), f"transformer.h.{i}."
            att = b + "/_self_attention_layer/"
            h = w[att + "query_dense/vars/0"].shape[0]
            out[p + "attn.c_attn.weight"] = np.concatenate(
                [w[att + f"{k}_dense/vars/0"].reshape(h, -1) for k in ("query", "key", "value")], axis=1)
            out[p + "attn.c_attn.bias"] = np.concatenate(
                [w[att + f"{k}_dense/vars/1"].reshape(-1) for k in ("query", "key", "value")])
            out[p + "attn.c_proj.weight"] = w[att + "output_dense/vars/0"].reshape(-1, h)
            out[p + "attn.c_proj.bias"] = w[att + "output_dense/vars/1"]
            for hf, kh in (("ln_1", "_self_attention_layer_norm"), ("ln_2", "_feedforward_layer_norm")):
                out[p + hf + ".weight"], out[p + hf + ".bias"] = w[f"{b}/{kh}/vars/0"], w[f"{b}/{kh}/vars/1"]
            for hf, kh in (("c_fc", "_feedforward_intermediate_dense"), ("c_proj", "_feedforward_output_dense")):
                out[p + f"mlp.{hf}.weight"], out[p + f"mlp.{hf}.bias"] = w[f"{b}/{kh}/vars/0"], w[f"{b}/{kh}/vars/1"]
        return out
    out["model.embed_tokens.weight"] = w["layers/reversible_embedding/vars/0"]
    if "layers/reversible_embedding/vars/1" in w:
        out["lm_head.weight"] = w["layers/reversible_embedding/vars/1"].T
    gemma = family.startswith("gemma")
    final = {"gemma": "rms_normalization", "llama3": "llama_layer_norm", "mistral": "mistral_layer_normalization",
             "qwen2": "qwen_layer_norm", "qwen3": "qwen3_layer_norm"}
    out["model.norm.weight"] = w[f"layers/{final[family.split('_')[0] if not gemma else 'gemma']}/vars/0"]
    for i in range(layers):
        p = f"model.layers.{i}."
        if gemma:
            b = block({"gemma3": "gemma3_decoder_block"}.get(family, "gemma_decoder_block"), i)
            for k in ("q", "k", "v"):  # keras-hub [heads, hidden, head_dim]: transpose(0, 2, 1), reshape
                kern = w[f"{b}/attention/{ {'q': 'query', 'k': 'key', 'v': 'value'}[k]}_dense/vars/0"]
                out[p + f"self_attn.{k}_proj.weight"] = kern.transpose(0, 2, 1).reshape(-1, kern.shape[1])
            o = w[f"{b}/attention/output_dense/vars/0"]
            out[p + "self_attn.o_proj.weight"] = o.reshape(-1, o.shape[-1]).T
            out[p + "mlp.gate_proj.weight"] = w[f"{b}/gating_ffw/vars/0"].T
            out[p + "mlp.up_proj.weight"] = w[f"{b}/gating_ffw_2/vars/0"].T
            out[p + "mlp.down_proj.weight"] = w[f"{b}/ffw_linear/vars/0"].T
            norms = ({"input_layernorm": "pre_attention_norm", "post_attention_layernorm": "pre_ffw_norm"}
                     if family == "gemma" else
                     {"input_layernorm": "pre_attention_norm", "post_attention_layernorm": "post_attention_norm",
                      "pre_feedforward_layernorm": "pre_ffw_norm", "post_feedforward_layernorm": "post_ffw_norm"})
            if family == "gemma3":
                norms.update({"self_attn.q_norm": "attention/query_norm", "self_attn.k_norm": "attention/key_norm"})
            for hf, kh in norms.items():
                out[p + hf + ".weight"] = w[f"{b}/{kh}/vars/0"]
            continue
        b = block({"llama3": "llama_transformer_decoder", "mistral": "mistral_transformer_decoder",
                   "qwen2": "qwen_transformer_decoder", "qwen3": "qwen3_transformer_decoder"}[family.split("_")[0]], i)
        att = b + "/_self_attention_layer/"
        for k in ("query", "key", "value"):  # keras-hub [hidden, heads, head_dim] -> [heads*head_dim, hidden]
            kern = w[att + f"_{k}_dense/vars/0"]
            out[p + f"self_attn.{k[0]}_proj.weight"] = kern.reshape(kern.shape[0], -1).T
            if att + f"_{k}_dense/vars/1" in w:
                out[p + f"self_attn.{k[0]}_proj.bias"] = w[att + f"_{k}_dense/vars/1"].reshape(-1)
        o = w[att + "_output_dense/vars/0"]
        out[p + "self_attn.o_proj.weight"] = o.reshape(-1, o.shape[-1]).T
        for hf, kh in (("gate_proj", "_feedforward_gate_dense"), ("up_proj", "_feedforward_intermediate_dense"),
                       ("down_proj", "_feedforward_output_dense")):
            out[p + f"mlp.{hf}.weight"] = w[f"{b}/{kh}/vars/0"].T
        out[p + "input_layernorm.weight"] = w[b + "/_self_attention_layernorm/vars/0"]
        out[p + "post_attention_layernorm.weight"] = w[b + "/_feedforward_layernorm/vars/0"]
        if family == "qwen3":
            out[p + "self_attn.q_norm.weight"] = w[att + "_query_dense_layer_norm/vars/0"]
            out[p + "self_attn.k_norm.weight"] = w[att + "_key_dense_layer_norm/vars/0"]
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("khhf")
    out = {}
    for fam in FAMILIES:
        convert_to_pt(KHHF / fam / "preset", tmp / fam)
        out[fam] = tmp / fam
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_every_tensor_is_keras_hub_moved_by_numpy(exported, family):
    args = MANIFEST["families"][family]["arguments"]
    got = raw_safetensors(exported[family] / "model.safetensors")
    want = expected(family, h5_weights(KHHF / family / "preset"), args["num_layers"])
    assert sorted(got) == sorted(want)
    stored = {"float32": "F32", "bfloat16": "BF16"}[MANIFEST["families"][family]["dtype"]]
    for name, arr in want.items():
        assert got[name][:2] == (stored, arr.shape), name  # bfloat16 kept as stored (Keras' 2-byte opaque)
        assert got[name][2] == np.ascontiguousarray(arr).tobytes(), name


def raw_safetensors(path: Path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """``{name: (dtype, shape, bytes)}`` read from the file's header and data (bfloat16 too)."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    return {k: (v["dtype"], tuple(v["shape"]), data[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in header.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_config_field_by_field(exported, family):
    m = MANIFEST["families"][family]
    a = m["arguments"]
    cfg = json.loads((exported[family] / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is m["tie_weights"]
    assert cfg["dtype"] == m["dtype"]
    if family == "gpt2":
        assert cfg["architectures"] == ["GPT2LMHeadModel"] and cfg["model_type"] == "gpt2"
        assert (cfg["vocab_size"], cfg["n_embd"], cfg["n_layer"], cfg["n_head"], cfg["n_inner"], cfg["n_positions"]) \
            == (37, a["hidden_dim"], a["num_layers"], a["num_heads"], a["intermediate_dim"], a["max_sequence_length"])
        assert cfg["activation_function"] == "gelu_new"
        return
    arch = {"llama3_tied": "LlamaForCausalLM", "llama3_untied": "LlamaForCausalLM", "llama3_bf16": "LlamaForCausalLM",
            "mistral": "MistralForCausalLM",
            "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "gemma": "GemmaForCausalLM",
            "gemma2": "Gemma2ForCausalLM", "gemma3": "Gemma3ForCausalLM"}[family]
    assert cfg["architectures"] == [arch]
    assert cfg["vocab_size"] == a["vocabulary_size"] and cfg["hidden_size"] == a["hidden_dim"]
    assert cfg["num_hidden_layers"] == a["num_layers"]
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (4, 2)
    assert cfg["head_dim"] == a.get("head_dim", a["hidden_dim"] // a["num_query_heads"])
    # keras-hub Gemma 1/2 keep gate and up as halves of intermediate_dim
    assert cfg["intermediate_size"] == (a["intermediate_dim"] // 2 if family in ("gemma", "gemma2") else 40)
    assert cfg["rms_norm_eps"] == a.get("layer_norm_epsilon", 1e-6)
    if family == "gemma2":
        assert cfg["model_type"] == "gemma2"
        assert (cfg["attn_logit_softcapping"], cfg["final_logit_softcapping"]) == (50.0, 30.0)
        assert cfg["sliding_window"] == 4 and cfg["layer_types"] == ["sliding_attention", "full_attention"]
        assert cfg["query_pre_attn_scalar"] == 6  # keras-hub 0.32 scales by head_dim whatever the config says
    if family == "gemma3":
        assert cfg["model_type"] == "gemma3_text"
        assert cfg["layer_types"] == ["sliding_attention"] * 5 + ["full_attention"]
        assert cfg["rope_parameters"]["full_attention"] == {"rope_type": "linear", "rope_theta": 1e6, "factor": 8.0}
    if family.startswith("llama3"):
        assert cfg["rope_parameters"] == {"rope_type": "default", "rope_theta": 5000.0}


@pytest.mark.parametrize("family", ["llama3_tied", "llama3_untied", "gpt2", "gemma2"])
def test_verify_tie_proves_the_tie(exported, family):
    res = run_cli("verify-tie", str(exported[family]), "--json")
    tied = MANIFEST["families"][family]["tie_weights"]
    got = load_file(exported[family] / "model.safetensors")
    assert ("lm_head.weight" in got) is not tied
    report = json.loads(res.stdout)
    assert res.returncode == (0 if tied else 1), res.stdout + res.stderr
    assert report["tied"] is tied
    assert report["config"]["value"] is tied


def _copy(family: str, tmp: Path) -> Path:
    dst = tmp / family
    shutil.copytree(KHHF / family / "preset", dst)
    return dst


def _edit_config(preset: Path, **changes) -> None:
    p = preset / "config.json"
    cfg = json.loads(p.read_text())
    cfg["config"].update(changes)
    p.write_text(json.dumps(cfg))


@pytest.mark.parametrize(("family", "change", "needle"), [
    ("qwen2", {"use_sliding_window_attention": True}, "use_sliding_window_attention=True"),
    ("llama3_tied", {"some_future_setting": 3}, "some_future_setting=3"),
    ("gemma", {"use_post_ffw_norm": True}, "use_post_ffw_norm=True"),
    ("gemma3", {"use_query_key_norm": False}, "use_query_key_norm=False"),
])
def test_unrepresentable_setting_is_exit_2_naming_it(tmp_path, family, change, needle):
    preset = _copy(family, tmp_path)
    _edit_config(preset, **change)
    res = run_cli("convert", str(preset), "--names", "pt", "-o", str(tmp_path / "out"))
    one_error_line(res.returncode, res.stderr, needle)
    assert not (tmp_path / "out").exists()


def test_a_weight_with_no_place_is_exit_2_naming_it(tmp_path):
    preset = _copy("llama3_tied", tmp_path)
    with h5py.File(preset / "model.weights.h5", "a") as f:
        f["layers/llama_transformer_decoder/_self_attention_layer/_query_dense/lora_a"] = np.zeros((16, 2), "f4")
    res = run_cli("convert", str(preset), "--names", "pt", "-o", str(tmp_path / "out"))
    one_error_line(res.returncode, res.stderr, "lora_a")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_files_are_hugging_face_ones(exported, family):
    """tokenizer.json is a Hugging Face tokenizer (a model and its vocabulary), not keras-hub's
    Keras serialization of the same name; the special token ids reach config.json."""
    tok = json.loads((exported[family] / "tokenizer.json").read_text())
    assert "class_name" not in tok and tok["model"]["type"] in ("BPE", "Unigram")
    assert len(tok["model"]["vocab"]) == 37
    tcfg = json.loads((exported[family] / "tokenizer_config.json").read_text())
    cfg = json.loads((exported[family] / "config.json").read_text())
    vocab = tok["model"]["vocab"]
    assert cfg["eos_token_id"] == vocab[tcfg["eos_token"]]
    assert json.loads((exported[family] / "generation_config.json").read_text())["eos_token_id"] == cfg["eos_token_id"]


VALIDATION = json.loads((KHHF / "VALIDATION.json").read_text())


@pytest.mark.parametrize("family", FAMILIES)
def test_tables_are_what_keras_hubs_importers_confirm(family):
    """tools/kerashub_hf_tables.py ran keras-hub's own importer over each export: every
    (transformers name, preset dataset) pair it visits equals bit for bit (Mistral's: after the
    importer's own cast to float16), no variable is left unported, and its pairs are exactly the
    table's. The table as it is now must still give those pairs."""
    from tietool.convert.kerashub_hf import export
    from tietool.formats import open_checkpoint

    r = VALIDATION["families"][family]
    assert r["not_equal"] == [] and r["variables_not_ported"] == []
    assert r["pairs"] == r["tietool_pairs"]
    preset = str(KHHF / family / "preset")
    with open_checkpoint(preset) as ckpt:
        plan = export.plan_export(ckpt, preset, None).plan
        now = sorted([t.name, p] for t in plan.tensors
                     for p in (getattr(t.transform, "names", None) or (t.source.name,)))
    assert now == r["pairs"]


# -- the way back: --names keras-hub ---------------------------------------------------------

@pytest.fixture(scope="module")
def back(exported, tmp_path_factory) -> dict[str, Path]:
    from tietool.convert import convert

    tmp = tmp_path_factory.mktemp("khhf_back")
    for fam in FAMILIES:
        convert(exported[fam], out=tmp / fam, names="keras-hub")
    return {fam: tmp / fam for fam in FAMILIES}


def h5_all(path: Path) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, (o.dtype.str, o.shape, o[()].tobytes()))
                     if isinstance(o, h5py.Dataset) else None)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_preset_round_trip_is_bit_for_bit(back, family):
    """keras-hub -> transformers -> keras-hub: every dataset of model.weights.h5 at its path, with
    its dtype, shape and bytes."""
    assert h5_all(back[family] / "model.weights.h5") == h5_all(KHHF / family / "preset" / "model.weights.h5")


@pytest.mark.parametrize("family", FAMILIES)
def test_preset_config_is_the_keras_hub_config(back, family):
    """The backbone arguments keras-hub saved come back (the ones it leaves out stay out, except
    the tie, which keras-hub needs to reload a tied Llama 3: issue 3098)."""
    want = json.loads((KHHF / family / "preset" / "config.json").read_text())
    got = json.loads((back[family] / "config.json").read_text())
    assert (got["class_name"], got["registered_name"], got["module"]) == (
        want["class_name"], want["registered_name"], want["module"])
    w, g = want["config"], got["config"]
    ignored = {"image_size", "query_head_dim_normalize", "name"}  # not in transformers' config; no effect
    if family in ("gemma", "qwen2"):
        ignored.add("sliding_window_size")  # the window of a model that windows no layer: not in transformers'
    assert {k: v for k, v in g.items() if k not in ignored and k in w} == \
        {k: v for k, v in w.items() if k not in ignored}
    if "tie_word_embeddings" in g:
        assert g["tie_word_embeddings"] is MANIFEST["families"][family]["tie_weights"]


def _hf_copy(exported, family: str, tmp: Path, **changes) -> Path:
    dst = tmp / family
    shutil.copytree(exported[family], dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(changes)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize(("family", "change", "needle"), [
    ("llama3_tied", {"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ("llama3_tied", {"attention_bias": True}, "attention_bias=True"),
    ("llama3_tied", {"head_dim": 8}, "head_dim=8"),
    ("gpt2", {"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx=True"),
    ("gemma2", {"query_pre_attn_scalar": 4}, "query_pre_attn_scalar=4"),
    ("qwen3", {"some_new_setting": 1}, "some_new_setting=1"),
    ("gemma3", {"layer_types": ["full_attention"] * 5 + ["sliding_attention"]}, "layer_types"),
])
def test_way_back_refuses_what_keras_hub_cannot_represent(exported, tmp_path, family, change, needle):
    src = _hf_copy(exported, family, tmp_path, **change)
    res = run_cli("convert", str(src), "--names", "keras-hub", "-o", str(tmp_path / "out"))
    one_error_line(res.returncode, res.stderr, needle)
    assert not (tmp_path / "out").exists()


def test_way_back_refuses_a_tied_mistral(exported, tmp_path):
    src = _hf_copy(exported, "mistral", tmp_path, tie_word_embeddings=True)
    (src / "model.safetensors").unlink()
    shutil.copy(exported["llama3_tied"] / "model.safetensors", src / "model.safetensors")
    res = run_cli("convert", str(src), "--names", "keras-hub", "-o", str(tmp_path / "out"))
    assert res.returncode == 2
    assert not (tmp_path / "out").exists()


HF = Path(__file__).resolve().parent.parent / "fixtures" / "hf_kerashub"
HF_FAMILIES = sorted(json.loads((HF / "MANIFEST.json").read_text())["families"])


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_transformers_folder_round_trip_is_bit_for_bit(tmp_path, family):
    """A folder transformers 5 saved -> keras-hub preset -> transformers: the same tensors, bit for
    bit, and the config's sizes, heads, rope and tie as transformers saved them."""
    from tietool.convert import convert

    convert(HF / family, out=tmp_path / "kh", names="keras-hub")
    convert_to_pt(tmp_path / "kh", tmp_path / "hf")
    a, b = load_file(HF / family / "model.safetensors"), load_file(tmp_path / "hf" / "model.safetensors")
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes(), k
    want = json.loads((HF / family / "config.json").read_text())
    got = json.loads((tmp_path / "hf" / "config.json").read_text())
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "head_dim", "rope_parameters", "tie_word_embeddings", "layer_types", "sliding_window", "n_embd",
                "n_inner", "query_pre_attn_scalar", "final_logit_softcapping", "attn_logit_softcapping"):
        if key in want and key in got:
            assert got[key] == want[key], key


# -- diff PRESET OUT ---------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_diff_pairs_preset_with_its_export(exported, family):
    """diff pairs every keras-hub variable with the transformers tensor made of it (the reshapes
    included) and finds them identical, either way round."""
    from tietool.diff.checkpoints import diff_checkpoints

    r = diff_checkpoints(KHHF / family / "preset", exported[family])
    assert r.identical and r.tensors
    assert {t.match for t in r.tensors} == {"kerashub-table"}
    back = diff_checkpoints(exported[family], KHHF / family / "preset")
    assert back.identical and len(back.tensors) == len(r.tensors)


def test_diff_names_the_keras_hub_variables_that_differ(exported, tmp_path):
    src = exported["gpt2"]
    dst = tmp_path / "gpt2"
    shutil.copytree(src, dst)
    got = raw_safetensors(dst / "model.safetensors")["transformer.h.1.attn.c_attn.weight"]
    data = bytearray((dst / "model.safetensors").read_bytes())
    at = data.find(got[2])
    data[at + 4 * 16 + 1] ^= 0x40  # one element of the second row, in the key kernel's columns
    (dst / "model.safetensors").write_bytes(bytes(data))
    res = run_cli("diff", str(KHHF / "gpt2" / "preset"), str(dst), "--json")
    assert res.returncode == 1, res.stdout + res.stderr
    rows = [t for t in json.loads(res.stdout)["tensors"] if t["status"] != "identical"]
    assert [(t["a"], t["b"], t["status"]) for t in rows] == [(
        "layers/transformer_decoder_1/_self_attention_layer/query_dense/vars/0"
        "+layers/transformer_decoder_1/_self_attention_layer/key_dense/vars/0"
        "+layers/transformer_decoder_1/_self_attention_layer/value_dense/vars/0",
        "transformer.h.1.attn.c_attn.weight", "differs")]
    assert rows[0]["elements_differ"] == 1


def test_a_tasks_keras_archive_exports_as_its_preset(exported, tmp_path):
    """``convert TASK.keras --names pt``: the backbone's weights found under the task's
    ``layers/<backbone>/``, the same tensors bit for bit and the same config as the preset's export
    (no tokenizer: the archive holds no vocabulary files)."""
    res = run_cli("convert", str(KHHF / "llama3_untied" / "task.keras"), "--names", "pt", "-o", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    assert raw_safetensors(tmp_path / "o" / "model.safetensors") == \
        raw_safetensors(exported["llama3_untied"] / "model.safetensors")
    got = json.loads((tmp_path / "o" / "config.json").read_text())
    want = json.loads((exported["llama3_untied"] / "config.json").read_text())
    assert got == {k: v for k, v in want.items() if not k.endswith("_token_id")}


def test_a_presets_weights_file_exports_as_the_preset(exported, tmp_path):
    """``convert PRESET/model.weights.h5 --names pt``: the preset beside it is what is exported."""
    res = run_cli("convert", str(KHHF / "qwen2" / "preset" / "model.weights.h5"), "--names", "pt",
                  "-o", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert (tmp_path / "o" / name).read_bytes() == (exported["qwen2"] / name).read_bytes(), name
