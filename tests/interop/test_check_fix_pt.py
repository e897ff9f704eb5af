"""What transformers 5 does with each damaged checkpoint (the claims ``tietool
check`` makes), and that every ``tietool fix`` output loads in transformers 5
with no missing, unexpected or mismatched keys and the undamaged model's
logits. All loads run in ONE interpreter (tests/interop/pt_load_check.py)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tietool.audit.check import check_checkpoint
from tietool.audit.fix import fix
from tietool.convert import convert_to_pt
from tietool.errors import CopiesDifferError

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "fixtures"
DAMAGED = FIX / "damaged"
MANIFEST = json.loads((DAMAGED / "MANIFEST.json").read_text())
LOADER = Path(__file__).resolve().parent / "pt_load_check.py"

pytestmark = pytest.mark.interop


def load_all(pt_python: str, jobs: list[dict], tmp: Path) -> dict[str, dict]:
    spec = tmp / "jobs.json"
    spec.write_text(json.dumps([{"folder": str(j["folder"]), "ref": str(j["ref"])} for j in jobs]))
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="warning", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    env.pop("PYTHONPATH", None)
    res = subprocess.run([pt_python, str(LOADER), str(spec)], capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    return {r["folder"]: r for r in json.loads(res.stdout.strip().splitlines()[-1])}


# The reference logits (ref_logits.npy) were computed when the fixtures were made, on another CPU;
# torch computes the same float32 matmuls here with kernels of its own choosing (SIMD width,
# blocking: the summation order differs by CPU), so logits from the right weights differ by a few
# float32 ulps (2.98e-8 seen). SAME_WEIGHTS allows that; a head of other weights (random, or the
# embedding in place of a trained head) is off by more than 1e-3 (asserted below for the random one).
SAME_WEIGHTS = 1e-6


def test_damaged_and_fixed_checkpoints_in_transformers_5(tmp_path, pt_python):
    jobs = []
    expect_src: dict[str, str] = {}
    fixed: dict[str, float] = {}
    for case, entry in sorted(MANIFEST.items()):
        src = DAMAGED / case
        if case.startswith("pt/"):
            jobs.append({"folder": src, "ref": src})
            expect_src[str(src)] = entry["expect"].get("problem", "ok")
            out = tmp_path / case.replace("/", "_")
            if entry["expect"]["check"]:
                fix(src, out)
            else:
                fix(src, out, head="implicit")  # drops the identical head, records the tie
            jobs.append({"folder": out, "ref": src})
            fixed[str(out)] = SAME_WEIGHTS
        else:  # TF: the repaired tf_model.h5, converted to PyTorch names, against the undamaged TF logits
            with pytest.raises(CopiesDifferError, match="differ"):
                convert_to_pt(src, tmp_path / (case.replace("/", "_") + "-refused"))
            out = tmp_path / case.replace("/", "_")
            fix(src, out, prefer="embedding" if entry["expect"].get("majority") is False else None)
            convert_to_pt(out, str(out) + "-pt")
            jobs.append({"folder": str(out) + "-pt", "ref": src})
            fixed[str(out) + "-pt"] = 1e-4  # TF vs torch arithmetic, as tests/interop/test_pt_load.py
    for name in ("llama_tied", "gpt2_sharded"):  # --head explicit: a real lm_head.weight
        out = tmp_path / f"{name}-explicit"
        fix(FIX / "pt" / name, out, head="explicit")
        jobs.append({"folder": out, "ref": FIX / "pt" / name})
        fixed[str(out)] = SAME_WEIGHTS
    llava = tmp_path / "pt_llava_nested_flag_disagrees"  # transformers 5 saved it with legacy names
    fix(llava, tmp_path / "llava-explicit", head="explicit")
    jobs.append({"folder": tmp_path / "llava-explicit", "ref": DAMAGED / "pt/llava_nested_flag_disagrees"})
    fixed[str(tmp_path / "llava-explicit")] = SAME_WEIGHTS
    for out in fixed:
        assert check_checkpoint(out).ok, out
    got = load_all(pt_python, jobs, tmp_path)

    for folder, tol in fixed.items():
        r = got[folder]
        assert r["missing_keys"] == r["unexpected_keys"] == r["mismatched_keys"] == [], r
        assert r["max_abs_diff"] is not None and r["max_abs_diff"] <= tol, r
        assert not any("NOT tie" in w for w in r["warnings"]), r
    for folder, problem in expect_src.items():
        r = got[folder]
        if problem == "untied-no-head":
            # transformers 5 reports the head missing and initialises it at random
            assert r["missing_keys"] == ["lm_head.weight"], r
            assert r["max_abs_diff"] > 1e-3, r
        elif problem == "tied-different-head":
            # transformers 5 warns, does not tie, and uses the stored head: the right logits
            assert r["missing_keys"] == [] and not r["head_shares_embedding"], r
            assert r["max_abs_diff"] <= SAME_WEIGHTS, r
            assert any("NOT tie" in w for w in r["warnings"]), r
        elif problem == "flags-disagree":
            # transformers 5 reads the top-level flag (true) and ties lm_head to the embedding
            assert r["missing_keys"] == [] and r["head_shares_embedding"], r
            assert r["max_abs_diff"] <= SAME_WEIGHTS, r
        else:
            assert r["missing_keys"] == [] and r["max_abs_diff"] <= SAME_WEIGHTS, r
