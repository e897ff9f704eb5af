"""convert --names pt without torch: names, layouts, ties, sharding, bounded
transposes, refusals. Loading in PyTorch transformers: tests/interop/test_pt_load.py."""

from __future__ import annotations

import json
import os
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner

import tietool
from tietool.cli.commands import cli
from tietool.convert import convert_to_pt, pt_plan, transpose
from tietool.convert.ptnames import convert_tf_weight_name, pt_entries
from tietool.errors import CopiesDifferError, TietoolError, UsageError
from tietool.ties.verify import verify_tie

FIX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
TF_FAMILIES = ["gpt2", "bert_mlm", "t5", "t5_v1_1_untied", "bart", "albert", "distilbert", "opt",
               "mistral_untied", "gpt2_sharded", "gpt2_tf_safetensors"]


def tf(name: str) -> str:
    return os.path.join(FIX, "tf", name)


def st_tensors(path: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(path)


def st_metadata(path: str) -> dict:
    from safetensors import safe_open

    with safe_open(path, "np") as f:
        return f.metadata()


def write_tf_safetensors(folder: str, tensors: dict[str, np.ndarray], config: dict | None = None) -> str:
    from safetensors.numpy import save_file

    os.makedirs(folder, exist_ok=True)
    save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "tf"})
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump(config or {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 64,
                             "n_embd": 16}, fh)
    return folder


# -- the name rule ---------------------------------------------------------------------------

@pytest.mark.parametrize("tf_name, shape, pt_name, transform", [
    ("tfgpt2lm_head_model/transformer/h_._0/attn/c_attn/weight:0", (16, 48),
     "transformer.h.0.attn.c_attn.weight", None),
    ("tfgpt2lm_head_model/transformer/ln_f/gamma:0", (16,), "transformer.ln_f.weight", None),
    ("tfgpt2lm_head_model/transformer/ln_f/beta:0", (16,), "transformer.ln_f.bias", None),
    ("tf_bert_for_masked_lm/mlm___cls/predictions/bias:0", (64,), "cls.predictions.bias", None),
    ("tf_bert_for_masked_lm/bert/encoder/layer_._0/output/dense/kernel:0", (32, 16),
     "bert.encoder.layer.0.output.dense.weight", "transpose"),
    ("shared/shared/embeddings:0", (64, 16), "shared.weight", None),
    ("model.shared/model.shared/embeddings:0", (64, 16), "model.shared.weight", None),
    ("final_logits_bias:0", (1, 64), "final_logits_bias", None),
    ("m/conv/kernel:0", (3, 3, 4, 8), "conv.weight", (3, 2, 0, 1)),
    ("m/conv1d/kernel:0", (3, 4, 8), "conv1d.weight", (2, 1, 0)),
    ("m/sep/pointwise_kernel:0", (4, 8), "sep.pointwise.weight", "transpose"),
])
def test_transformers_name_rule(tf_name, shape, pt_name, transform):
    assert convert_tf_weight_name(tf_name, shape) == (pt_name, transform)


def test_plan_gpt2_squeezes_conv1d_biases_only():
    with tietool.open_checkpoint(tf("gpt2")) as ckpt:
        plan = {e.pt_name: e for e in pt_entries(ckpt)}
    assert plan["transformer.h.0.attn.c_attn.bias"].shape == (48,)
    assert plan["transformer.h.0.attn.c_attn.bias"].transform == "squeeze0"
    assert plan["transformer.h.0.attn.c_attn.weight"].transform is None  # Conv1D keeps [in, out]
    assert "lm_head.weight" not in plan


def test_plan_bart_keeps_final_logits_bias_2d():
    with tietool.open_checkpoint(tf("bart")) as ckpt:
        plan = {e.pt_name: e for e in pt_entries(ckpt)}
    assert plan["final_logits_bias"].shape == (1, 64) and plan["final_logits_bias"].transform is None
    assert plan["model.shared.weight"].shape == (64, 16)


@pytest.mark.parametrize("family", ["gpt2", "gpt2_sharded", "gpt2_tf_safetensors"])
def test_three_gpt2_layouts_give_the_same_names(family):
    with tietool.open_checkpoint(tf(family)) as ckpt:
        names = sorted(e.pt_name for e in pt_entries(ckpt))
    with tietool.open_checkpoint(tf("gpt2")) as ckpt:
        assert names == sorted(e.pt_name for e in pt_entries(ckpt))


# -- conversion --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("pt")
    out = {}
    for fam in TF_FAMILIES:
        r = convert_to_pt(tf(fam), str(root / fam))
        out[fam] = (str(root / fam), r.to_json())
    return out


@pytest.mark.parametrize("family", TF_FAMILIES)
def test_output_is_a_pt_folder(converted, family):
    out, r = converted[family]
    files = sorted(os.listdir(out))
    assert "model.safetensors" in files and "config.json" in files
    assert not any(f.endswith(".h5") for f in files)
    assert st_metadata(os.path.join(out, "model.safetensors")) == {"format": "pt"}
    with open(os.path.join(out, "config.json"), "rb") as a, open(os.path.join(tf(family), "config.json"), "rb") as b:
        assert a.read() == b.read()
    names = list(st_tensors(os.path.join(out, "model.safetensors")))
    assert all(":" not in n and "/" not in n for n in names)
    assert r["verified"] and r["tensors"] == len(names)


@pytest.mark.parametrize("family", TF_FAMILIES)
def test_verify_tie_agrees_with_source(converted, family):
    out, _ = converted[family]
    assert verify_tie(out).to_json()["tied"] == verify_tie(tf(family)).to_json()["tied"]


def test_untied_head_written_transposed(converted):
    out, r = converted["mistral_untied"]
    got = st_tensors(os.path.join(out, "model.safetensors"))
    with tietool.open_checkpoint(tf("mistral_untied")) as ckpt:
        kernel = ckpt.read("lm_head/tf_mistral_for_causal_lm/lm_head/kernel:0")
        emb = ckpt.read("model/tf_mistral_for_causal_lm/model/embed_tokens/embeddings:0")
    assert got["lm_head.weight"].shape == (64, 16)
    assert np.array_equal(got["lm_head.weight"], kernel.T)
    assert np.array_equal(got["model.embed_tokens.weight"], emb)
    assert "lm_head.weight" in r["transposed"]


def test_copies_written_once(converted):
    out, r = converted["t5"]
    got = st_tensors(os.path.join(out, "model.safetensors"))
    assert "shared.weight" in got and "lm_head.weight" not in got
    assert not any(k.endswith("embed_tokens.weight") for k in got)
    # every stored copy, each with the PyTorch name it was written under (not a TF name)
    assert r["copies_merged"] == {f"{p}/shared/shared/embeddings:0": "shared.weight"
                                  for p in ("shared", "encoder", "decoder")}


def test_gpt2_output_equals_transformers_save(converted):
    """Same names and shapes as transformers 5's own save of GPT-2 (fixtures/pt/gpt2)."""
    out, _ = converted["gpt2"]
    got = st_tensors(os.path.join(out, "model.safetensors"))
    ref = st_tensors(os.path.join(FIX, "pt", "gpt2", "model.safetensors"))
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in ref.items()}


def test_sharded_output(tmp_path):
    out = str(tmp_path / "o")
    r = convert_to_pt(tf("bart"), out, shard_size="10KB")
    with open(os.path.join(out, "model.safetensors.index.json")) as fh:
        index = json.load(fh)
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2 and all(os.path.exists(os.path.join(out, s)) for s in shards)
    assert not os.path.exists(os.path.join(out, "model.safetensors"))
    assert index["metadata"]["total_size"] == r.to_json()["bytes"]
    for s in shards:
        assert st_metadata(os.path.join(out, s)) == {"format": "pt"}
        assert set(st_tensors(os.path.join(out, s))) == {k for k, v in index["weight_map"].items() if v == s}


def test_file_source_and_default_output(tmp_path):
    import shutil

    src = tmp_path / "gpt2"
    shutil.copytree(tf("gpt2"), src)
    r = convert_to_pt(str(src / "tf_model.h5"))
    assert r.to_json()["output"] == str(tmp_path / "gpt2" / "tf_model-pt")
    r = convert_to_pt(str(src))
    assert r.to_json()["output"] == str(tmp_path / "gpt2-pt")
    assert os.path.exists(tmp_path / "gpt2-pt" / "config.json")
    with pytest.raises(TietoolError, match="exists"):
        convert_to_pt(str(src))
    convert_to_pt(str(src), force=True)


def test_tied_head_copy_left_out(tmp_path):
    rng = np.random.default_rng(0)
    wte = rng.standard_normal((64, 16)).astype(np.float32)
    folder = write_tf_safetensors(str(tmp_path / "src"), {
        "transformer/wte/embeddings:0": wte,
        "lm_head/kernel:0": np.ascontiguousarray(wte.T),
    })
    r = convert_to_pt(folder, str(tmp_path / "out"))
    got = st_tensors(str(tmp_path / "out" / "model.safetensors"))
    assert set(got) == {"transformer.wte.weight"}
    assert r.to_json()["tied_heads_left_out"] == {"lm_head.weight": "transformer.wte.weight"}
    assert verify_tie(str(tmp_path / "out")).to_json()["tied"] == verify_tie(folder).to_json()["tied"] is True


def test_untied_config_keeps_identical_head(tmp_path):
    wte = np.arange(64 * 16, dtype=np.float32).reshape(64, 16)
    folder = write_tf_safetensors(str(tmp_path / "src"), {
        "transformer/wte/embeddings:0": wte,
        "lm_head/kernel:0": np.ascontiguousarray(wte.T),
    }, {"model_type": "gpt2", "vocab_size": 64, "n_embd": 16, "tie_word_embeddings": False})
    convert_to_pt(folder, str(tmp_path / "out"))
    got = st_tensors(str(tmp_path / "out" / "model.safetensors"))
    assert np.array_equal(got["lm_head.weight"], wte)


def test_transpose_in_bounded_blocks(tmp_path, monkeypatch):
    """A [hidden, vocab] head bigger than the block bound: right values, and the
    peak memory stays near the bound, not the matrix size."""
    H, V = 32, 300_000  # 38 MB float32
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((H, V)).astype(np.float32)
    emb = rng.standard_normal((V, H)).astype(np.float32)
    folder = write_tf_safetensors(str(tmp_path / "src"), {
        "model/embed_tokens/embeddings:0": emb, "lm_head/kernel:0": kernel,
    }, {"model_type": "mistral", "vocab_size": V, "hidden_size": H, "tie_word_embeddings": False})
    del emb
    monkeypatch.setattr(transpose, "BLOCK_BYTES", 2 << 20)
    plan = pt_plan.make_plan

    def plan_then_reset(ckpt):  # measure from after opening (reading config.json reserves a 64 MB buffer)
        tracemalloc.reset_peak()
        return plan(ckpt)

    monkeypatch.setattr(pt_plan, "make_plan", plan_then_reset)
    tracemalloc.start()
    try:
        convert_to_pt(folder, str(tmp_path / "out"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # a few 2 MB blocks plus the fixed read/write copy buffer; each matrix is 38 MB
    from tietool.io import tensorcopy as writers

    assert peak < writers.COPY_BYTES + (12 << 20), peak
    from safetensors import safe_open

    with safe_open(str(tmp_path / "out" / "model.safetensors"), "np") as f:
        assert np.array_equal(f.get_tensor("lm_head.weight"), kernel.T)


# -- refusals ----------------------------------------------------------------------------------

def test_undecidable_names_exit_2(tmp_path):
    folder = write_tf_safetensors(str(tmp_path / "src"), {
        "transformer/wte/embeddings:0": np.zeros((64, 16), np.float32),
        "transformer/odd/bias:0": np.zeros((2, 16), np.float32),
        "transformer/bn/moving_mean:0": np.zeros((16,), np.float32),
    })
    res = CliRunner().invoke(cli, ["convert", folder, "--to", "safetensors", "--names", "pt",
                                   "-o", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert "transformer/odd/bias:0" in res.output and "transformer/bn/moving_mean:0" in res.output
    assert "Traceback" not in res.output
    assert not os.path.exists(tmp_path / "out")


def test_differing_copies_refused(tmp_path):
    import shutil

    import h5py

    src = tmp_path / "bert"
    shutil.copytree(tf("bert_mlm"), src)
    with h5py.File(src / "tf_model.h5", "r+") as h:
        ds = h["mlm___cls/tf_bert_for_masked_lm/bert/embeddings/word_embeddings/weight:0"]
        ds[0, 0] = ds[0, 0] + 1
    with pytest.raises(CopiesDifferError, match="differ"):
        convert_to_pt(str(src), str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("path", ["pt/gpt2", "keras3/tied_revemb.weights.h5", "keras2/full_model.h5"])
def test_non_tf_sources_refused(tmp_path, path):
    with pytest.raises(UsageError, match="--names pt"):
        convert_to_pt(os.path.join(FIX, path), str(tmp_path / "out"))


# -- CLI ---------------------------------------------------------------------------------------

def test_cli_names_pt(tmp_path):
    out = str(tmp_path / "out")
    res = CliRunner().invoke(cli, ["convert", tf("mistral_untied"), "--to", "safetensors", "--names", "pt",
                                   "-o", out, "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["names"] == "pt" and data["output"] == out and "lm_head.weight" in data["transposed"]


def test_cli_names_pt_needs_safetensors(tmp_path):
    res = CliRunner().invoke(cli, ["convert", tf("gpt2"), "--to", "h5", "--names", "pt", "-o", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "--names pt" in res.output
