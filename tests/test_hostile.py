"""Every broken or hostile input from tests/hostile_corpus.py, through every
command tietool has (inspect, verify-tie, convert, run): exit status 2, exactly one
stderr line ``Error: FILE: ...`` naming a file of the case, no traceback,
quick, bounded memory, no output file left, inputs unchanged, nothing run."""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hostile_corpus as hc  # noqa: E402

TIETOOL = str(Path(sys.executable).with_name("tietool"))
COMMANDS_WANTED = ("inspect", "verify-tie", "convert", "run")
TIME_LIMIT = 20.0  # seconds per run ("within seconds"; generous for slow CI)
MEMORY_LIMIT = 4 << 30  # address space per run


def _commands() -> list[str]:
    out = subprocess.run([TIETOOL, "--help"], capture_output=True, text=True, timeout=60).stdout
    listed = set(re.findall(r"^\s{2}([a-z][a-z-]*)\b", out.split("Commands:", 1)[-1], re.M))
    return [c for c in COMMANDS_WANTED if c in listed]


COMMANDS = _commands()


def _limit_memory() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _tree_hash(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _argv(command: str, path: str, outdir: Path) -> list[str]:
    if command == "convert":
        return [TIETOOL, command, path, "--to", "safetensors", "-o", str(outdir / "converted.safetensors"), "--quiet"]
    if command == "run":
        # id -1 is refused after the checkpoint and its pair are read and
        # before TensorFlow loads: the checkpoint's own errors come first.
        return [TIETOOL, command, path, "--mode", "embedding", "--ids=-1", "--output", str(outdir / "out.npy")]
    return [TIETOOL, command, path]


# Built once at collection (well under a second), removed at exit.
ROOT = Path(tempfile.mkdtemp(prefix="tietool-hostile-"))
atexit.register(shutil.rmtree, ROOT, True)
CASES = hc.build_corpus(ROOT / "corpus")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = ROOT / "corpus"
    cases = CASES
    before = _tree_hash(root)
    runs = {}

    def run(job):
        name, path, command = job
        outdir = tmp_path_factory.mktemp(f"out-{command}-{name}")
        t0 = time.monotonic()
        proc = subprocess.run(_argv(command, path, outdir), capture_output=True, text=True, timeout=120,
                              preexec_fn=_limit_memory, cwd=outdir, errors="replace")
        return job, proc, time.monotonic() - t0, sorted(os.listdir(outdir))

    jobs = [(name, path, cmd) for name, path in cases for cmd in COMMANDS]
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        for job, proc, elapsed, left in pool.map(run, jobs):
            runs[(job[0], job[2])] = (job[1], proc, elapsed, left)
    after = _tree_hash(root)
    return {"root": root, "cases": dict(cases), "runs": runs, "before": before, "after": after}


CASE_NAMES = [name for name, _ in CASES]
BAD_CASES = [n for n in CASE_NAMES if n not in hc.EXPECT_OK]


def test_commands_found():
    assert "inspect" in COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", BAD_CASES)
def test_refused_with_one_line(corpus, case, command):
    path, proc, elapsed, left = corpus["runs"][(case, command)]
    casedir = str(corpus["root"] / case)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert proc.returncode == 2, f"exit {proc.returncode}; stderr: {proc.stderr!r}"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("Error: "), line
    # "Error: FILE: what is wrong", FILE being the input or a file of this case
    assert line.startswith(f"Error: {casedir}"), line
    assert re.match(r"^Error: [^:]+(:[\w.]+)?: \S", line), line  # FILE or archive:member
    for text in hc.EXPECT_TEXT.get(case, []):
        assert text in line, f"{text!r} not in {line!r}"
    assert "\x1b" not in proc.stderr and "\r" not in proc.stderr
    assert elapsed < TIME_LIMIT
    assert left == [], f"output left behind: {left}"


def test_inputs_unchanged(corpus):
    assert corpus["before"] == corpus["after"]


def test_no_marker_ever(corpus):
    assert not list(Path(corpus["root"]).rglob(hc.MARKER_NAME))
    assert not list(Path(corpus["root"]).parent.rglob(hc.MARKER_NAME))


@pytest.mark.parametrize("case", sorted(hc.EXPECT_OK))
def test_hostile_but_valid_inspect_ok(corpus, case):
    path, proc, elapsed, left = corpus["runs"][(case, "inspect")]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for command in COMMANDS:
        _, p, _, _ = corpus["runs"][(case, command)]
        assert "Traceback" not in p.stderr and p.returncode in (0, 1, 2), (command, p.returncode, p.stderr)


@pytest.mark.parametrize("case,needle", [
    ("keras2_full_model_lambda", "Lambda layer"),
    ("keras3_archive_lambda", "__lambda__"),
    ("keras3_archive_lambda", "evil_pkg"),
])
def test_config_code_reported_never_run(corpus, case, needle):
    path = corpus["cases"][case]
    proc = subprocess.run([TIETOOL, "inspect", "--json", path], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert any(needle in c["what"] for c in report["config_code"]), report["config_code"]
    # the marshalled function is still there, untouched, as data
    assert "function" in json.dumps(report["config"])
    text = subprocess.run([TIETOOL, "inspect", path], capture_output=True, text=True, timeout=60).stdout
    assert "never run" in text and needle.split()[0] in text
    assert not (Path(path).parent / hc.MARKER_NAME).exists()


def test_lambda_marker_would_be_written_by_the_code(corpus):
    """Sanity check of the corpus itself: the embedded code object is a
    function that writes the marker (inspected, not called)."""
    import base64
    import marshal

    with open(corpus["cases"]["keras2_full_model_lambda"], "rb"):
        pass
    import h5py

    with h5py.File(corpus["cases"]["keras2_full_model_lambda"], "r") as f:
        cfg = json.loads(f.attrs["model_config"])
    lam = [layer for layer in cfg["config"]["layers"] if layer["class_name"] == "Lambda"][0]
    code = marshal.loads(base64.b64decode(lam["config"]["function"][0]))
    assert hc.MARKER_NAME in " ".join(str(c) for c in code.co_consts)


def test_ansi_names_escaped_in_table(corpus):
    _, proc, _, _ = corpus["runs"][("st_ansi_names", "inspect")]
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for bad in ("\x1b", "\r", "\x07", "\x08", "\x7f", "\u202e", "\u200b"):
        assert bad not in out, repr(bad)
    assert "\\x1b[2J" in out and "line1\\x0aline2" in out and "\\u202e" in out
    # every name on its own table row: no name broke the table into more lines
    rows = [ln for ln in out.splitlines() if ln.rstrip().endswith("float32  8 B")]
    assert len(rows) == len(hc.ANSI_NAMES)


def test_ansi_names_exact_in_json(corpus):
    path = corpus["cases"]["st_ansi_names"]
    proc = subprocess.run([TIETOOL, "inspect", "--json", path], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "\x1b" not in proc.stdout
    names = [t["name"] for t in json.loads(proc.stdout)["tensors"]]
    assert names == hc.ANSI_NAMES


def test_library_raises_only_tietool_errors(corpus):
    """The same corpus through the library: open + read every tensor."""
    from tietool.errors import TietoolError

    for name, path in corpus["cases"].items():
        outcome = hc.open_and_read_all(path)
        if name in hc.EXPECT_OK:
            assert outcome is None, (name, outcome)
        else:
            assert outcome is not None, f"{name} was accepted"
    assert issubclass(TietoolError, Exception)
