"""keras-hub presets exported by ``tietool convert PRESET --names pt`` load in transformers 5
with no missing, unexpected, mismatched or newly initialised weights, give keras-hub's logits
(fp32, 1e-4 relative to the largest logit) and keep the tie as the preset stores it.

The presets and keras-hub's logits: fixtures/kerashub_hf (fixtures/make_kerashub_hf.py, keras-hub
0.32). The export runs here (no torch, no keras); the loading in the ``pt_python`` interpreter
(tests/interop/conftest.py), every folder in one run of tests/interop/pt_load_many.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tietool.convert import convert_to_pt
from tietool.ties.verify import verify_tie

KHHF = Path(__file__).resolve().parents[2] / "fixtures" / "kerashub_hf"
LOADER = Path(__file__).resolve().parent / "pt_load_many.py"
MANIFEST = json.loads((KHHF / "MANIFEST.json").read_text())
FAMILIES = sorted(MANIFEST["families"])
REL_TOL = 1e-4

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, pt_python) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("khhf_pt")
    jobs = {}
    for fam in FAMILIES:
        convert_to_pt(KHHF / fam / "preset", tmp / fam)
        jobs[fam] = (tmp / fam, KHHF / fam)
    convert_to_pt(KHHF / "llama3_untied" / "preset", tmp / "sharded", shard_size="8KB")
    jobs["sharded"] = (tmp / "sharded", KHHF / "llama3_untied")
    res = subprocess.run([sys.executable, "-m", "tietool", "convert", str(KHHF / "gemma2" / "preset"), "--names", "pt",
                          "-o", str(tmp / "cli")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    jobs["cli"] = (tmp / "cli", KHHF / "gemma2")
    (tmp / "jobs.json").write_text(json.dumps([{"out": str(o), "fixture": str(f)} for o, f in jobs.values()]))
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="warning", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    env.pop("PYTHONPATH", None)
    res = subprocess.run([pt_python, str(LOADER), str(tmp / "jobs.json")], capture_output=True, text=True,
                         timeout=900, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    results = json.loads(res.stdout.strip().splitlines()[-1])
    return {name: dict(r, out=jobs[name][0], fixture=jobs[name][1]) for name, r in zip(jobs, results, strict=True)}


def _loads_clean_and_agrees(got: dict) -> None:
    assert "error" not in got, got
    assert got["missing_keys"] == got["unexpected_keys"] == got["mismatched_keys"] == [], got
    assert not [w for w in got["warnings"] if "newly initialized" in w or "not initialized" in w], got["warnings"]
    assert got["shape"] == got["ref_shape"], got
    scale = float(np.max(np.abs(np.load(got["fixture"] / "ref_logits.npy"))))
    assert got["max_abs_diff"] is not None and got["max_abs_diff"] <= REL_TOL * scale, got


FLOAT32 = [f for f in FAMILIES if MANIFEST["families"][f]["dtype"] == "float32"]


@pytest.mark.parametrize("family", FLOAT32)
def test_exported_preset_loads_with_keras_hub_logits(loaded, family):
    got = loaded[family]
    _loads_clean_and_agrees(got)
    tied = MANIFEST["families"][family]["tie_weights"]
    assert got["output_is_embedding"] is tied, got
    assert verify_tie(got["out"]).to_json()["tied"] is tied


def test_sharded_export_loads(loaded):
    got = loaded["sharded"]
    assert (got["out"] / "model.safetensors.index.json").exists()
    _loads_clean_and_agrees(got)


def test_cli_end_to_end(loaded):
    _loads_clean_and_agrees(loaded["cli"])


TOKEN_IDS = """
import json, sys
from transformers import AutoTokenizer
out = {}
for folder, text in json.loads(sys.argv[1]):
    t = AutoTokenizer.from_pretrained(folder)
    ids = t(text, add_special_tokens=False)["input_ids"]
    out[folder] = {"ids": ids, "with_specials": t(text)["input_ids"], "decoded": t.decode(ids)}
print(json.dumps(out))
"""


def test_tokenizer_gives_keras_hub_ids_without_sentencepiece(loaded, pt_python):
    """AutoTokenizer loads every exported tokenizer.json (no sentencepiece, no protobuf in that
    interpreter) and gives the keras-hub tokenizer's ids on the sample text."""
    no_spm = subprocess.run([pt_python, "-c", "import sentencepiece"], capture_output=True)
    no_pb = subprocess.run([pt_python, "-c", "import google.protobuf"], capture_output=True)
    jobs = [(str(loaded[f]["out"]), json.loads((KHHF / f / "tokens.json").read_text())["text"]) for f in FAMILIES]
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1")
    env.pop("PYTHONPATH", None)
    res = subprocess.run([pt_python, "-c", TOKEN_IDS, json.dumps(jobs)], capture_output=True, text=True, timeout=300,
                         env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    for fam in FAMILIES:
        ref = json.loads((KHHF / fam / "tokens.json").read_text())
        g = got[str(loaded[fam]["out"])]
        assert g["ids"] == ref["ids"], fam
        assert g["decoded"] == ref["text"], fam
        bos = json.loads((loaded[fam]["out"] / "config.json").read_text()).get("bos_token_id")
        adds_bos = json.loads((loaded[fam]["out"] / "tokenizer_config.json").read_text())["add_bos_token"]
        assert g["with_specials"] == ([bos] if adds_bos else []) + ref["ids"], fam
    if no_spm.returncode == 0 or no_pb.returncode == 0:
        pytest.skip("sentencepiece or protobuf is installed beside transformers: ids checked, independence not")


BF16_CHECK = """
import json, sys, numpy as np, torch
from transformers import AutoModelForCausalLM
out, fixture = sys.argv[1], sys.argv[2]
as_saved = AutoModelForCausalLM.from_pretrained(out)
model, info = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, output_loading_info=True)
ids = torch.from_numpy(np.load(fixture + "/ref_input_ids.npy")).long()
with torch.no_grad():
    got = model(input_ids=ids).logits.numpy()
want = np.load(fixture + "/ref_logits.npy")
print(json.dumps({"dtype_as_saved": str(as_saved.dtype), "info": {k: [str(x) for x in v] for k, v in info.items()},
                  "max_abs_diff": float(np.abs(got - want).max()), "scale": float(np.abs(want).max()),
                  "tied": model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()}))
"""


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in FLOAT32])
def test_bfloat16_preset_stays_bfloat16(loaded, pt_python, family):
    """A bfloat16 preset is written bfloat16 (no upcast): transformers loads it as bfloat16, and in
    float32 (an exact upcast) it gives the float32 logits keras-hub computes from those weights."""
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1")
    env.pop("PYTHONPATH", None)
    res = subprocess.run([pt_python, "-c", BF16_CHECK, str(loaded[family]["out"]), str(KHHF / family)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["dtype_as_saved"] == "torch.bfloat16"
    assert all(v == [] for v in got["info"].values()), got
    assert got["tied"] is MANIFEST["families"][family]["tie_weights"]
    assert got["max_abs_diff"] <= REL_TOL * got["scale"], got
