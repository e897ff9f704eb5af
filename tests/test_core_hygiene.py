"""Library hygiene: tietool's own bugs are not reported as corrupt files,
and importing tietool changes nothing in the host process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tietool.errors import CorruptCheckpointError
from tietool.io.h5safe import SafeH5

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
BERT = FIXTURES / "tf/bert_mlm/tf_model.h5"


def test_h5py_errors_become_corrupt_file():
    h5 = SafeH5(str(BERT), "bert")
    try:
        with pytest.raises(CorruptCheckpointError, match="cannot read /nope"):
            h5.guard("/nope", lambda: h5.file["nope"])
    finally:
        h5.close()


@pytest.mark.parametrize("bug", [TypeError, KeyError, ValueError, OSError])
def test_a_bug_inside_a_guarded_read_is_not_a_corrupt_file(bug):
    h5 = SafeH5(str(BERT), "bert")

    def buggy():
        list(h5.file.keys())  # h5py ran fine; then tietool's own code fails
        raise bug("a bug in tietool")

    try:
        with pytest.raises(bug, match="a bug in tietool"):
            h5.guard("root group", buggy)
    finally:
        h5.close()


def test_a_bug_in_a_callback_h5py_runs_is_not_a_corrupt_file():
    import h5py

    h5 = SafeH5(str(BERT), "bert")

    def visit(name: bytes) -> None:
        raise TypeError("a bug in tietool's visitor")

    try:
        with pytest.raises(TypeError, match="visitor"):
            h5.guard("object headers", lambda: h5py.h5o.visit(h5.file.id, visit))
    finally:
        h5.close()


def test_a_bug_in_a_reader_exits_3_not_2(monkeypatch):
    """Through the CLI: a tietool bug met while reading an HDF5 file is an
    internal error (exit 3), not "corrupt file" (exit 2)."""
    from tietool.cli.commands import cli
    from tietool.io import h5walk

    def broken_key(name: str) -> list:
        raise TypeError("natural_key broke")

    monkeypatch.setattr(h5walk, "natural_key", broken_key)
    res = CliRunner().invoke(cli, ["inspect", str(BERT), "--json"])
    assert res.exit_code == 3, res.output
    doc = json.loads(res.stdout)
    assert doc["error"]["exit_code"] == 3 and "internal error: TypeError: natural_key broke" in doc["error"]["message"]


IMPORT_CHECK = r"""
import os, sys
env = dict(os.environ)
fd2 = os.fstat(2)
import tietool, tietool.formats, tietool.cli.commands, tietool.io.h5safe
import tietool.ties.verify, tietool.summary, tietool.cli.render
import tietool.layer.run, tietool.layer.pair, tietool.audit.check, tietool.diff.checkpoints, tietool.audit.fix
from tietool.formats import open_checkpoint
with open_checkpoint(sys.argv[1]) as ckpt:
    ckpt.read(next(iter(ckpt.tensors)))
after = os.fstat(2)
assert dict(os.environ) == env, {k: os.environ.get(k) for k in set(env) ^ set(os.environ)}
assert (fd2.st_dev, fd2.st_ino) == (after.st_dev, after.st_ino), "fd 2 was redirected"
print("unchanged")
"""


def test_import_and_open_change_no_environment_and_no_fd():
    res = subprocess.run([sys.executable, "-c", IMPORT_CHECK, str(BERT)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "unchanged"


def test_a_plugin_filter_is_refused_without_asking_hdf5(monkeypatch):
    """h5z.filter_avail() makes HDF5 search HDF5_PLUGIN_PATH (and dlopen what
    it finds): tietool must not call it for a filter that is not built in."""
    from tietool.io import h5safe

    def no_lookup(code: int) -> bool:
        raise AssertionError(f"HDF5 was asked about filter {code}")

    monkeypatch.setattr(h5safe.h5py.h5z, "filter_avail", no_lookup)
    assert h5safe._filter_available(32008) is False
