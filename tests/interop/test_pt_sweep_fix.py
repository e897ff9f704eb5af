"""``fix`` on every broken copy of the committed sweep subset (fixtures/pt_sweep) gives back the original's
logits in transformers 5, and every genuine checkpoint there loads with its recorded logits (issue 29).

Exact, no tolerance: ``fix`` restores bits (the config's flag; weights copied bit for bit), and the reference
logits were taken by the same code (fixtures/make_pt_sweep.py ``logits_of``) from the same weights in the same
torch build, one thread, so the same kernels run on the same inputs. ``TIETOOL_SWEEP_DIR``: the same on a full
sweep (``-m "interop and sweep"``)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import sweep_harness as sh

from tietool.audit.check import check_checkpoint
from tietool.audit.fix import fix

LOADER = Path(__file__).resolve().parent / "pt_sweep_load.py"

pytestmark = pytest.mark.interop


def run_jobs(pt_python: str, jobs: list[dict], tmp: Path) -> dict[str, dict]:
    spec = tmp / "jobs.json"
    spec.write_text(json.dumps(jobs))
    env = dict(os.environ, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="", TRANSFORMERS_VERBOSITY="error")
    env.pop("PYTHONPATH", None)
    res = subprocess.run([pt_python, str(LOADER), str(spec)], capture_output=True, text=True, timeout=3600, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    return {r["folder"]: r for r in json.loads(res.stdout.strip().splitlines()[-1])}


def fix_all(folder: Path, tmp: Path) -> tuple[list[dict], dict[str, str]]:
    """Jobs: every genuine checkpoint, and the fix of every broken copy (check exits 1 on it first)."""
    jobs, why = [], {}
    for name, truth, broken in sh.cases(sh.load_sweep(folder)):
        original = str(folder / truth["path"])
        if broken is None:
            jobs.append({"folder": original, "ref": original, "kind": truth["logits_kind"]})
            why[original] = "genuine"
        elif broken["broken"]:
            assert check_checkpoint(folder / name).ok is False, name
            out = tmp / "fixed" / name
            out.parent.mkdir(exist_ok=True)
            fix(folder / name, out)
            jobs.append({"folder": str(out), "ref": original, "kind": truth["logits_kind"]})
            why[str(out)] = f"fix of {name}"
    return jobs, why


def _assert_all(got: dict[str, dict], why: dict[str, str]) -> None:
    bad = [(why[f], r) for f, r in got.items() if "error" in r or not r["equal"] or r["missing_keys"]]
    assert not bad, "\n".join(f"{w}: {r}" for w, r in bad[:20])


def test_fix_restores_the_originals_logits(tmp_path, pt_python):
    folder = sh.materialise(sh.SUBSET, tmp_path / "subset")
    jobs, why = fix_all(folder, tmp_path)
    assert sum(w.startswith("fix") for w in why.values()) >= 10, why
    _assert_all(run_jobs(pt_python, jobs, tmp_path), why)


@pytest.mark.sweep
def test_fix_restores_the_originals_logits_full_sweep(tmp_path, pt_python):
    folder = os.environ.get("TIETOOL_SWEEP_DIR")
    if not folder:
        pytest.skip("set TIETOOL_SWEEP_DIR to a folder written by fixtures/make_pt_sweep.py")
    jobs, why = fix_all(Path(folder), tmp_path)
    _assert_all(run_jobs(pt_python, jobs, tmp_path), why)
