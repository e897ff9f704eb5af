"""Shared test helpers: the ONE module tests import from (tests never import
each other or conftest). Fixtures that need pytest (session corpora, the
torch interpreter) are in conftest.py files; plain functions and data are here.

Golden files (tests/golden/*.txt) hold the exact expected output of the CLI.
Regenerate them after an intended change of output with

    python -m pytest --update-golden            # or TIETOOL_UPDATE_GOLDEN=1 python -m pytest

and review the diff (``git diff tests/golden``) before committing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
GOLDEN = Path(__file__).resolve().parent / "golden"
MANIFEST = json.loads((FIXTURES / "MANIFEST.json").read_text())
UPDATE_GOLDEN_ENV = "TIETOOL_UPDATE_GOLDEN"

# path -> (tied, kind, verdict, number of members): what verify-tie finds in each fixture
EXPECTED_TIES = {
    "tf/gpt2": (True, "implicit", "tied", 1),
    "tf/gpt2_sharded": (True, "implicit", "tied", 1),
    "tf/gpt2_tf_safetensors": (True, "implicit", "tied", 1),
    "tf/bert_mlm": (True, "duplicate-copies", "tied", 2),
    "tf/t5": (True, "duplicate-copies", "tied", 3),
    "tf/opt": (True, "implicit", "tied", 1),
    "tf/albert": (True, "duplicate-copies", "tied", 2),
    "tf/distilbert": (True, "duplicate-copies", "tied", 2),
    "tf/bart": (True, "implicit", "tied", 1),
    "tf/t5_v1_1_untied": (False, "separate", "not tied", 4),
    "tf/mistral_untied": (False, "separate", "not tied", 2),
    "keras2/full_model.h5": (False, "separate", "not tied", 2),
    "keras2/seed_shared": (True, "implicit", "tied", 1),
    "keras3/tied_revemb.keras": (True, "implicit", "tied", 1),
    "keras3/tied_revemb.weights.h5": (True, "implicit", "tied", 1),
    "keras3/bf16_revemb.weights.h5": (True, "implicit", "tied", 1),
    "keras3/untied_revemb.weights.h5": (False, "separate", "not tied", 2),
    "keras3/legacy_full.h5": (False, "separate", "not tied", 2),
    "keras3/sharded/untied_revemb.weights.json": (False, "separate", "not tied", 2),
    "pt/gpt2": (True, "implicit", "tied", 1),
    "pt/gpt2_sharded": (True, "implicit", "tied", 1),
    "pt/llama_tied": (True, "implicit", "tied", 1),
    "pt/llama_untied": (False, "separate", "not tied", 2),
    "pt/llama_bf16": (False, "separate", "not tied", 2),
}


def fixture(rel: str) -> Path:
    return FIXTURES / rel


# -- running the CLI ------------------------------------------------------------------------

def run_cli(*args, env: dict | None = None, timeout: float = 120, cwd=None) -> subprocess.CompletedProcess:
    """Run the real entry point in a subprocess, as a user would. Use sparingly:
    :func:`invoke` runs the same CLI in-process, a hundred times cheaper."""
    full_env = dict(os.environ)
    full_env.pop("TIETOOL_DEBUG", None)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "tietool", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd,
    )


def invoke(*args, **kwargs):
    """The CLI in-process (Click's CliRunner): ``.exit_code``, ``.stdout``, ``.stderr``."""
    from click.testing import CliRunner

    from tietool.cli.commands import cli

    env = {"TIETOOL_DEBUG": None, **kwargs.pop("env", {})}
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="tietool", env=env, **kwargs)


def one_error_line(code: int, stderr: str, needle: str = "", expected_code: int = 2) -> str:
    """Exit status 2 (or ``expected_code``), exactly one stderr line ``Error: ...``
    containing ``needle``, no traceback; the line."""
    assert code == expected_code, (code, stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in stderr, stderr
    assert needle in lines[0], lines[0]
    return lines[0]


# -- exact expected output ------------------------------------------------------------------

TIMING = re.compile(r"\b\d+\.\d\d s\b")
JSON_SECONDS = re.compile(r'("seconds": )[0-9.e+-]+')


def timeless(text: str) -> str:
    """Wall-clock figures replaced by a placeholder, ``0.06 s`` by ``<T> s`` and
    ``"seconds": 0.061`` by ``"seconds": <T>``: the only parts of the CLI's
    output that change from run to run."""
    return JSON_SECONDS.sub(r"\1<T>", TIMING.sub("<T> s", text))


def updating_golden() -> bool:
    return os.environ.get(UPDATE_GOLDEN_ENV, "") not in ("", "0")


def assert_golden(name: str, actual: str) -> None:
    """``actual`` equals tests/golden/NAME exactly; with --update-golden
    (or TIETOOL_UPDATE_GOLDEN=1) the file is (re)written instead."""
    path = GOLDEN / name
    if updating_golden():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != actual:
            path.write_text(actual)
        return
    assert path.exists(), f"no golden file {path}: run `python -m pytest --update-golden` and review it"
    expected = path.read_text()
    if actual != expected:
        import difflib

        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                            f"golden/{name}", "actual"))
        raise AssertionError(f"output differs from tests/golden/{name} "
                             f"(intended? `python -m pytest --update-golden`):\n{diff}")


def transcript(args: list[str], result) -> str:
    """One command's exact outcome as a golden file records it: the command
    line, stdout, stderr and exit status (timings as ``<T> s``)."""
    parts = ["$ tietool " + " ".join(args), timeless(result.stdout)]
    if result.stderr:
        parts.append("--- stderr\n" + timeless(result.stderr))
    parts.append(f"--- exit {result.exit_code}\n")
    return "\n".join(p.rstrip("\n") if i < len(parts) - 1 else p for i, p in enumerate(parts))


# -- numbers a library computed (TensorFlow, torch) -----------------------------------------

def assert_kernel_close(got, want, *, depth: int, compute_dtype: str = "float32") -> None:
    """Logits a library computed in this run against the ones it computed when
    the fixture was made, on another CPU. The weights are loaded bit for bit
    (tested exactly elsewhere); the arithmetic is the library's, and its
    kernels differ by CPU and build (oneDNN on or off, SIMD width, blocking),
    so the float32 sums of a ``depth``-term dot product are added in another
    order. Justified bound per element: ``depth * eps(float32) * max|logit|``
    of its row (the reordering error of a float32 sum, the row's largest
    logit standing for the sum of the magnitudes), plus one ulp of
    ``compute_dtype`` at the element's own magnitude (a result rounded to
    bfloat16 may land on the neighbouring value: the one-ulp differences seen
    with TF_ENABLE_ONEDNN_OPTS=1). A wrong weight, a missing soft cap or a
    wrong scale is orders of magnitude beyond it."""
    import numpy as np

    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    mant = {"float32": 23, "bfloat16": 7, "float16": 10}[compute_dtype]
    mag = np.maximum(np.abs(want), np.finfo(np.float32).tiny)
    ulp = np.exp2(np.floor(np.log2(mag)) - mant)
    rowmax = np.max(np.abs(want), axis=-1, keepdims=True)
    bound = ulp + depth * float(np.finfo(np.float32).eps) * rowmax
    over = np.abs(got - want) > bound
    assert not over.any(), (f"{int(over.sum())} of {over.size} values beyond the bound; first at "
                            f"{np.argwhere(over)[0].tolist()}: {got[over][0]!r} vs {want[over][0]!r}")


# -- generated checkpoints -------------------------------------------------------------------

def grow_llama_tied(dst: Path, rows: int) -> None:
    """fixtures/pt/llama_tied copied to ``dst`` with its embedding grown to
    ``rows`` x 16 (random float32; no head stored: tied), config to match."""
    import shutil
    import struct

    import numpy as np

    shutil.copytree(FIXTURES / "pt/llama_tied", dst)
    path = dst / "model.safetensors"
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__")
    data = raw[8 + n:]
    tensors = {k: data[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in header.items()}
    tensors["model.embed_tokens.weight"] = np.random.default_rng(0).standard_normal((rows, 16), np.float32).tobytes()
    new, pos = {"__metadata__": meta}, 0
    for k, v in header.items():
        shape = [rows, 16] if k == "model.embed_tokens.weight" else v["shape"]
        new[k] = {"dtype": v["dtype"], "shape": shape, "data_offsets": [pos, pos + len(tensors[k])]}
        pos += len(tensors[k])
    head = json.dumps(new).encode()
    head += b" " * (-(8 + len(head)) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(head)) + head)
        for k in header:
            fh.write(tensors[k])
    cfg = json.loads((dst / "config.json").read_text())
    cfg["vocab_size"] = rows
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))


FLOAT = re.compile(r"[-+]?\d+\.\d+(?:e[-+]?\d+)?")


def same_but_last_digits(expected: str, actual: str) -> bool:
    """``actual`` is ``expected`` except that a printed decimal number may be
    one unit off in its last printed digit (``0.0844564`` for ``0.0844565``):
    what a computed float printed to a fixed number of digits does when a
    library's kernels round differently on another CPU. Integers, names and
    everything else must be equal."""
    want, got = FLOAT.split(expected), FLOAT.split(actual)
    wn, gn = FLOAT.findall(expected), FLOAT.findall(actual)
    if want != got or len(wn) != len(gn):
        return False
    return all(within_last_digit(w, g) for w, g in zip(wn, gn, strict=True))


def within_last_digit(shown: str, printed: str) -> bool:
    """``printed`` is within one unit of the last digit of the decimal ``shown`` (``0.0844564``: 1e-7)."""
    mantissa, _, exponent = shown.lower().partition("e")
    unit = 10.0 ** (int(exponent or 0) - len(mantissa.split(".", 1)[1]))
    return abs(float(printed) - float(shown)) <= unit * 1.0001


class Calls:
    """Counts the calls of public functions while active, on every thread,
    through the interpreter's profiling hook: nothing in tietool is replaced,
    so what runs is what ships. ``Calls(name=function, ...)``; with
    ``callers={name: "module/file.py"}`` only calls made from that file count."""

    def __init__(self, callers: dict[str, str] | None = None, **functions):
        self.codes = {f.__code__: name for name, f in functions.items()}
        self.callers = callers or {}
        from collections import Counter

        self.counts: Counter[str] = Counter()
        self.args: dict[str, list] = {name: [] for name in functions}

    def _profile(self, frame, event, arg):
        if event != "call":
            return
        name = self.codes.get(frame.f_code)
        if name is None:
            return
        caller = self.callers.get(name)
        if caller is not None and not frame.f_back.f_code.co_filename.endswith(caller):
            return
        self.counts[name] += 1
        self.args[name].append(dict(frame.f_locals))

    def __enter__(self) -> "Calls":
        import threading

        threading.setprofile(self._profile)
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc) -> None:
        import threading

        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]

    def __getitem__(self, name: str) -> int:
        return self.counts[name]


# -- running as an unprivileged user ---------------------------------------------------------

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def nobody_can_run(base: Path) -> tuple[dict | None, str]:
    """What a test that drops privileges (``setpriv`` to uid 65534) needs to
    run tietool from ``base``, a folder that user can enter: this tree's
    ``tietool`` package copied there (the checkout may sit in a folder only
    root can enter, as /root or a ``mktemp -d`` folder are), and keyword
    arguments for ``subprocess.run`` (``env`` with PYTHONPATH at the copy,
    ``cwd``). ``(None, why)`` when that user cannot run this interpreter
    with tietool's dependencies (an environment in a private folder)."""
    import shutil

    code = Path(base) / "code"
    if not (code / "tietool").exists():
        shutil.copytree(ROOT / "tietool", code / "tietool", ignore=shutil.ignore_patterns("__pycache__"))
        for p in [code, *code.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    env = {**os.environ, "PYTHONPATH": str(code)}
    env.pop("TIETOOL_DEBUG", None)
    probe = subprocess.run([*NOBODY, sys.executable, "-c", "import numpy, h5py, click, tietool"], cwd=base,
                           capture_output=True, text=True, env=env)
    if probe.returncode != 0:
        return None, (f"uid 65534 cannot run {sys.executable} with tietool's dependencies (is the environment in "
                      f"a folder only its owner can enter?): {probe.stderr.strip()[-300:]}")
    return {"env": env, "cwd": str(base)}, ""



def flag_variants(path: str, tmp: Path) -> dict[str, str]:
    """``{"saved": path, "flipped": ..., "deleted": ...}`` for a transformers checkpoint (a config.json with a
    model_type): copies in ``tmp`` whose config.json has the flag the class reads flipped (the tie declaration's
    ``flag_key``), and every ``tie_word_embeddings`` deleted (top level and one level down); the other files are
    copied. Any other checkpoint: ``{"saved": path}``."""
    from tietool.formats import open_checkpoint
    from tietool.ties.declaration import FLAG, tie_declaration

    with open_checkpoint(path) as ckpt:
        source, cfg = ckpt.config_source, ckpt.config
    out = {"saved": path}
    if not (source and os.path.basename(source) == "config.json" and isinstance(cfg, dict) and "model_type" in cfg):
        return out
    decl = tie_declaration(cfg)
    folder = os.path.dirname(source)
    for name in ("flipped", "deleted"):
        edited = json.loads(json.dumps(cfg))
        if name == "flipped":
            *parents, key = (decl.flag_key or FLAG).split(".")
            node = edited
            for p in parents:
                node = node.setdefault(p, {})
            node[key] = not decl.value if decl.value is not None else True
        else:
            edited.pop(FLAG, None)
            for v in edited.values():
                if isinstance(v, dict):
                    v.pop(FLAG, None)
        copy = tmp / name
        copy.mkdir(parents=True)
        for f in os.listdir(folder):
            if f != "config.json" and os.path.isfile(os.path.join(folder, f)):
                shutil.copyfile(os.path.join(folder, f), copy / f)  # check does not follow links out of a folder
        (copy / "config.json").write_text(json.dumps(edited, indent=2))
        out[name] = str(copy / os.path.relpath(path, folder)) if os.path.isfile(path) else str(copy)
    return out


# -- faults the tests produce (root on Linux) and what they must leave unchanged ---------------

def digest(path: Path) -> dict[str, str]:
    """name -> sha256 of a file, or of every file under a folder (relative paths)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    out = {}
    for p in files:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 22), b""):
                h.update(block)
        out[str(p.relative_to(path) if p != path else p.name)] = h.hexdigest()
    return out


def needs(what: str, ok: bool) -> None:
    """Skip loudly where a fault cannot be produced; under CI=true that is a failure."""
    if ok:
        return
    import pytest

    reason = f"CANNOT PRODUCE THIS FAULT HERE: {what} (needs root on Linux)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " -- CI must run these tests")
    pytest.skip(reason)


@contextlib.contextmanager
def tmpfs(size: str = "2m"):
    """A small tmpfs mounted on a new folder (for a full disk), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="tietool-tmpfs-"))
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(folder)],
                       capture_output=True, text=True) if shutil.which("mount") else None
    try:
        needs(f"mount -t tmpfs ({r.stderr.strip() if r else 'no mount'})", r is not None and r.returncode == 0)
        yield folder
    finally:
        if r is not None and r.returncode == 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
