"""Every broken or hostile input from tests/hostile_corpus.py, through every
command tietool has (inspect, verify-tie, convert, run): exit status 2, exactly one
stderr line ``Error: FILE: ...`` naming a file of the case (the exact line is in
tests/golden/hostile_errors.txt), no traceback, quick, bounded memory, no output
file left, inputs unchanged, nothing run.

The corpus runs in-process (Click's CliRunner, from the corpus' parent folder with
relative paths, under an address-space limit); a sample of the same cases runs
through the real console script in subprocesses, under the same limit as before
(4 GB), and must give the same exit status and the same line."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import hostile_corpus as hc
from helpers import GOLDEN, assert_golden, invoke, updating_golden

TIETOOL = str(Path(sys.executable).with_name("tietool"))
COMMANDS = ("inspect", "verify-tie", "convert", "run")
TIME_LIMIT = 20.0  # seconds per run ("within seconds"; generous for slow CI)
MEMORY_LIMIT = 4 << 30  # address space of a subprocess run
IN_PROCESS_HEADROOM = 1 << 30  # address space an in-process run may add to the test process
GOLDEN_NAME = "hostile_errors.txt"
# The subprocess sample: the cases that would exhaust memory or time if a guard
# were missing, each through one command (all four commands covered), plus a
# valid-but-hostile case.
SUBPROCESS_SAMPLE = [
    ("st_header_len_over_100mb", "inspect"),
    ("st_header_nested_deep", "verify-tie"),
    ("st_shape_bomb_past_eof", "convert"),
    ("h5_shape_bomb_chunked", "run"),
    ("h5_filter_plugin", "convert"),
    ("zip_bomb_declared", "inspect"),
    ("index_deep_json", "verify-tie"),
    ("folder_config_deep_json_300", "run"),
    ("keras3_archive_lambda", "inspect"),
]


def _golden() -> dict[tuple[str, str], tuple[int, str]]:
    """(case, command) -> (exit status, stderr) from the golden file (read at
    collection: it names the cases; the corpus itself is built in a fixture)."""
    path = GOLDEN / GOLDEN_NAME
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        case, command, code, err = line.split("\t", 3)
        out[(case, command)] = (int(code), json.loads(err))
    return out


GOLDEN_RUNS = _golden()
CASE_NAMES = sorted({case for case, _ in GOLDEN_RUNS})
BAD_CASES = [n for n in CASE_NAMES if n not in hc.EXPECT_OK]


def _argv(command: str, path: str, outdir: str) -> list[str]:
    if command == "convert":
        return [command, path, "--to", "safetensors", "-o", f"{outdir}/converted.safetensors", "--quiet"]
    if command == "run":
        # id -1 is refused after the checkpoint and its pair are read and
        # before TensorFlow loads: the checkpoint's own errors come first.
        return [command, path, "--mode", "embedding", "--ids=-1", "--output", f"{outdir}/out.npy"]
    return [command, path]


def _tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def _address_space_limit(extra: int):
    """Lower this process' soft RLIMIT_AS to what it maps now plus ``extra``,
    so an in-process run that tries to allocate a bomb fails as it would in a
    limited subprocess; restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    vm_kb = int(re.search(r"^VmSize:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))
    limit = vm_kb * 1024 + extra
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture(scope="module")
def corpus(hostile_corpus):
    """Every case through every command, in-process, once."""
    work = hostile_corpus.workdir
    before = _tree_hash(hostile_corpus.root)
    runs = {}
    old = os.getcwd()
    os.chdir(work)
    try:
        with _address_space_limit(IN_PROCESS_HEADROOM):
            for name, path in hostile_corpus.cases.items():
                for command in COMMANDS:
                    outdir = work / "out" / f"{command}-{name}"
                    outdir.mkdir(parents=True)
                    t0 = time.monotonic()
                    r = invoke(*_argv(command, path, str(outdir.relative_to(work))))
                    runs[(name, command)] = (r, time.monotonic() - t0, sorted(os.listdir(outdir)))
    finally:
        os.chdir(old)
    after = _tree_hash(hostile_corpus.root)
    return {"root": hostile_corpus.root, "work": work, "cases": hostile_corpus.cases, "runs": runs,
            "before": before, "after": after, "expect_text": hostile_corpus.expect_text}


WORK = "<WORK>"  # the corpus' parent folder, where a message names an absolute path


def _stderr(r, work) -> str:
    """stderr with the corpus folder's absolute path (in some cases' contents,
    so in their messages) as <WORK>."""
    return r.stderr.replace(str(work), WORK)


def test_golden_lines(corpus):
    """The exact exit status and stderr of every case through every command."""
    text = "".join(f"{case}\t{command}\t{r.exit_code}\t{json.dumps(_stderr(r, corpus['work']))}\n"
                   for (case, command), (r, _, _) in sorted(corpus["runs"].items()))
    assert_golden(GOLDEN_NAME, text)
    if not updating_golden():
        assert set(GOLDEN_RUNS) == set(corpus["runs"])  # the parametrization below covers every case


def test_commands_found():
    r = invoke("--help")
    listed = set(re.findall(r"^\s{2}([a-z][a-z-]*)\b", r.stdout.split("Commands:", 1)[-1], re.M))
    assert set(COMMANDS) <= listed


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", BAD_CASES)
def test_refused_with_one_line(corpus, case, command):
    r, elapsed, left = corpus["runs"][(case, command)]
    path = corpus["cases"][case]
    casedir = str(Path(path).relative_to("corpus").parts[0])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    assert r.exit_code == 2, f"exit {r.exit_code}; stderr: {r.stderr!r}"
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert (r.exit_code, _stderr(r, corpus["work"])) == GOLDEN_RUNS[(case, command)]  # exactly
    # "Error: FILE: what is wrong", FILE being the input or a file of this case
    assert line.startswith((f"Error: corpus/{casedir}", f"Error: {corpus['work']}/corpus/{casedir}")), line
    assert re.match(r"^Error: [^:]+(:[\w.]+)?: \S", line), line  # FILE or archive:member
    for text in corpus["expect_text"].get(case, []):
        assert text in line, f"{text!r} not in {line!r}"
    assert "\x1b" not in r.stderr and "\r" not in r.stderr
    assert elapsed < TIME_LIMIT
    assert left == [], f"output left behind: {left}"


def test_inputs_unchanged(corpus):
    assert corpus["before"] == corpus["after"]


def test_no_marker_ever(corpus):
    assert not list(Path(corpus["root"]).rglob(hc.MARKER_NAME))
    assert not list(Path(corpus["work"]).rglob(hc.MARKER_NAME))


@pytest.mark.parametrize("case", sorted(hc.EXPECT_OK))
def test_hostile_but_valid_inspect_ok(corpus, case):
    r, elapsed, left = corpus["runs"][(case, "inspect")]
    assert r.exit_code == 0, r.stderr
    assert "Traceback" not in r.stderr
    for command in COMMANDS:
        p, _, _ = corpus["runs"][(case, command)]
        assert p.exception is None or isinstance(p.exception, SystemExit), repr(p.exception)
        assert "Traceback" not in p.stderr and p.exit_code in (0, 1, 2), (command, p.exit_code, p.stderr)
        assert (p.exit_code, _stderr(p, corpus["work"])) == GOLDEN_RUNS[(case, command)]


def _limit_memory() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def test_real_entry_point_sample_agrees(corpus):
    """The console script, under a 4 GB address-space limit, on the cases that
    would exhaust memory or time: the exit status and line the in-process run
    gave, nothing left behind."""
    def run(job):
        case, command = job
        outdir = corpus["work"] / "sample" / f"{command}-{case}"
        outdir.mkdir(parents=True)
        t0 = time.monotonic()
        proc = subprocess.run([TIETOOL, *_argv(command, corpus["cases"][case], f"sample/{command}-{case}")],
                              capture_output=True, text=True, timeout=120, preexec_fn=_limit_memory,
                              cwd=corpus["work"], errors="replace")
        return job, proc, time.monotonic() - t0, sorted(os.listdir(outdir))

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, SUBPROCESS_SAMPLE))
    for (case, command), proc, elapsed, left in results:
        r, _, _ = corpus["runs"][(case, command)]
        expected_err = r.stderr.replace(f"out/{command}-{case}", f"sample/{command}-{case}")
        assert (proc.returncode, proc.stdout == r.stdout, proc.stderr) == (r.exit_code, True, expected_err), case
        assert "Traceback" not in proc.stderr
        assert elapsed < TIME_LIMIT and left == [], (case, elapsed, left)
    assert {c for _, c in SUBPROCESS_SAMPLE} == set(COMMANDS)


@pytest.mark.parametrize("case,needle", [
    ("keras2_full_model_lambda", "Lambda layer"),
    ("keras3_archive_lambda", "__lambda__"),
    ("keras3_archive_lambda", "evil_pkg"),
])
def test_config_code_reported_never_run(corpus, case, needle):
    path = corpus["work"] / corpus["cases"][case]
    r = invoke("inspect", "--json", path)
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert any(needle in c["what"] for c in report["config_code"]), report["config_code"]
    # the marshalled function is still there, untouched, as data
    assert "function" in json.dumps(report["config"])
    text = invoke("inspect", path).stdout
    assert "never run" in text and needle.split()[0] in text
    assert not (Path(path).parent / hc.MARKER_NAME).exists()


def test_lambda_marker_would_be_written_by_the_code(corpus):
    """Sanity check of the corpus itself: the embedded code object is a
    function that writes the marker (inspected, not called)."""
    import base64
    import marshal

    import h5py

    with h5py.File(corpus["work"] / corpus["cases"]["keras2_full_model_lambda"], "r") as f:
        cfg = json.loads(f.attrs["model_config"])
    lam = [layer for layer in cfg["config"]["layers"] if layer["class_name"] == "Lambda"][0]
    code = marshal.loads(base64.b64decode(lam["config"]["function"][0]))
    assert hc.MARKER_NAME in " ".join(str(c) for c in code.co_consts)


def test_ansi_names_escaped_in_table(corpus):
    r, _, _ = corpus["runs"][("st_ansi_names", "inspect")]
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    for bad in ("\x1b", "\r", "\x07", "\x08", "\x7f", "\u202e", "\u200b"):
        assert bad not in out, repr(bad)
    assert "\\x1b[2J" in out and "line1\\x0aline2" in out and "\\u202e" in out
    # every name on its own table row: no name broke the table into more lines
    rows = [ln for ln in out.splitlines() if ln.rstrip().endswith("float32  8 B")]
    assert len(rows) == len(hc.ANSI_NAMES)


def test_ansi_names_exact_in_json(corpus):
    r = invoke("inspect", "--json", corpus["work"] / corpus["cases"]["st_ansi_names"])
    assert r.exit_code == 0
    assert "\x1b" not in r.stdout
    names = [t["name"] for t in json.loads(r.stdout)["tensors"]]
    assert names == hc.ANSI_NAMES


def test_library_raises_only_tietool_errors(corpus):
    """The same corpus through the library: open + read every tensor."""
    from tietool.errors import TietoolError

    for name, path in corpus["cases"].items():
        outcome = hc.open_and_read_all(corpus["work"] / path)
        if name in hc.EXPECT_OK:
            assert outcome is None, (name, outcome)
        else:
            assert outcome is not None, f"{name} was accepted"
    assert issubclass(TietoolError, Exception)
