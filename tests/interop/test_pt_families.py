"""Every TF family's ``convert --names pt`` output loads in torch 2.13 + transformers 5
with no missing, unexpected or mismatched keys and gives the TF logits within 1e-4;
and what verify-tie says transformers 5 does is what it does.

All loads run in ONE interpreter (tests/interop/pt_load_many.py): one torch import."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tietool.convert import convert_to_pt
from tietool.ties.verify import verify_tie

FAMILIES = Path(__file__).resolve().parents[2] / "fixtures" / "tf_families"
LOADER = Path(__file__).resolve().parent / "pt_load_many.py"
MANIFEST = json.loads((FAMILIES / "MANIFEST.json").read_text())
NAMES = sorted(MANIFEST["families"])
TOL = 1e-4

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, pt_python):
    tmp = tmp_path_factory.mktemp("pt_families")
    jobs, summaries = {}, {}
    for family in NAMES:
        out = tmp / family
        summaries[family] = convert_to_pt(FAMILIES / family, out).to_json()
        jobs[family] = {"out": str(out), "fixture": str(FAMILIES / family)}
    # the claim "transformers 5 reports the output layer missing" for an untied config with one matrix
    untied = tmp / "gpt2_config_untied"
    shutil.copytree(tmp / "gpt2_lmhead_model", untied)
    cfg = json.loads((untied / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    (untied / "config.json").write_text(json.dumps(cfg))
    jobs["gpt2_config_untied"] = {"out": str(untied), "fixture": str(FAMILIES / "gpt2_lmhead_model")}
    (tmp / "jobs.json").write_text(json.dumps(list(jobs.values())))
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="warning", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    env.pop("PYTHONPATH", None)
    res = subprocess.run([pt_python, str(LOADER), str(tmp / "jobs.json")], capture_output=True, text=True,
                         timeout=900, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    results = json.loads(res.stdout.strip().splitlines()[-1])
    return dict(zip(jobs, results, strict=True)), summaries, {k: Path(v["out"]) for k, v in jobs.items()}


@pytest.mark.parametrize("family", NAMES)
def test_family_loads_in_transformers_5(loaded, family):
    results, summaries, _ = loaded
    got = results[family]
    assert "error" not in got, got
    assert got["missing_keys"] == [] and got["unexpected_keys"] == [] and got["mismatched_keys"] == [], got
    assert got["shape"] == got["ref_shape"], got
    assert got["max_abs_diff"] is not None and got["max_abs_diff"] <= TOL, got
    assert summaries[family]["verified"] is True


def test_stored_head_differs_from_tied_config(loaded):
    """verify-tie: 'transformers 5 keeps the stored decoder (it warns ... and does not tie them)'."""
    results, _, outs = loaded
    cases = [f for f in NAMES if MANIFEST["families"][f]["expected_because"] == "a head variable of its own with "
             "other values" and MANIFEST["families"][f]["declared_tie"]]
    assert len(cases) >= 3, cases  # BLIP text, MobileBERT, XGLM
    for family in cases:
        [g] = verify_tie(outs[family]).to_json()["groups"]
        assert "transformers 5 keeps the stored decoder" in g["consistency"]["message"], family
        got = results[family]
        assert got["output_is_embedding"] is False, (family, got)  # not tied: its own weight
        assert got["max_abs_diff"] <= TOL, (family, got)  # and it is the stored decoder: the TF logits
        assert any("NOT tie" in w for w in got["warnings"]), (family, got["warnings"])


def test_untied_config_with_one_matrix(loaded):
    """verify-tie: 'transformers 5 reports the output layer's weight as missing and initialises it randomly'."""
    results, _, outs = loaded
    [g] = verify_tie(outs["gpt2_config_untied"]).to_json()["groups"]
    assert "transformers 5 reports the output layer's weight as missing" in g["consistency"]["message"]
    got = results["gpt2_config_untied"]
    assert got["missing_keys"] == ["lm_head.weight"], got
    assert got["output_is_embedding"] is False and got["max_abs_diff"] > 1e-3, got


def test_tied_families_are_tied_after_loading(loaded):
    """A head left out as tied is tied back by transformers 5 (output layer = embedding)."""
    results, summaries, _ = loaded
    for family in NAMES:
        if summaries[family]["tied_heads_left_out"]:
            assert results[family]["output_is_embedding"] is True, family
