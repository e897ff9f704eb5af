"""Nothing of the user's is ever lost (issue 10): every fault produced for real.

Output paths that are or hold the source, ``--force`` onto folders holding
other files, disk full (a small tmpfs), a read-only file system, permission
denied (a non-root user through ``setpriv``), real SIGINT/SIGTERM/SIGHUP and
SIGKILL sent to a real ``tietool convert`` working on a few-hundred-MB file, an
address-space limit (``prlimit``), and a source rewritten while it is read.
Every case checks: the exit status, exactly one stderr line with the expected
message, the source's bytes (hash), no temporary left, and a previous output
byte for byte.

Mounting and ``setpriv`` need root on Linux (CI runs as root). Where they are
not possible the case is skipped with the reason, and with CI=true that skip
is a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tietool.cli.commands import cli

from helpers import NOBODY, ROOT, Calls, digest, fixture, needs, nobody_can_run, tmpfs

TMP_MARK = ".tietool-tmp-"


# -- helpers --------------------------------------------------------------------------------


def temporaries(*folders: Path) -> list[str]:
    return [str(p) for f in folders if Path(f).is_dir() for p in Path(f).rglob("*")
            if TMP_MARK in p.name or ".tietool-old-" in p.name]


def one_line(code: int, stderr: str, needle: str, expected_code: int = 2) -> str:
    lines = stderr.strip("\n").splitlines()
    assert code == expected_code, stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    assert needle in lines[0], lines[0]
    print(f"exit {code}: {lines[0]}")  # the observed answer (pytest -rP shows it)
    return lines[0]


def tietool(*args, env=None, prefix=(), **kw) -> subprocess.Popen | subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}  # env may point PYTHONPATH elsewhere
    full_env.pop("TIETOOL_DEBUG", None)
    cmd = [*prefix, sys.executable, "-m", "tietool", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=120, **kw)


def invoke(*args) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, [str(a) for a in args])
    return r.exit_code, r.stdout, r.stderr




def fill(folder: Path, leave_kb: int) -> None:
    """Take all but ``leave_kb`` KB of the file system of ``folder``."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler", "wb") as fh:
        fh.write(b"\0" * max(0, free - leave_kb * 1024))


def world_folder() -> Path:
    """A folder a non-root user can enter (pytest's tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="tietool-perm-"))
    d.chmod(0o755)
    return d


def can_setpriv() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


def write_big_safetensors(path: Path, mb: int, parts: int = 4) -> None:
    """A real safetensors file of ``mb`` MB: ``parts`` float32 tensors, random-looking bytes."""
    rows, cols = mb * 256 // parts, 1024  # 4 KB rows
    nbytes = rows * cols * 4
    header = {"__metadata__": {"format": "pt"}}
    for i in range(parts):
        header[f"w{i}"] = {"dtype": "F32", "shape": [rows, cols], "data_offsets": [i * nbytes, (i + 1) * nbytes]}
    raw = json.dumps(header).encode()
    raw += b" " * (-(8 + len(raw)) % 8)
    block = np.random.default_rng(0).integers(0, 2**32, size=1 << 18, dtype=np.uint32).tobytes()  # 1 MB
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        for i in range(nbytes * parts >> 20):
            fh.write(block[i % 7:] + block[: i % 7])


# -- output paths: the source is never touched --------------------------------------------------

def test_issue_data_loss_example_refused(tmp_path):
    """The issue's example: a file source, -o its own folder, --force: it used
    to delete the folder (t5.h5 and notes.txt) with exit status 0."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(fixture("tf/t5/tf_model.h5"), models / "t5.h5")
    (models / "notes.txt").write_text("notes\n")
    before = digest(models)
    code, out, err = invoke("convert", models / "t5.h5", "--to", "safetensors", "--shard-size", "20KB",
                            "-o", models, "--force")
    one_line(code, err, f"Error: {models}: output folder holds the source {models / 't5.h5'}")
    assert out == "" and digest(models) == before and not temporaries(tmp_path)


def _source_cases(tmp_path: Path):
    """(description, argv, needle, folder whose bytes must not change)."""
    root = tmp_path / "x"
    models = root / "models"
    src = models / "gpt2_tf"
    shutil.copytree(fixture("tf/gpt2"), src)
    (src / "tokenizer.json").write_text("{}")
    (models / "notes.txt").write_text("mine\n")
    os.symlink(models, root / "link-to-models")
    os.link(src / "tf_model.h5", root / "hardlink.h5")
    (root / "sub").mkdir()
    (root / "prev").mkdir()
    os.link(src / "tf_model.h5", root / "prev" / "model.safetensors")
    yield ("folder source, -o its parent", ["convert", src, "--to", "safetensors", "-o", models, "--force"],
           f"{models}: output folder holds the source {src}", models)
    yield ("--names pt, -o the source's parent", ["convert", src, "--to", "safetensors", "--names", "pt", "-o", models,
                                                  "--force"], f"{models}: output folder holds the source", models)
    yield ("-o the source folder itself", ["convert", src, "--to", "safetensors", "-o", src, "--force"],
           "output would overwrite the source", models)
    weights = src / "tf_model.h5"
    yield ("-o the weights file", ["convert", weights, "--to", "safetensors", "-o", weights, "--force"],
           "output would overwrite the source", models)
    yield ("-o a side file (config.json)",
           ["convert", src, "--to", "safetensors", "-o", src / "config.json", "--force"],
           "output would overwrite the source", models)
    yield ("-o a side file (tokenizer.json), pt", ["convert", src, "--to", "safetensors", "--names", "pt", "-o",
                                                   src / "tokenizer.json", "--force"],
           "output would overwrite the source", models)
    yield ("-o through a symlink", ["convert", src, "--to", "safetensors", "-o", root / "link-to-models", "--force"],
           "output folder holds the source", models)
    yield ("-o through ..", ["convert", src, "--to", "safetensors", "-o", f"{root}/sub/../models/gpt2_tf/..",
                             "--force"], "output folder holds the source", models)
    yield ("-o a hard link of the weights", ["convert", src / "tf_model.h5", "--to", "safetensors",
                                             "-o", root / "hardlink.h5", "--force"],
           f"output would overwrite the source {src / 'tf_model.h5'} (the same file)", models)
    yield ("-o a folder holding a hard link of the weights",
           ["convert", src, "--to", "safetensors", "-o", root / "prev", "--force"],
           f"output folder holds the source {src / 'tf_model.h5'} (as model.safetensors)", models)
    yield ("-o the root holding everything", ["convert", weights, "--to", "safetensors", "--shard-size", "8KB",
                                              "-o", tmp_path, "--force"], "output folder holds the source", models)


def test_output_never_the_source(tmp_path):
    for what, argv, needle, keep in _source_cases(tmp_path):
        before = digest(keep)
        code, out, err = invoke(*argv)
        one_line(code, err, needle)
        assert out == "" and digest(keep) == before, what
        assert not temporaries(tmp_path), what


def test_force_replaces_only_checkpoint_files(tmp_path):
    src = fixture("tf/gpt2")
    for names in ("keras", "pt"):
        out = tmp_path / f"out-{names}"
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"old weights")
        (out / "thesis.tex").write_text("years of work")
        before = digest(out)
        code, _, err = invoke("convert", src, "--to", "safetensors", "--names", names, "-o", out, "--force")
        one_line(code, err, f"{out}: --force replaces only checkpoint files, and this folder holds thesis.tex")
        assert digest(out) == before and not temporaries(tmp_path)
        (out / "thesis.tex").unlink()
        (out / "sub").mkdir()
        code, _, err = invoke("convert", src, "--to", "safetensors", "--names", names, "-o", out, "--force")
        one_line(code, err, "this folder holds sub")
        (out / "sub").rmdir()
        # a folder of checkpoint files (weights, index, config, tokenizer, what this run writes) is replaced
        for n in ("tf_model.h5", "model.safetensors.index.json", "tokenizer.json", "ref_logits.npy"):
            (out / n).write_text("old")
        code, _, err = invoke("convert", src, "--to", "safetensors", "--names", names, "-o", out, "--force")
        assert code == 0, err
        assert (out / "model.safetensors").stat().st_size > 1000 and not (out / "tf_model.h5").exists()
    # one output file onto an existing folder; a folder output onto an existing file
    folder = tmp_path / "a-folder"
    folder.mkdir()
    (folder / "keep").write_text("keep")
    code, _, err = invoke("convert", src / "tf_model.h5", "--to", "safetensors", "-o", folder, "--force")
    one_line(code, err, f"{folder}: is a folder and this output is one file")
    a_file = tmp_path / "a-file"
    a_file.write_text("keep")
    code, _, err = invoke("convert", src, "--to", "safetensors", "-o", a_file, "--force")
    one_line(code, err, f"{a_file}: is a file and this output is a folder")
    assert a_file.read_text() == "keep" and (folder / "keep").read_text() == "keep"
    assert not temporaries(tmp_path)


def test_run_output_never_an_input(tmp_path):
    ids = tmp_path / "ids.npy"
    np.save(ids, np.array([[1, 2]], dtype=np.int32))
    before = ids.read_bytes()
    code, _, err = invoke("run", fixture("tf/gpt2"), "--mode", "embedding", "--input", ids, "--output", ids, "--force")
    one_line(code, err, f"{ids}: output would overwrite the source")
    (tmp_path / "d.npy").mkdir()
    code, _, err = invoke("run", fixture("tf/gpt2"), "--mode", "embedding", "--ids", "1", "--output",
                          tmp_path / "d.npy", "--force")
    one_line(code, err, "is a folder and this output is one file")
    assert ids.read_bytes() == before and not temporaries(tmp_path)


# -- disk full, read-only, permissions -------------------------------------------------------------

def test_disk_full_every_direction():
    """A full tmpfs while writing: safetensors -> HDF5 (HDF5 fails inside its
    own flush: it used to be exit 3 "internal error: RuntimeError: Disable
    slist on flush dest failure failed"), HDF5 -> safetensors, --names pt.
    The previous output, on the same full disk, stays as it was."""
    cases = [
        (fixture("pt/gpt2"), ["--to", "h5"], 12),
        (fixture("pt/gpt2"), ["--to", "h5"], 0),
        (fixture("tf/gpt2"), ["--to", "safetensors"], 12),
        (fixture("tf/t5"), ["--to", "safetensors", "--names", "pt"], 8),
    ]
    with tmpfs("2m") as disk:
        for src, args, leave_kb in cases:
            before_src = digest(src)
            out = disk / "out"
            if out.exists():
                shutil.rmtree(out)
            out.mkdir()
            (out / "config.json").write_text('{"previous": true}')
            (out / "model.safetensors").write_bytes(b"previous output")
            previous = digest(out)
            with contextlib.suppress(FileNotFoundError):
                (disk / "filler").unlink()
            fill(disk, leave_kb)
            code, _, err = invoke("convert", src, *args, "-o", out, "--force")
            one_line(code, err, f"Error: {out}: cannot write (no space left on device)")
            assert digest(out) == previous and digest(src) == before_src and not temporaries(disk), (args, leave_kb)


def test_file_size_limit():
    """RLIMIT_FSIZE (a per-process quota of sorts): EFBIG in plain words."""
    with tmpfs("2m") as disk:
        out = disk / "m.h5"
        out.write_bytes(b"previous")
        r = tietool("convert", fixture("pt/gpt2/model.safetensors"), "--to", "h5", "-o", out, "--force",
                    prefix=["prlimit", "--fsize=8192"])
        one_line(r.returncode, r.stderr, f"Error: {out}: cannot write (file too large)")
        assert out.read_bytes() == b"previous" and not temporaries(disk)


def test_read_only_file_system():
    with tmpfs("2m") as disk:
        out = disk / "out"
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"previous output")
        r = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True)
        needs(f"remount read-only ({r.stderr.strip()})", r.returncode == 0)
        for args in (["--to", "safetensors"], ["--to", "safetensors", "--names", "pt"]):
            code, _, err = invoke("convert", fixture("tf/gpt2"), *args, "-o", out, "--force")
            one_line(code, err, f"Error: {out}: cannot write (read-only file system)")
            assert (out / "model.safetensors").read_bytes() == b"previous output"
        code, _, err = invoke("convert", fixture("pt/gpt2"), "--to", "h5", "-o", disk / "new")
        one_line(code, err, f"Error: {disk / 'new'}: cannot write (read-only file system)")


def as_nobody(base: Path) -> dict:
    """Keyword arguments for :func:`tietool` to run it as uid 65534 from
    ``base`` (helpers.nobody_can_run: this tree's tietool copied there);
    skips, with the reason, when that user cannot run this interpreter."""
    needs("setpriv to a non-root user", can_setpriv())
    kwargs, why = nobody_can_run(base)
    if kwargs is None:
        pytest.skip(why)
    return {"prefix": NOBODY, "env": {"PYTHONPATH": kwargs["env"]["PYTHONPATH"]}, "cwd": base}


@pytest.mark.privileges
def test_permissions_both_ways():
    """As a non-root user: an output folder it may not write, an unreadable
    SRC, an unreadable side file in a source folder (that file's problem,
    not the output's), a file behind a folder it cannot enter. Everything
    that user reads is copied into a folder it can enter first (issue 24)."""
    needs("setpriv to a non-root user", can_setpriv())
    base = world_folder()
    try:
        nobody = as_nobody(base)
        src = base / "gpt2"
        shutil.copytree(fixture("tf/gpt2"), src)
        st = base / "model.safetensors"
        shutil.copyfile(fixture("pt/gpt2/model.safetensors"), st)
        for p in [src, *src.iterdir(), st]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        locked = base / "locked"  # root's, 755: nobody may not create anything in it
        locked.mkdir(mode=0o755)
        (locked / "model.h5").write_bytes(b"previous")
        before = digest(src)
        r = tietool("convert", st, "--to", "h5", "-o", locked / "model.h5", "--force", **nobody)
        one_line(r.returncode, r.stderr, f"Error: {locked / 'model.h5'}: cannot write (permission denied)")
        r = tietool("convert", src, "--to", "safetensors", "-o", locked / "st", **nobody)
        one_line(r.returncode, r.stderr, f"Error: {locked / 'st'}: cannot write (permission denied)")
        assert (locked / "model.h5").read_bytes() == b"previous"

        writable = base / "w"
        writable.mkdir(mode=0o777)
        writable.chmod(0o777)
        (src / "tf_model.h5").chmod(0o600)
        for cmd in (["convert", src / "tf_model.h5", "--to", "safetensors", "-o", writable / "a.safetensors"],
                    ["inspect", src / "tf_model.h5"], ["verify-tie", src / "tf_model.h5"]):
            r = tietool(*cmd, **nobody)
            one_line(r.returncode, r.stderr, f"Error: {src / 'tf_model.h5'}: cannot read (permission denied)")
        (src / "tf_model.h5").chmod(0o644)
        (src / "ref_logits.npy").chmod(0o600)
        for names in ("keras", "pt"):
            r = tietool("convert", src, "--to", "safetensors", "--names", names, "-o", writable / "out", **nobody)
            one_line(r.returncode, r.stderr, f"Error: {src / 'ref_logits.npy'}: cannot read (permission denied)")
        assert digest(src) == before and os.listdir(writable) == [] and not temporaries(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.privileges
def test_file_behind_a_folder_it_cannot_enter():
    """A file that exists behind a folder the user cannot enter (stat fails
    with EACCES) is a permission problem, not a missing file; a path that
    does not exist is still "no such file or folder"."""
    base = world_folder()
    try:
        nobody = as_nobody(base)
        private = base / "private"
        shutil.copytree(fixture("tf/gpt2"), private / "gpt2")
        private.chmod(0o700)  # root's: uid 65534 cannot enter it
        target = private / "gpt2" / "tf_model.h5"
        for cmd in (["inspect", target], ["verify-tie", private / "gpt2"], ["diff", target, target],
                    ["convert", target, "-o", base / "x.safetensors"]):
            r = tietool(*cmd, **nobody)
            one_line(r.returncode, r.stderr, f"Error: {cmd[1]}: cannot read (permission denied)")
        r = tietool("check", private / "gpt2", base / "missing", **nobody)
        assert r.returncode == 2, r.stderr
        assert f"Error: {private / 'gpt2'}: cannot read (permission denied)" in r.stderr.splitlines()
        assert f"Error: {base / 'missing'}: no such file or folder" in r.stderr.splitlines()
        assert not (base / "x.safetensors").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- signals, SIGKILL, a source that changes -------------------------------------------------------

@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[Path, dict]:
    src = tmp_path_factory.mktemp("big") / "big.safetensors"
    write_big_safetensors(src, 256)
    return src, digest(src)


def _start(args, out_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TIETOOL_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "tietool", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _stop_mid_write(proc: subprocess.Popen, out_dir: Path, min_bytes: int = 1 << 20) -> None:
    """Wait until the temporary output exists and holds ``min_bytes``, then
    SIGSTOP the writer: whatever the machine's speed, it is stopped mid-write."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"finished before it could be stopped: {proc.communicate()}"
        for t in temporaries(out_dir):
            p = Path(t)
            files = [p] if p.is_file() else list(p.glob("*"))
            with contextlib.suppress(OSError):
                if sum(f.stat().st_size for f in files) >= min_bytes:
                    proc.send_signal(signal.SIGSTOP)
                    return
        time.sleep(0.001)
    raise AssertionError("no temporary output appeared")


def test_signals_leave_previous_output(tmp_path, big):
    src, src_digest = big
    cases = [
        (signal.SIGINT, 130, ["--to", "h5"], "big.h5"),
        (signal.SIGTERM, 143, ["--to", "h5"], "big.h5"),
        (signal.SIGHUP, 129, ["--to", "safetensors", "--shard-size", "100MB"], "big-folder"),
    ]
    # h5 output from a safetensors source; a sharded folder output from an HDF5 source
    h5src = tmp_path / "src.h5"
    code, _, err = invoke("convert", src, "--to", "h5", "-o", h5src, "--no-verify")
    assert code == 0, err
    for sig, code, args, name in cases:
        source = h5src if "--shard-size" in args else src
        out = tmp_path / name
        if name.endswith("folder"):
            out.mkdir(exist_ok=True)
            (out / "model.safetensors").write_bytes(b"previous output")
        else:
            out.write_bytes(b"previous output")
        previous = digest(out)
        proc = _start(["convert", source, *args, "-o", out, "--force"], tmp_path)
        _stop_mid_write(proc, tmp_path)
        proc.send_signal(sig)
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=60)
        one_line(proc.returncode, err, f"Error: interrupted by {sig.name}: nothing written", expected_code=code)
        assert digest(out) == previous and not temporaries(tmp_path), sig.name
    assert digest(src) == src_digest


def make_big_tf_gpt2(dst: Path, vocab: int) -> None:
    """The transformers TF GPT-2 fixture with its tied embedding grown to
    ``vocab`` x 16 (a real tf_model.h5 layout, for --names pt)."""
    import h5py

    shutil.copytree(fixture("tf/gpt2"), dst)
    name = "transformer/tfgpt2lm_head_model/transformer/wte/embeddings:0"
    with h5py.File(dst / "tf_model.h5", "r+") as f:
        del f[name]
        ds = f.create_dataset(name, shape=(vocab, 16), dtype="<f4")
        block = np.random.default_rng(0).standard_normal((1 << 16, 16), dtype=np.float32)
        for i in range(0, vocab, 1 << 16):
            ds[i:i + (1 << 16)] = block[: min(1 << 16, vocab - i)]
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(vocab_size=vocab, bos_token_id=0, eos_token_id=0)
    (dst / "config.json").write_text(json.dumps(cfg))


def test_signal_names_pt(tmp_path):
    """--names pt under SIGTERM: the previous output folder stays."""
    src = tmp_path / "gpt2_big"
    make_big_tf_gpt2(src, 1 << 20)  # 64 MB embedding
    before = digest(src)
    out = tmp_path / "gpt2-pt"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"previous output")
    (out / "config.json").write_text("{}")
    previous = digest(out)
    proc = _start(["convert", src, "--to", "safetensors", "--names", "pt", "-o", out, "--force"], tmp_path)
    _stop_mid_write(proc, tmp_path)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    one_line(proc.returncode, err, "Error: interrupted by SIGTERM: nothing written", expected_code=143)
    assert digest(out) == previous and digest(src) == before and not temporaries(tmp_path)


def test_sigkill_leftover_removed_by_next_run(tmp_path, big):
    src, src_digest = big
    proc = _start(["convert", src, "--to", "h5", "-o", tmp_path / "big.h5"], tmp_path)
    _stop_mid_write(proc, tmp_path)
    proc.kill()
    proc.communicate()
    left = temporaries(tmp_path)
    assert len(left) == 1 and f"{TMP_MARK}{proc.pid}-" in left[0]
    r = tietool("convert", fixture("pt/gpt2/model.safetensors"), "--to", "h5", "-o", tmp_path / "small.h5")
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [f"tietool: removed stale temporary {left[0]} "
                                     f"(its process {proc.pid} no longer exists)"]
    assert not temporaries(tmp_path) and not (tmp_path / "big.h5").exists()
    assert digest(src) == src_digest


@pytest.mark.parametrize("change", ["truncate", "rewrite"])
def test_source_changed_while_reading(tmp_path, change):
    src = tmp_path / "src.safetensors"
    write_big_safetensors(src, 128)
    out = tmp_path / "out.h5"
    out.write_bytes(b"previous output")
    proc = _start(["convert", src, "--to", "h5", "-o", out, "--force"], tmp_path)
    _stop_mid_write(proc, tmp_path)
    size = src.stat().st_size
    with open(src, "r+b") as fh:
        if change == "truncate":
            fh.truncate(size // 2)
        else:  # same size, other bytes, in place
            fh.seek(size - (64 << 20))
            fh.write(b"\x55" * (1 << 20))
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    one_line(proc.returncode, err, f"Error: {src}: changed while reading")
    assert out.read_bytes() == b"previous output" and not temporaries(tmp_path)


# -- low memory --------------------------------------------------------------------------------------

def test_out_of_memory_one_line(tmp_path):
    """Under prlimit --as=160000000 the modules cannot even be mapped: one
    line naming the file (it used to be a 49-line traceback)."""
    needs("prlimit", shutil.which("prlimit") is not None)
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"previous output")
    for args in (["--to", "safetensors"], ["--to", "safetensors", "--names", "pt"]):
        r = tietool("convert", fixture("tf/gpt2"), *args, "-o", out, "--force", prefix=["prlimit", "--as=160000000"])
        one_line(r.returncode, r.stderr, f"Error: {fixture('tf/gpt2')}: out of memory")
        assert (out / "model.safetensors").read_bytes() == b"previous output" and not temporaries(tmp_path)


# -- durability ---------------------------------------------------------------------------------------

def test_fsync_file_and_folder(tmp_path, monkeypatch):
    """Every written file, the temporary folder and the folder that receives
    the rename are fsynced (each fsync observed by the inode it reached)."""
    from tietool.convert import convert

    synced: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def spy(fd):
        st = os.fstat(fd)
        synced.append((st.st_dev, st.st_ino))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    convert(fixture("tf/gpt2"), "safetensors", out=tmp_path / "out")
    convert(fixture("pt/gpt2/model.safetensors"), "h5", out=tmp_path / "one.h5")

    def ino(p):
        st = os.stat(p)
        return st.st_dev, st.st_ino

    for p in [*(tmp_path / "out").iterdir(), tmp_path / "out", tmp_path / "one.h5", tmp_path]:
        assert ino(p) in synced, p


def test_no_fsync_skips_only_the_waiting(tmp_path, monkeypatch):
    """``--no-fsync`` (``fsync=False``): no fsync and no early writeback
    (``sync_file_range``), and the same bytes as a durable conversion; the
    output is still renamed into place whole, and the summary says it was
    not fsynced."""
    from tietool.convert import convert
    from tietool.io import fastio

    calls: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])  # the system call
    big = tmp_path / "big.safetensors"  # one tensor over fastio.WRITEBACK_STEP, so writeback would start
    n = fastio.WRITEBACK_STEP // 4 + 1024
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    header += b" " * (-len(header) % 8)
    big.write_bytes(struct.pack("<Q", len(header)) + header + os.urandom(4 * n))
    for src, to, name in ((fixture("tf/gpt2"), "safetensors", "gpt2"), (str(big), "h5", "big.h5")):
        calls.clear()
        with Calls(writeback=fastio.start_writeback) as wb:
            fast = convert(src, to, out=tmp_path / f"fast-{name}", fsync=False)
        assert calls == [] and wb["writeback"] == 0 and not fast.fsynced and fast.to_json()["fsynced"] is False
        with Calls(writeback=fastio.start_writeback) as wb:
            durable = convert(src, to, out=tmp_path / f"durable-{name}")
        assert "fsync" in calls and durable.fsynced
        assert wb["writeback"]  # the durable route starts writing back as it copies
        fast_files = sorted(p.relative_to(tmp_path / f"fast-{name}") for p in (tmp_path / f"fast-{name}").rglob("*")) \
            if (tmp_path / f"fast-{name}").is_dir() else [None]
        for rel in fast_files:
            a = tmp_path / f"fast-{name}" / rel if rel else tmp_path / f"fast-{name}"
            b = tmp_path / f"durable-{name}" / rel if rel else tmp_path / f"durable-{name}"
            assert a.read_bytes() == b.read_bytes(), rel
    r = tietool("convert", fixture("tf/gpt2"), "--to", "safetensors", "-o", tmp_path / "cli", "--no-fsync")
    assert r.returncode == 0 and ", verified, not fsynced (--no-fsync)" in r.stdout, r.stdout + r.stderr
    assert not temporaries(tmp_path)


def test_keras_output_intermediate_is_not_written_back(tmp_path, monkeypatch):
    """A .keras output's weights file is an intermediate (zipped, then
    removed): it is not written back to disk; the archive is fsynced."""
    from tietool.convert import convert
    from tietool.io import fastio

    st = tmp_path / "m.safetensors"
    convert(fixture("keras3/tied_revemb.keras"), "safetensors", out=st)
    with Calls(writeback=fastio.start_writeback) as started:
        convert(str(st), "keras", out=tmp_path / "m.keras")
    assert started["writeback"] == 0 and (tmp_path / "m.keras").is_file()


def test_previous_folder_moved_aside_is_put_back(tmp_path):
    """Where the file system cannot exchange two folders atomically, the old
    output is renamed aside before the new one goes in; a writer killed
    between the two renames leaves it aside, and the next run puts it back."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "out"
    aside = tmp_path / f".out.tietool-old-{dead.pid}-0badcafe"
    aside.mkdir()
    (aside / "model.safetensors").write_bytes(b"previous output")
    r = tietool("convert", fixture("tf/gpt2"), "--to", "safetensors", "-o", out)
    assert r.returncode == 2 and r.stderr.splitlines() == [
        f"tietool: put back {out} (moved aside by process {dead.pid}, which no longer exists)",
        f"Error: {out}: output exists (use --force to overwrite)"], r.stderr
    assert (out / "model.safetensors").read_bytes() == b"previous output" and not aside.exists()


def test_run_output_disk_full():
    """run --output on a full disk. ``run`` writes through the same
    ``save_npy_atomically`` the CLI calls once TensorFlow computed the result;
    called here directly, so that the test needs no TensorFlow start-up (the
    CLI's mapping of this error to one line is the one tested above)."""
    from tietool.errors import OutputError
    from tietool.layer.run import save_npy_atomically

    with tmpfs("1m") as disk:
        out = disk / "out.npy"
        out.write_bytes(b"previous output")
        fill(disk, 0)
        with pytest.raises(OutputError) as exc:
            save_npy_atomically(np.zeros((2, 5, 64), np.float32), str(out), force=True,
                                sources=[str(fixture("tf/gpt2"))])
        assert str(exc.value) == f"{out}: cannot write (no space left on device)"
        assert out.read_bytes() == b"previous output" and not temporaries(disk)
