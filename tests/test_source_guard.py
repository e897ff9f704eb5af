"""One source guard for every command that reads and writes (issue 26): a
source rewritten while ``convert`` or ``fix`` runs is exit 2, no output, and
nothing of the user's changed by tietool.

The change is made through the library's own seam, the ``progress``
callback both commands take (called as tensor bytes are written), so it
happens mid-write on any machine; one end-to-end case stops a real
``tietool fix --no-verify`` process mid-write (SIGSTOP) and rewrites its source.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tietool.audit.fix import fix
from tietool.cli.exits import exit_code_for
from tietool.convert import convert
from tietool.errors import CorruptCheckpointError
from tietool.io.sourceguard import SourceGuard

from helpers import ROOT, fixture, grow_llama_tied

TMP = ".tietool-tmp-"


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if TMP in p.name or ".tietool-old-" in p.name]


def rewrite_in_place(path: Path, how: str) -> None:
    """Other bytes in the tensor data (same size), a truncation, or a new file renamed over it."""
    size = path.stat().st_size
    if how == "in-place":
        with open(path, "r+b") as fh:
            fh.seek(size - 64)
            fh.write(b"\x55" * 32)
    elif how == "truncate":
        with open(path, "r+b") as fh:
            fh.truncate(size - 8)
    else:
        data = bytearray(path.read_bytes())
        data[-8:] = b"\xaa" * 8
        new = path.with_name(path.name + ".new")
        new.write_bytes(bytes(data))
        os.replace(new, path)


def changer(path: Path, how: str):
    """A progress callback that changes ``path`` the first time it is called."""
    done = []

    def progress(phase: str, n: int, total: int) -> None:
        if not done:
            done.append(phase)
            rewrite_in_place(path, how)
    return progress, done


@pytest.mark.parametrize("how", ["in-place", "truncate", "replaced"])
def test_fix_no_verify_source_rewritten(tmp_path, how):
    src = tmp_path / "llama"
    shutil.copytree(fixture("pt/llama_tied"), src)
    out = tmp_path / "fixed"
    progress, called = changer(src / "model.safetensors", how)
    with pytest.raises(CorruptCheckpointError) as err:
        fix(src, out, head="explicit", verify=False, progress=progress)
    assert called == ["write"]
    assert err.value.path == str(src / "model.safetensors") and "changed while reading" in err.value.message
    assert exit_code_for(err.value) == 2
    assert not out.exists() and not leftovers(tmp_path)
    # the other files of the user's folder are as they were
    for n in ("config.json", "generation_config.json", "ref_logits.npy"):
        assert (src / n).read_bytes() == (fixture("pt/llama_tied") / n).read_bytes()


@pytest.mark.parametrize("how", ["in-place", "truncate", "replaced"])
@pytest.mark.parametrize("case", ["st-to-h5", "h5-to-st", "names-pt"])
def test_convert_no_verify_source_rewritten(tmp_path, how, case):
    if case == "st-to-h5":
        src = tmp_path / "model.safetensors"
        shutil.copy(fixture("pt/gpt2/model.safetensors"), src)
        changed, out, kw = src, tmp_path / "out.h5", {"to": "h5"}
    else:
        src = tmp_path / "gpt2"
        shutil.copytree(fixture("tf/gpt2"), src)
        changed, out = src / "tf_model.h5", tmp_path / "out"
        kw = {"to": "safetensors", "names": "pt" if case == "names-pt" else "keras"}
    out.write_bytes(b"previous output") if case == "st-to-h5" else out.mkdir()
    progress, called = changer(changed, how)
    with pytest.raises(CorruptCheckpointError) as err:
        convert(src, out=out, verify=False, force=True, progress=progress, **kw)
    assert called == ["write"]
    assert err.value.path == str(changed) and "changed while reading" in err.value.message
    assert exit_code_for(err.value) == 2
    if case == "st-to-h5":
        assert out.read_bytes() == b"previous output"
    else:
        assert os.listdir(out) == []
    assert not leftovers(tmp_path)


def test_guard_sees_rewrite_with_times_set_back(tmp_path):
    """A rewrite that restores mtime (``touch -r``) still changes ctime and the sampled bytes."""
    p = tmp_path / "f.bin"
    p.write_bytes(bytes(range(256)) * 1024)
    st = p.stat()
    guard = SourceGuard([str(p)])
    with open(p, "r+b") as fh:
        fh.write(b"\x00\x01")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert guard.changed() == str(p)
    assert SourceGuard([str(p)]).changed() is None


# -- end to end: a real process stopped mid-write ---------------------------------------------

def test_fix_process_source_rewritten_exit_2(tmp_path):
    src = tmp_path / "llama"
    grow_llama_tied(src, 2 << 20)  # 128 MB embedding: fix --head explicit writes it twice
    out = tmp_path / "fixed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TIETOOL_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "tietool", "fix", str(src), "-o", str(out), "--head", "explicit",
                             "--no-verify"], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    stopped = False
    while time.monotonic() < deadline and not stopped:
        assert proc.poll() is None, proc.communicate()
        for p in tmp_path.glob(f".fixed{TMP}*/model.safetensors"):
            if p.stat().st_size >= 1 << 20:
                proc.send_signal(signal.SIGSTOP)
                stopped = True
        time.sleep(0.001)
    assert stopped, "no temporary output appeared"
    rewrite_in_place(src / "model.safetensors", "in-place")
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    lines = err.strip().splitlines()
    assert proc.returncode == 2, err
    assert lines == [f"Error: {src / 'model.safetensors'}: changed while reading (truncated or rewritten?); "
                     "nothing written"]
    assert not out.exists() and not leftovers(tmp_path)


def test_every_writer_through_atomic_output_is_guarded(tmp_path):
    """The guard lives in atomic_output: any command writing through it (run --output too) refuses
    to put an output in place when a source changed, and an error met meanwhile is reported as the change."""
    from tietool.io.safe_output import atomic_output
    from tietool.io.sourceguard import SourceChanged

    src = tmp_path / "src.bin"
    src.write_bytes(b"a" * 100_000)
    out = tmp_path / "out.bin"
    guard = SourceGuard.of([tmp_path])  # a folder stands for its files
    with pytest.raises(SourceChanged) as err, \
            atomic_output(str(out), folder=False, force=False, sources=[str(src)], guard=guard) as tmp:
        Path(tmp).write_bytes(b"half")
        rewrite_in_place(src, "in-place")
    assert err.value.path == str(src) and not out.exists() and not leftovers(tmp_path)
    src.write_bytes(b"b" * 100_000)
    with pytest.raises(SourceChanged), atomic_output(str(out), folder=False, force=False, sources=[str(src)]):
        rewrite_in_place(src, "truncate")
        raise ValueError("a short read, because the source was truncated")
    assert not out.exists() and not leftovers(tmp_path)
