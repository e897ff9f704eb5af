"""Start-up: what each command imports.

``ml_dtypes`` is imported only where a bfloat16 or float8 value is needed as a
number (a tolerance, a reported difference, a printed value, ``run``):
copying and bitwise comparison work on the stored bytes. (ml_dtypes 0.7.0
takes half a second to import; every command paid it while tietool.dtypes
imported it at module level.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

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
# in. Then a fresh interpreter imports just those, in the same order, and each module's own import
# time is taken: no one module may cost more than PER_MODULE_MS, nor all of them together more
# than TOTAL_MS (issue 28: `inspect` on a tiny checkpoint within 0.1 s of
# `python -c "import numpy, h5py"`). `run` is left out: it imports TensorFlow, by design and only there.
#
# The time is CPU time (the importing thread's), taken around the same call -X importtime times
# (importlib's _find_and_load; a module's own time is its total less its imports'): -X importtime
# reports wall-clock time, which a shared 2-core machine multiplies by the number of processes
# waiting for a core. A module's cost is its least over RUNS runs (more, up to MAX_RUNS, before a
# failure is reported). A module that really costs 0.5 s, as ml_dtypes 0.7.0 did, fails every run.

PER_MODULE_MS = 50.0
TOTAL_MS = 150.0
RUNS, MAX_RUNS = 3, 6
_SCRIPT = "import sys; sys.argv[0] = 'tietool'; from tietool.cli import main; main()"  # as the console script
_IMPORT_LINE = re.compile(r"import time:\s+\d+ \|\s+\d+ \| ( *)(\S+)")
# Imports the modules named in argv, and prints [[module, own CPU ms], ...] as JSON.
_TIMED_IMPORTS = """
import json, sys, time
import _frozen_importlib as bootstrap
find_and_load = bootstrap._find_and_load
stack, found = [0], []
def timed(name, import_):
    start = time.thread_time_ns()
    stack.append(0)
    try:
        return find_and_load(name, import_)
    finally:
        total = time.thread_time_ns() - start
        inner = stack.pop()
        stack[-1] += total
        found.append((name, (total - inner) / 1e6))
bootstrap._find_and_load = timed
for name in sys.argv[1:]:
    __import__(name)
bootstrap._find_and_load = find_and_load
print(json.dumps(found))
"""

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


def _child(args: list[str]) -> subprocess.CompletedProcess:
    # from compiled bytecode, as an installed copy runs (pip compiles on install): the first run writes it
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert "Traceback" not in r.stderr and r.returncode in (0, 1), r.stderr[-3000:]
    return r


def imported_by(argv: list[str]) -> list[str]:
    """The modules ``tietool ARGV`` imports at its outermost level, in order (``-X importtime``)."""
    err = _child(["-X", "importtime", "-c", _SCRIPT, *argv]).stderr
    return [m.group(2) for m in map(_IMPORT_LINE.match, err.splitlines()) if m and not m.group(1)]


def import_cpu_ms(modules: list[str]) -> dict[str, float]:
    """{module: own import CPU time in ms} of importing ``modules`` (and what they import) in a fresh interpreter."""
    return dict(json.loads(_child(["-c", _TIMED_IMPORTS, *modules]).stdout.splitlines()[-1]))


@pytest.fixture(scope="module")
def floor_modules() -> frozenset[str]:
    names = frozenset(import_cpu_ms(["numpy", "h5py"]))
    assert {"numpy", "h5py", "numpy._core"} <= names
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
                 ) -> tuple[dict[str, float], int]:
    """{module: least own import CPU ms over the runs} of what ``tietool ARGV`` imports beyond
    ``floor``, and the number of runs (``runs`` when within budget, up to ``max_runs``)."""
    wanted = [m for m in imported_by(argv) if m not in floor]
    best: dict[str, float] = {}
    for run in range(max_runs):
        for module, ms in import_cpu_ms(wanted).items():
            if module not in floor:
                best[module] = min(ms, best.get(module, ms))
        if run + 1 >= runs and not _over_budget(best):
            break
    return best, run + 1


@pytest.mark.parametrize("command", list(BUDGET_COMMANDS))
def test_import_budget(command, floor_modules, tmp_path):
    best, runs = import_costs([a.format(tmp=tmp_path) for a in BUDGET_COMMANDS[command]], floor_modules)
    assert "tietool.cli" in best and "click" in best
    problems = _over_budget(best)
    assert not problems, f"tietool {command}: " + "; ".join(problems) + f" (CPU time, least of {runs} runs)"


# -- tables (tietool.cli.tables replaced tabulate, whose 0.10 import cost 40 ms) --------------------

def test_table_layout():
    from tietool.cli.tables import key_values, table

    assert table([["a", 1, None], ["longer name", True, " x "]], ["n", "count", "v"]).splitlines() == [
        "n            count    v",
        "-----------  -------  ---",
        "a            1",
        "longer name  True     x",
    ]
    assert key_values([("files", "a.h5\nb.h5"), ("path", "m")]).splitlines() == ["files  a.h5", "       b.h5",
                                                                                 "path   m"]
    # wide characters take two columns; a cell's later lines keep their indentation
    assert table([["词表", "x"], ["ab\n  = cd", "y"]], ["name", "k"]).splitlines() == [
        "name    k", "------  ---", "词表    x", "ab      y", "  = cd"]
    assert table([], ["a", "bb"]).splitlines() == ["a    bb", "---  ----"]


def test_table_matches_tabulate_simple_and_plain():
    """The layout tietool's golden output was written with (tabulate, when installed)."""
    tabulate = pytest.importorskip("tabulate").tabulate
    from tietool.cli.tables import key_values, table

    rng = np.random.default_rng(3)
    words = ["", "a", "tensor/kernel:0", "float32", "[768, 50257]", "x y", "7", "True", "name\n  = other"]
    for _ in range(200):
        cols = int(rng.integers(1, 6))
        rows = [[words[i] for i in rng.integers(0, len(words), cols)] for _ in range(int(rng.integers(0, 5)))]
        headers = [words[i] or "h" for i in rng.integers(1, 7, cols)]
        assert table(rows, headers) == tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
        if rows and cols == 2:
            assert key_values([tuple(r) for r in rows]) == tabulate(rows, tablefmt="plain", disable_numparse=True)


# -- the HDF5 layout walked once ------------------------------------------------------------------

@pytest.mark.parametrize("rel", ["tf/gpt2/tf_model.h5", "tf/bert_mlm/tf_model.h5", "keras3/tied_revemb.weights.h5"])
def test_hdf5_layout_description_reuses_the_readers_walk(rel):
    """convert's lossless layout description (tietool.layout) replays the
    paths and addresses the reader's walk found, not a walk of the file
    again (``SafeH5.walks`` counts the walks; no object is kept open between
    them: each open HDF5 dataset costs some KB). (A Keras 2 full-model file
    is read from its model_weights group, a walk of its own.)"""
    from tietool.convert.keras_layout import h5_files
    from tietool.formats import open_checkpoint
    from tietool.formats.h5_writer import describe_h5

    with open_checkpoint(fixture(rel)) as ckpt:
        h5 = h5_files(ckpt)[0]
        walks = h5.walks
        read = {t.name for t in ckpt.tensors.values()}
        tree = describe_h5(h5)
        visited = dict(h5.visit())
        assert h5.walks == walks >= 1
    assert set(tree["datasets"]) <= set(visited) and read
    assert read <= set(visited)
