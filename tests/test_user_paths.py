"""Errors name what the user named (issue 26): their source or ``-o``, never
an internal temporary (``.NAME.tietool-tmp-PID-XXXX``, a ``.keras``
archive's intermediate weights file), whatever stage a fault hits.

A full disk (a small tmpfs) is swept from no free space up to enough, in
small steps, so that the write fails at every stage of every kind of output
(header, tensor data, the second shard, the ``.keras`` archive's weights
member and its zip, a side file, the index, ``fix``'s config); a permission
failure is produced mid-run by taking the write permission off the
temporary folder through the library's ``progress`` seam, as a non-root user.
Mounting and ``setpriv`` need root (CI runs as root): skipped otherwise, a
failure under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tietool.cli.commands import cli
from tietool.errors import OutputError
from tietool.io.safe_output import name_for_user

from helpers import NOBODY, fixture, needs, nobody_can_run, tmpfs

TMP = ".tietool-tmp-"




def write_st(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, pos, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for k, a in tensors.items():
        b = np.ascontiguousarray(a, "<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [pos, pos + len(b)]}
        pos += len(b)
        blobs.append(b)
    raw = json.dumps(header).encode()
    raw += b" " * (-(8 + len(raw)) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("src")
    rng = np.random.default_rng(0)
    st = d / "model.safetensors"
    write_st(st, {f"layer{i}/kernel:0": rng.standard_normal((64, 256), dtype=np.float32) for i in range(6)})
    r = CliRunner().invoke(cli, ["convert", str(st), "--to", "h5", "-o", str(d / "model.h5")])
    assert r.exit_code == 0, r.stderr
    return {"st": st, "h5": d / "model.h5", "folder": fixture("tf/gpt2"), "keras": fixture("keras3/tied_revemb.keras")}


CASES = {
    "st->h5": ("st", ["convert", "--to", "h5"], "out.h5"),
    "h5->st": ("h5", ["convert", "--to", "safetensors"], "out.safetensors"),
    "h5->shards": ("h5", ["convert", "--to", "safetensors", "--shard-size", "150KB"], "out"),
    "folder->st": ("folder", ["convert", "--to", "safetensors"], "out"),
    "keras->st": ("keras", ["convert", "--to", "safetensors"], "out.safetensors"),
    "st->keras": (None, ["convert", "--to", "keras"], "back.keras"),  # the keras->st output, back
    "fix": (None, ["fix", "--head", "explicit"], "fixed"),
}


def _sweep(disk: Path, src: str, args: list[str], name: str) -> set[str]:
    seen = set()
    for leave_kb in [*range(0, 64, 4), *range(64, 700, 24)]:
        for p in disk.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        st = os.statvfs(disk)
        with open(disk / "filler", "wb") as fh:
            fh.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave_kb * 1024))
        out = disk / name
        r = CliRunner().invoke(cli, [args[0], src, *args[1:], "-o", str(out)])
        lines = r.stderr.strip("\n").splitlines()
        assert TMP not in r.stderr + r.stdout, r.stderr
        assert not [p for p in disk.iterdir() if TMP in p.name]
        if r.exit_code == 0:
            return seen
        assert r.exit_code == 2 and lines == [f"Error: {out}: cannot write (no space left on device)"], \
            (leave_kb, r.stderr)
        seen.add(leave_kb)
    raise AssertionError("never enough space")


@pytest.mark.parametrize("case", sorted(CASES))
def test_disk_full_at_every_stage_names_the_output(case, sources, tmp_path):
    key, args, name = CASES[case]
    if case == "st->keras":
        back = tmp_path / "k.safetensors"
        assert CliRunner().invoke(cli, ["convert", str(sources["keras"]), "--to", "safetensors",
                                        "-o", str(back)]).exit_code == 0
        src = str(back)
    elif case == "fix":
        src = str(fixture("pt/llama_tied"))
    else:
        src = str(sources[key])
    with tmpfs("1m") as disk:
        failed = _sweep(disk, src, args, name)
    assert len(failed) >= 2, failed  # the sweep met the fault more than once before it had room


def test_name_for_user_maps_temporaries():
    tmp, out = "/d/.out.keras.tietool-tmp-12-ab12cd34", "out.keras"
    exc = OutputError(f"cannot open {tmp}.tietool-tmp-weights.h5 (x)", f"{tmp}.tietool-tmp-weights.h5")
    name_for_user(exc, {tmp: out})
    assert str(exc) == "out.keras: cannot open out.keras (x)" and exc.filename == "out.keras"
    folder = "/d/.o.tietool-tmp-1-ff"
    err = FileNotFoundError(2, "No such file or directory", f"{folder}/model.safetensors")
    name_for_user(err, {folder: "o"})
    assert err.filename == "o/model.safetensors"
    other = RuntimeError(f"Unable to create file (unable to open file: name = '{folder}/model.h5', errno = 5)")
    name_for_user(other, {folder: "o"})
    assert str(other) == "Unable to create file (unable to open file: name = 'o/model.h5', errno = 5)"


PERMISSION_SCRIPT = r"""
import os, sys
from tietool.cli.exits import exit_code_for
from tietool.convert import convert
src, out, kind = sys.argv[1:4]
parent = os.path.dirname(out)
def progress(phase, done, total):
    for n in os.listdir(parent):  # take the write permission off the temporary (a folder) or its folder
        if ".tietool-tmp-" in n:
            os.chmod(os.path.join(parent, n) if kind == "folder" else parent, 0o555)
try:
    if kind == "folder":
        convert(src, "safetensors", out, shard_size="150KB", progress=progress)
    else:
        convert(src, "keras", out, progress=progress)
except Exception as exc:
    print(exit_code_for(exc), str(exc))
"""


@pytest.mark.privileges
@pytest.mark.parametrize("kind", ["folder", "keras"])
def test_permission_denied_mid_run_names_the_output(sources, kind):
    """As a non-root user, write permission taken away while the output is
    written: the error names the user's -o."""
    needs("setpriv to a non-root user", os.geteuid() == 0 and shutil.which("setpriv") is not None)
    base = Path(tempfile.mkdtemp(prefix="tietool-perm-"))
    try:
        base.chmod(0o755)
        w = base / "w"
        w.mkdir(mode=0o777)
        w.chmod(0o777)
        os.chown(w, 65534, 65534)
        if kind == "folder":
            src = base / "model.h5"
            shutil.copy(sources["h5"], src)
            out = w / "out"
        else:
            src = base / "k.safetensors"
            assert CliRunner().invoke(cli, ["convert", str(sources["keras"]), "--to", "safetensors",
                                            "-o", str(src)]).exit_code == 0
            out = w / "back.keras"
        src.chmod(0o644)
        nobody, why = nobody_can_run(base)  # this tree's tietool copied where uid 65534 can read it
        if nobody is None:
            pytest.skip(why)
        r = subprocess.run([*NOBODY, sys.executable, "-c", PERMISSION_SCRIPT, str(src), str(out), kind],
                           capture_output=True, text=True, timeout=120, **nobody)
        assert r.stdout.strip() == f"2 {out}: cannot write (permission denied)", r.stdout + r.stderr
        w.chmod(0o777)
        assert not out.exists()
        if kind == "keras":
            # the folder itself lost its write permission: nothing could be removed from it; the next run does
            r = CliRunner().invoke(cli, ["convert", str(fixture("pt/gpt2/model.safetensors")), "--to", "h5",
                                         "-o", str(w / "next.h5")])
            assert r.exit_code == 0, r.stderr
        assert not [p for p in w.iterdir() if TMP in p.name], os.listdir(w)
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", str(base)])
        shutil.rmtree(base, ignore_errors=True)
