"""The way back: ``tietool convert HF_DIR --names keras-hub -o PRESET`` on the transformers 5 folders
tietool exported from fixtures/kerashub_hf; keras-hub itself (``CausalLM.from_preset``) loads each
preset and gives the logits keras-hub gave on the original preset (float32, 1e-4 relative: the
weights are the same bits), with the tie as it was.

keras-hub runs in its own interpreter: ``TIETOOL_KH_PYTHON`` (e.g. the fixtures' keras-hub venv,
fixtures/requirements-kerashub-hf.txt); skipped, with the reason, without it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tietool.convert import convert, convert_to_pt

KHHF = Path(__file__).resolve().parents[2] / "fixtures" / "kerashub_hf"
HF = Path(__file__).resolve().parents[2] / "fixtures" / "hf_kerashub"  # saved by transformers 5 itself
HF_MANIFEST = json.loads((HF / "MANIFEST.json").read_text())
LOADER = Path(__file__).resolve().parent / "kh_load_many.py"
MANIFEST = json.loads((KHHF / "MANIFEST.json").read_text())
FAMILIES = sorted(MANIFEST["families"])

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def kh_python() -> str:
    python = os.environ.get("TIETOOL_KH_PYTHON")
    if not python:
        pytest.skip("TIETOOL_KH_PYTHON (a python with keras-hub 0.32) is not set")
    if subprocess.run([python, "-c", "import keras_hub"], capture_output=True, timeout=300).returncode != 0:
        pytest.skip(f"{python} cannot import keras_hub")
    return python


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, kh_python) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("khhf_back")
    jobs = []
    for fam in FAMILIES:
        convert_to_pt(KHHF / fam / "preset", tmp / f"{fam}-hf")
        convert(tmp / f"{fam}-hf", out=tmp / fam, names="keras-hub")
        text = json.loads((KHHF / fam / "tokens.json").read_text())["text"]
        jobs.append({"preset": str(tmp / fam), "fixture": str(KHHF / fam), "text": text})
    for fam in sorted(HF_MANIFEST["families"]):
        convert(HF / fam, out=tmp / f"hf-{fam}", names="keras-hub")
        jobs.append({"preset": str(tmp / f"hf-{fam}"), "fixture": str(HF / fam)})
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env.pop("PYTHONPATH", None)
    res = subprocess.run([kh_python, str(LOADER), str(tmp / "jobs.json")], capture_output=True, text=True,
                         timeout=900, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    names = FAMILIES + [f"hf-{f}" for f in sorted(HF_MANIFEST["families"])]
    return dict(zip(names, json.loads(res.stdout.strip().splitlines()[-1]), strict=True))


@pytest.mark.parametrize("family", FAMILIES)
def test_keras_hub_loads_the_preset_with_its_logits(loaded, family):
    got = loaded[family]
    assert "error" not in got, got
    assert got["tied"] is MANIFEST["families"][family]["tie_weights"]
    assert got["max_abs_diff"] is not None and got["max_abs_diff"] <= 1e-4 * got["scale"], got


@pytest.mark.parametrize("family", sorted(HF_MANIFEST["families"]))
def test_transformers_saved_folder_imports_with_transformers_logits(loaded, family):
    """A folder transformers 5 saved (fixtures/hf_kerashub): keras-hub loads the preset and gives
    the logits transformers gave (1e-4 relative), the tie as transformers had it."""
    got = loaded[f"hf-{family}"]
    assert "error" not in got, got
    assert got["tied"] is HF_MANIFEST["families"][family]["tied"]
    assert got["max_abs_diff"] is not None and got["max_abs_diff"] <= 1e-4 * got["scale"], got


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_comes_back_with_keras_hubs_ids(loaded, family):
    """keras-hub -> transformers -> keras-hub: the preset's tokenizer (vocabulary.json + merges.txt,
    or a vocabulary.spm rebuilt from tokenizer.json for Gemma and Mistral, with keras-hub's
    tokenizer.json and preprocessor.json; CausalLM.from_preset builds the family's preprocessor)
    gives the ids the original keras-hub tokenizer gave."""
    assert loaded[family]["ids"] == json.loads((KHHF / family / "tokens.json").read_text())["ids"]
