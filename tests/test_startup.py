"""Start-up: what each command imports.

``ml_dtypes`` is imported only where a bfloat16 or float8 value is needed as a
number (a tolerance, a reported difference, a printed value, ``run``):
copying and bitwise comparison work on the stored bytes. (ml_dtypes 0.7.0
takes half a second to import; every command paid it while tietool.dtypes
imported it at module level.)
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
import time

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from helpers import ROOT, fixture

# A child interpreter runs CLI commands in-process and says whether ml_dtypes got imported.
_CHILD = """
import json, sys
from click.testing import CliRunner
from tietool.cli.commands import cli
codes = []
for args in json.loads(sys.argv[1]):
    result = CliRunner().invoke(cli, args)
    codes.append(result.exit_code)
    if result.exit_code not in (0, 1):
        print(args, result.output, file=sys.stderr)
print(json.dumps({"codes": codes, "ml_dtypes": "ml_dtypes" in sys.modules}))
"""


def _run_commands(commands: list[list[str]]) -> dict:
    r = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(commands)], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def _bf16_tied(path, differ: bool = False) -> np.ndarray:
    """A safetensors file whose bfloat16 embedding is stored twice (as the LM head)."""
    emb = np.random.default_rng(0).standard_normal((64, 16)).astype(ml_dtypes.bfloat16)
    head = emb.copy()
    if differ:
        head.view(np.uint16)[5, 7] ^= 1
    save_file({"model.embed_tokens.weight": emb, "lm_head.weight": head}, str(path))
    return emb


def test_bitwise_work_on_bfloat16_never_imports_ml_dtypes(tmp_path):
    src = tmp_path / "m" / "model.safetensors"
    src.parent.mkdir()
    _bf16_tied(src)
    keras_bf16 = str(fixture("keras3/bf16_revemb.weights.h5"))
    h5, back, from_keras = tmp_path / "m.h5", tmp_path / "back.safetensors", tmp_path / "k.safetensors"
    commands = [
        ["inspect", str(src)],
        ["verify-tie", str(src)],
        ["convert", str(src), "--to", "h5", "-o", str(h5)],
        ["convert", str(h5), "--to", "safetensors", "-o", str(back)],
        ["diff", str(src), str(back)],
        ["check", str(tmp_path / "m")],
        ["verify-tie", keras_bf16],
        ["convert", keras_bf16, "-o", str(from_keras)],
        ["diff", keras_bf16, str(from_keras)],
    ]
    out = _run_commands(commands)
    assert out["codes"][:3] == [0, 0, 0] and out["codes"][3:5] == [0, 0] and out["codes"][6:] == [0, 0, 0], out
    assert out["ml_dtypes"] is False


@pytest.mark.parametrize("args", [["verify-tie", "{src}"], ["verify-tie", "{src}", "--atol", "0.1"],
                                  ["diff", "{src}", "{other}"]])
def test_bfloat16_values_are_numbers_where_a_difference_is_reported(tmp_path, args):
    """The same files with one bit flipped: the difference is reported in
    numbers, so ml_dtypes is imported (and the numbers are bfloat16's)."""
    src, other = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    emb = _bf16_tied(src, differ=True)
    save_file({"model.embed_tokens.weight": emb, "lm_head.weight": emb}, str(other))
    out = _run_commands([[a.format(src=src, other=other) for a in args] + ["--json"]])
    assert out["ml_dtypes"] is True


def test_bfloat16_difference_in_bfloat16_numbers(tmp_path):
    from tietool import diff_checkpoints, verify_tie

    src, other = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    emb = _bf16_tied(src, differ=True)
    save_file({"model.embed_tokens.weight": emb, "lm_head.weight": emb}, str(other))
    head = emb.copy()
    head.view(np.uint16)[5, 7] ^= 1
    step = abs(float(head[5, 7]) - float(emb[5, 7]))
    group = verify_tie(src, atol=step / 2).to_json()["groups"][0]
    assert group["max_abs_diff"] == step and group["verdict"] != "tied"
    assert verify_tie(src, atol=step).to_json()["groups"][0]["verdict"] == "tied"
    lm = next(t for t in diff_checkpoints(src, other).to_json()["tensors"] if t["a"] == "lm_head.weight")
    assert (lm["max_abs"], lm["first_index"]) == (step, [5, 7])
    assert lm["max_rel"] == step / abs(float(emb[5, 7]))


# -- the import budget ---------------------------------------------------------------------------
#
# Each command is run once on a tiny fixture as the installed `tietool` script runs it, under
# `python -X importtime`, to find what it imports (lazy imports included). What it imports beyond
# `import numpy, h5py` (the floor every command needs, whatever tietool does) is tietool's doing:
# its own modules, the dependencies it chose (click ...) and the standard library modules it pulls
# in. Then a fresh interpreter imports just those, in the same order, under importtime: no one
# module may cost more than PER_MODULE_MS, nor all of them together more than TOTAL_MS (issue 28:
# `inspect` on a tiny checkpoint within 0.1 s of `python -c "import numpy, h5py"`). `run` is left
# out: it imports TensorFlow, by design and only there.
#
# importtime reports wall-clock time. On a shared 2-core machine a child gets a fraction of a
# core, and every figure grows by the inverse of that fraction; so each run's figures are scaled
# by the share of a core the child got (its CPU time over its wall time, from the kernel's
# accounting: an import-only child does no I/O worth the name, its files are cached), and each
# module's cost is its least over RUNS runs (more, up to MAX_RUNS, before a failure is reported).
# A module that really costs 0.5 s, as ml_dtypes 0.7.0 did, fails every run.

PER_MODULE_MS = 50.0
TOTAL_MS = 150.0
RUNS, MAX_RUNS = 3, 6
_SCRIPT = "import sys; sys.argv[0] = 'tietool'; from tietool.cli import main; main()"  # as the console script
_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+\d+ \| ( *)(\S+)")

BUDGET_COMMANDS = {
    "--help": ["--help"],
    "inspect": ["inspect", "fixtures/tf/gpt2"],
    "inspect --json": ["inspect", "fixtures/pt/llama_tied", "--json"],
    "verify-tie": ["verify-tie", "fixtures/tf/bert_mlm", "--quiet"],
    "convert": ["convert", "fixtures/tf/gpt2", "-o", "{tmp}/gpt2.safetensors", "--quiet"],
    "convert --names pt": ["convert", "fixtures/tf/gpt2", "--names", "pt", "-o", "{tmp}/gpt2-pt", "--quiet"],
    "check": ["check", "fixtures/tf/t5"],
    "fix": ["fix", "fixtures/damaged/pt/llama_flag_untied_no_head", "-o", "{tmp}/fixed"],
    "diff": ["diff", "fixtures/tf/gpt2", "fixtures/pt/gpt2"],
}


def _importtime(args: list[str]) -> tuple[list[tuple[str, int, float]], float]:
    """One child run under importtime: (module, depth, self ms scaled by the child's share of a
    core) per import, in order, and that share."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert "Traceback" not in r.stderr and r.returncode in (0, 1), r.stderr[-3000:]
    share = min(1.0, cpu / wall) if wall > 0 else 1.0
    found = []
    for line in r.stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if m:
            found.append((m.group(3), len(m.group(2)) // 2, int(m.group(1)) / 1000 * share))
    return found, share


@pytest.fixture(scope="module")
def floor_modules() -> frozenset[str]:
    found, _ = _importtime(["-c", "import numpy, h5py"])
    names = frozenset(name for name, _, _ in found)
    assert {"numpy", "h5py"} <= names
    return names


def _over_budget(best: dict[str, float]) -> list[str]:
    ranked = sorted(best.items(), key=lambda kv: -kv[1])
    problems = [f"{m} costs {ms:.0f} ms (budget {PER_MODULE_MS:.0f} ms per module)"
                for m, ms in ranked if ms > PER_MODULE_MS]
    total = sum(best.values())
    if total > TOTAL_MS:
        top = ", ".join(f"{m} {ms:.1f}" for m, ms in ranked[:12])
        problems.append(f"the {len(best)} modules tietool imports cost {total:.0f} ms together "
                        f"(budget {TOTAL_MS:.0f} ms); the largest (ms): {top}")
    return problems


def import_costs(argv: list[str], floor: frozenset[str], runs: int = RUNS, max_runs: int = MAX_RUNS,
                 ) -> tuple[dict[str, float], list[float]]:
    """{module: least scaled self ms} of what ``tietool ARGV`` imports beyond ``floor``, and the
    shares of a core of the measured runs (stops after ``runs`` runs when within budget)."""
    found, _ = _importtime(["-c", _SCRIPT, *argv])
    wanted = [name for name, depth, _ in found if depth == 0 and name not in floor]
    script = "".join(f"import {name}\n" for name in wanted)  # import statements: importlib's are not timed
    best: dict[str, float] = {}
    shares = []
    for run in range(max_runs):
        found, share = _importtime(["-c", script])
        shares.append(share)
        for name, _, ms in found:
            if name not in floor:
                best[name] = min(ms, best.get(name, ms))
        if run + 1 >= runs and not _over_budget(best):
            break
    return best, shares


@pytest.mark.parametrize("command", list(BUDGET_COMMANDS))
def test_import_budget(command, floor_modules, tmp_path):
    best, shares = import_costs([a.format(tmp=tmp_path) for a in BUDGET_COMMANDS[command]], floor_modules)
    assert "tietool.cli" in best
    problems = _over_budget(best)
    shares_text = ", ".join(f"{s:.2f}" for s in shares)
    assert not problems, (f"tietool {command}: " + "; ".join(problems)
                          + f" (least of {len(shares)} runs; shares of a core: {shares_text})")
