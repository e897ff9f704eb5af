"""``convert --names pt`` output loads in PyTorch transformers 5 with no missing,
unexpected or mismatched keys, and gives the fixtures' stored logits.

The conversion runs here (tietool's environment: no torch); the loading runs
in a separate interpreter with torch 2.13.0 + transformers 5 and no tietool
(``tests/interop/pt_load.py``), chosen by:

* ``TIETOOL_PT_PYTHON=/path/to/python``, else
* a venv created once under ``~/.cache/tietool-test/venv-pt`` (override the
  folder with ``TIETOOL_PT_VENV``) with ``pip install torch==2.13.0
  "transformers>=5,<6" safetensors``, reused afterwards.

Skipped, with the reason, only when that environment cannot be created.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tietool.convert import convert_to_pt
from tietool.ties import verify_tie

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
LOADER = Path(__file__).resolve().parent / "pt_load.py"
FAMILIES = ["gpt2", "bert_mlm", "t5", "t5_v1_1_untied", "bart", "albert", "distilbert", "opt", "mistral_untied",
            "gpt2_sharded", "gpt2_tf_safetensors"]
REQUIREMENTS = ["torch==2.13.0", "transformers>=5,<6", "safetensors"]
CHECK = "import torch, transformers, safetensors; assert transformers.__version__.split('.')[0] == '5'"
TOL = 1e-4

pytestmark = pytest.mark.interop


def _works(python: str) -> bool:
    try:
        return subprocess.run([python, "-c", CHECK], capture_output=True, timeout=300).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _create_venv(folder: Path) -> tuple[str | None, str]:
    """Build the venv in a temporary folder beside ``folder`` and rename it into
    place, so an interrupted build is never reused."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".building-", dir=folder.parent))
    try:
        subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, capture_output=True, timeout=300)
        res = subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "--quiet", *REQUIREMENTS],
                             capture_output=True, text=True, timeout=3600)
        if res.returncode != 0:
            return None, f"pip install {' '.join(REQUIREMENTS)} failed: {res.stderr.strip()[-600:]}"
        if folder.exists():
            shutil.rmtree(folder)
        # bin/python finds its site-packages through pyvenv.cfg beside it, so the renamed venv works
        # (only console-script shebangs keep the old path; the tests run bin/python alone)
        tmp.rename(folder)
        return str(folder / "bin" / "python"), ""
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"creating the venv failed: {exc}"
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def pt_python() -> str:
    explicit = os.environ.get("TIETOOL_PT_PYTHON")
    if explicit:
        if not _works(explicit):
            pytest.fail(f"TIETOOL_PT_PYTHON={explicit} cannot import torch + transformers 5 + safetensors")
        return explicit
    folder = Path(os.environ.get("TIETOOL_PT_VENV") or Path.home() / ".cache" / "tietool-test" / "venv-pt")
    py = folder / "bin" / "python"
    if py.exists() and _works(str(py)):
        return str(py)
    made, why = _create_venv(folder)
    if made is None or not _works(made):
        pytest.skip(f"no torch 2.13.0 + transformers 5 environment: {why or 'the created venv does not import them'}"
                    " (set TIETOOL_PT_PYTHON to use an existing one)")
    return made


def load(pt_python: str, out: Path, fixture: Path) -> dict:
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    env.pop("PYTHONPATH", None)
    res = subprocess.run([pt_python, str(LOADER), str(out), str(fixture)], capture_output=True, text=True,
                         timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("family", FAMILIES)
def test_converted_tf_checkpoint_loads_in_pytorch(tmp_path, pt_python, family):
    src = FIXTURES / "tf" / family
    out = tmp_path / "pt"
    convert_to_pt(src, out)
    got = load(pt_python, out, src)
    assert got["missing_keys"] == [], got
    assert got["unexpected_keys"] == [], got
    assert got["mismatched_keys"] == [], got
    assert got["shape"] == got["ref_shape"], got
    assert got["max_abs_diff"] is not None and got["max_abs_diff"] <= TOL, got
    assert verify_tie(out)["tied"] == verify_tie(src)["tied"]


def test_sharded_output_loads(tmp_path, pt_python):
    src = FIXTURES / "tf" / "bart"
    out = tmp_path / "pt"
    convert_to_pt(src, out, shard_size="10KB")
    assert (out / "model.safetensors.index.json").exists()
    got = load(pt_python, out, src)
    assert got["missing_keys"] == got["unexpected_keys"] == got["mismatched_keys"] == [], got
    assert got["max_abs_diff"] <= TOL, got


def test_cli_end_to_end(tmp_path, pt_python):
    """The real command line, as a user runs it."""
    src = FIXTURES / "tf" / "gpt2_tf_safetensors"
    out = tmp_path / "pt"
    res = subprocess.run([sys.executable, "-m", "tietool", "convert", str(src), "--to", "safetensors", "--names", "pt",
                          "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got = load(pt_python, out, src)
    assert got["missing_keys"] == got["unexpected_keys"] == got["mismatched_keys"] == [], got
    assert got["max_abs_diff"] <= TOL, got
