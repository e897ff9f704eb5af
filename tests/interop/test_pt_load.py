"""``convert --names pt`` output loads in PyTorch transformers 5 with no missing,
unexpected or mismatched keys, and gives the fixtures' stored logits.

The conversion runs here (tietool's environment: no torch); the loading runs
in a separate interpreter with torch 2.13.0 + transformers 5 and no tietool
(``tests/interop/pt_load_many.py``, all folders in one interpreter), the ``pt_python`` fixture of
tests/interop/conftest.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tietool.convert import convert_to_pt
from tietool.ties.verify import verify_tie

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
LOADER = Path(__file__).resolve().parent / "pt_load_many.py"
FAMILIES = ["gpt2", "bert_mlm", "t5", "t5_v1_1_untied", "bart", "albert", "distilbert", "opt", "mistral_untied",
            "gpt2_sharded", "gpt2_tf_safetensors"]
TOL = 1e-4

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, pt_python) -> dict[str, dict]:
    """Every conversion below, loaded in ONE torch interpreter (pt_load_many.py)."""
    tmp = tmp_path_factory.mktemp("pt_load")
    jobs = {}
    for family in FAMILIES:
        convert_to_pt(FIXTURES / "tf" / family, tmp / family)
        jobs[family] = (tmp / family, FIXTURES / "tf" / family)
    convert_to_pt(FIXTURES / "tf" / "bart", tmp / "bart_sharded", shard_size="10KB")
    jobs["bart_sharded"] = (tmp / "bart_sharded", FIXTURES / "tf" / "bart")
    # the real command line, as a user runs it
    src = FIXTURES / "tf" / "gpt2_tf_safetensors"
    res = subprocess.run([sys.executable, "-m", "tietool", "convert", str(src), "--to", "safetensors", "--names", "pt",
                          "-o", str(tmp / "cli")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    jobs["cli"] = (tmp / "cli", src)
    (tmp / "jobs.json").write_text(json.dumps([{"out": str(o), "fixture": str(f)} for o, f in jobs.values()]))
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    env.pop("PYTHONPATH", None)
    res = subprocess.run([pt_python, str(LOADER), str(tmp / "jobs.json")], capture_output=True, text=True,
                         timeout=900, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    results = json.loads(res.stdout.strip().splitlines()[-1])
    return {name: dict(r, out=jobs[name][0]) for name, r in zip(jobs, results, strict=True)}


@pytest.mark.parametrize("family", FAMILIES)
def test_converted_tf_checkpoint_loads_in_pytorch(loaded, family):
    src = FIXTURES / "tf" / family
    got = loaded[family]
    assert "error" not in got, got
    assert got["missing_keys"] == [], got
    assert got["unexpected_keys"] == [], got
    assert got["mismatched_keys"] == [], got
    assert got["shape"] == got["ref_shape"], got
    assert got["max_abs_diff"] is not None and got["max_abs_diff"] <= TOL, got
    assert verify_tie(got["out"]).to_json()["tied"] == verify_tie(src).to_json()["tied"]


def test_sharded_output_loads(loaded):
    got = loaded["bart_sharded"]
    assert (got["out"] / "model.safetensors.index.json").exists()
    assert "error" not in got, got
    assert got["missing_keys"] == got["unexpected_keys"] == got["mismatched_keys"] == [], got
    assert got["max_abs_diff"] <= TOL, got


def test_cli_end_to_end(loaded):
    """The real command line, as a user runs it."""
    got = loaded["cli"]
    assert "error" not in got, got
    assert got["missing_keys"] == got["unexpected_keys"] == got["mismatched_keys"] == [], got
    assert got["max_abs_diff"] <= TOL, got
