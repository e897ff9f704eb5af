"""The tie declaration against transformers 5 itself: for every transformers checkpoint in fixtures/ whose
config names a class transformers 5 builds (PyTorch, TF-era, damaged, keras-hub conversions, the sweep's
committed subset when present), with the flag as saved, flipped and deleted, ``tie_declaration`` says what
transformers 5 decides when it builds the model from that config.json (``AutoConfig.from_pretrained``,
the class, ``get_expanded_tied_weights_keys(all_submodels=True)`` ties the output embedding or not:
tests/interop/pt_tie_oracle.py). And issue 27's case end to end: fixtures/pt/llama_untied with
``tie_word_embeddings`` deleted loads untied, as saved, and verify-tie does not call the config wrong."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tietool.audit.check import check_checkpoint
from tietool.audit.scan import find_checkpoints
from tietool.formats import open_checkpoint
from tietool.ties.declaration import tie_declaration
from tietool.ties.verify import verify_tie

from helpers import flag_variants

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "fixtures"
HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.interop


def _run(pt_python: str, script: str, arg: Path) -> str:
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    env.pop("PYTHONPATH", None)
    res = subprocess.run([pt_python, str(HERE / script), str(arg)], capture_output=True, text=True, timeout=1800,
                         env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    return res.stdout.strip().splitlines()[-1]


def test_declaration_is_what_transformers_5_decides(tmp_path, pt_python):
    cases: dict[str, tuple[str, str]] = {}
    for found in find_checkpoints([str(FIX)]):
        if found.error is not None:
            continue
        for variant, path in flag_variants(found.path, tmp_path / str(len(cases))).items():
            with open_checkpoint(path) as ckpt:
                if not (ckpt.config_source or "").endswith("config.json") or "model_type" not in (ckpt.config or {}):
                    break
                cases[os.path.dirname(ckpt.config_source)] = (os.path.relpath(found.path, FIX), variant)
    spec = tmp_path / "folders.json"
    spec.write_text(json.dumps(sorted(cases)))
    oracle = json.loads(_run(pt_python, "pt_tie_oracle.py", spec))
    compared, disagree = 0, []
    for folder, (rel, variant) in sorted(cases.items()):
        got = oracle[folder]
        if got["tied"] is None:  # a class transformers 5 cannot build from this config: nothing to compare
            continue
        with open((Path(folder) / "config.json")) as fh:
            decl = tie_declaration(json.load(fh))
        compared += 1
        if decl.value is not got["tied"]:
            disagree.append((rel, variant, got, decl.describe()))
    assert compared >= 3 * 20, compared
    assert disagree == [], disagree


def test_llama_untied_without_the_flag_is_consistent(tmp_path, pt_python):
    """Issue 27: LlamaConfig defaults to false, so the untied Llama without the key loads as saved."""
    folder = tmp_path / "llama_untied"
    shutil.copytree(FIX / "pt/llama_untied", folder)
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["tie_word_embeddings"]
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([{"folder": str(folder), "ref": str(FIX / "pt/llama_untied")}]))
    (loaded,) = json.loads(_run(pt_python, "pt_load_check.py", jobs))
    assert loaded["missing_keys"] == [] and not loaded["head_shares_embedding"], loaded
    assert loaded["max_abs_diff"] <= 1e-5, loaded  # the stored logits were computed on another CPU (torch float32)
    report = verify_tie(folder)
    assert report.tie_declaration.value is False
    assert report.tie_declaration.source == "default of config class LlamaConfig"
    assert all(g.consistency is None or g.consistency["consistent"] for g in report.groups), report.to_json()
    result = check_checkpoint(folder)
    assert result.ok and not result.warnings
