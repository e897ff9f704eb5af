"""``fix`` on every broken copy of the committed sweep subset (fixtures/pt_sweep) gives back the original's
logits in transformers 5, and every genuine checkpoint there loads with its recorded logits (issue 29).

Exact, no tolerance: ``fix`` restores bits (the config's flag; weights copied bit for bit), and the reference
logits were taken by the same code (fixtures/make_pt_sweep.py ``logits_of``) from the same weights in the same
torch build, one thread, so the same kernels run on the same inputs. ``TIETOOL_SWEEP_DIR``: the same on a full
sweep (``-m "interop and sweep"``)."""

from __future__ import annotations

import json
import os
import shutil
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


def fix_jobs(folder: Path, tmp: Path, missed: list[str]):
    """``(job, what)`` for every genuine checkpoint, and the fix of every broken copy ``check`` finds (those
    it misses go to ``missed``: tests/sweep_harness.py reports them too), made when the job is asked for;
    ``(None, "")`` at the end."""
    for name, truth, broken in sh.cases(sh.load_sweep(folder)):
        original = str(folder / truth["path"])
        if broken is None:
            yield {"folder": original, "ref": original, "kind": truth["logits_kind"]}, "genuine"
        elif broken["broken"]:
            if check_checkpoint(folder / name).ok is not False:
                missed.append(name)
                continue
            out = tmp / "fixed" / name
            out.parent.mkdir(exist_ok=True)
            fix(folder / name, out)
            yield {"folder": str(out), "ref": original, "kind": truth["logits_kind"]}, f"fix of {name}"
    yield None, ""


def check_in_batches(pt_python: str, folder: Path, tmp: Path, batch: int = 40) -> tuple[int, list[str]]:
    """Load the jobs in batches (one interpreter each), the fixed copies removed after each: a full sweep's
    fixes would otherwise hold every large class's weights at once. Returns the number of fixes checked
    and every failure (a broken copy check missed, a load that failed, logits that differ)."""
    jobs: list[dict] = []
    why: dict[str, str] = {}
    fixes, failures, missed = 0, [], []
    for job, what in fix_jobs(folder, tmp, missed):
        if job is not None:
            jobs.append(job)
            why[job["folder"]] = what
            fixes += what.startswith("fix")
        if jobs and (job is None or len(jobs) >= batch):
            got = run_jobs(pt_python, jobs, tmp)
            failures += [f"{why[f]}: {r}" for f, r in got.items()
                         if "error" in r or not r["equal"] or r["missing_keys"]]
            shutil.rmtree(tmp / "fixed", ignore_errors=True)
            jobs = []
    return fixes, failures + [f"check exits 0 on broken copy {n}" for n in missed]


def test_fix_restores_the_originals_logits(tmp_path, pt_python):
    folder = sh.materialise(sh.SUBSET, tmp_path / "subset")
    fixes, failures = check_in_batches(pt_python, folder, tmp_path, batch=1000)
    assert not failures, "\n".join(failures[:20])
    assert fixes >= 10


@pytest.mark.sweep
def test_fix_restores_the_originals_logits_full_sweep(tmp_path, pt_python):
    folder = os.environ.get("TIETOOL_SWEEP_DIR")
    if not folder:
        pytest.skip("set TIETOOL_SWEEP_DIR to a folder written by fixtures/make_pt_sweep.py")
    fixes, failures = check_in_batches(pt_python, Path(folder), tmp_path)
    assert not failures, f"{len(failures)} failures in {fixes} fixes:\n" + "\n".join(failures)
