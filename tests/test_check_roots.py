"""`check` stays inside the roots it was given (issue 26): a symbolic link
leading outside the folder scanned (or outside the Hugging Face cache that
holds it) is reported and not followed; a model folder whose links lead
nowhere is a row of its own. The cache's own links, from ``snapshots/`` to
``blobs/``, keep working (tests/test_check_fix.py has the cache layout)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from tietool.audit.check import check_paths
from tietool.cli.commands import cli

from helpers import ROOT, fixture

MODEL = "pt/llama_tied"


def outside_config(tmp_path: Path) -> Path:
    """A config elsewhere on the system that, if read, would change the verdict (untied, no head stored)."""
    d = tmp_path / "system"
    d.mkdir(exist_ok=True)
    cfg = json.loads((fixture(MODEL) / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    cfg["SECRET_MARKER"] = "do not read me"
    p = d / "secret.json"
    p.write_text(json.dumps(cfg))
    return p


def model_with_link(root: Path, name: str, target: Path) -> Path:
    m = root / "model"
    shutil.copytree(fixture(MODEL), m)
    (m / name).unlink()
    (m / name).symlink_to(target)
    return m


def rows(report) -> dict[str, tuple]:
    return {os.path.basename(c.path): (c.ok, c.error) for c in report.checkpoints}


def test_config_link_outside_is_reported_not_read(tmp_path):
    root = tmp_path / "scan"
    root.mkdir()
    secret = outside_config(tmp_path)
    model_with_link(root, "config.json", secret)
    report = check_paths([str(root)])
    ((ok, error),) = rows(report).values()
    assert ok is None and error.startswith("refused: config.json -> ") and str(secret) in error
    assert "outside the folder scanned" in error
    r = CliRunner().invoke(cli, ["check", str(root), "--json"])
    assert "SECRET_MARKER" not in r.stdout and "do not read me" not in r.stdout


def test_weights_link_outside_is_reported(tmp_path):
    root = tmp_path / "scan"
    root.mkdir()
    elsewhere = tmp_path / "elsewhere.safetensors"
    shutil.copy(fixture(MODEL) / "model.safetensors", elsewhere)
    model_with_link(root, "model.safetensors", elsewhere)
    ((ok, error),) = rows(check_paths([str(root)])).values()
    assert ok is None and error.startswith("refused: model.safetensors -> ")


def test_link_to_a_fifo_outside_is_never_opened(tmp_path):
    """A config.json linking to a named pipe outside: opening it would block forever."""
    root = tmp_path / "scan"
    root.mkdir()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    model_with_link(root, "config.json", fifo)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "tietool", "check", str(root)], capture_output=True, text=True,
                       env=env, timeout=60)
    assert "refused: config.json" in r.stdout + r.stderr, r.stdout + r.stderr


def test_links_inside_the_root_are_followed(tmp_path):
    root = tmp_path / "scan"
    (root / "store").mkdir(parents=True)
    shutil.copy(fixture(MODEL) / "config.json", root / "store" / "cfg.json")
    model_with_link(root, "config.json", root / "store" / "cfg.json")
    ((ok, error),) = rows(check_paths([str(root)])).values()
    assert ok is True and error is None


def _cache(tmp_path: Path) -> tuple[Path, Path]:
    """A Hugging Face cache with one model, its snapshot's files linking into blobs/ (relative links)."""
    hub = tmp_path / "hub"
    repo = hub / "models--org--llama"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / ("c" * 40)
    snap.mkdir(parents=True)
    for f in fixture(MODEL).iterdir():
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, blob)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    return hub, snap


def test_cache_links_work_from_the_hub_and_from_a_snapshot(tmp_path):
    hub, snap = _cache(tmp_path)
    for path in (hub, snap, snap / "model.safetensors"):
        (c,) = check_paths([str(path)]).checkpoints
        assert c.ok is True and c.error is None and c.model == "org/llama@cccccccccccc", (path, c.error)


def test_cache_link_outside_the_cache_is_reported(tmp_path):
    hub, snap = _cache(tmp_path)
    secret = outside_config(tmp_path)
    (snap / "config.json").unlink()
    (snap / "config.json").symlink_to(secret)  # absolute, out of the cache
    for path in (hub, snap, snap / "model.safetensors"):
        (c,) = check_paths([str(path)]).checkpoints
        assert c.ok is None and c.error.startswith("refused: config.json -> "), (path, c.error)


def test_dangling_links_are_a_row_of_their_own(tmp_path):
    hub, snap = _cache(tmp_path)
    _, other = _cache(tmp_path / "second")
    shutil.move(str(other.parent.parent), str(hub / "models--org--gone"))
    gone = hub / "models--org--gone"
    shutil.rmtree(gone / "blobs")  # the blobs deleted: every link of the snapshot dangles
    report = check_paths([str(hub)])
    by_model = {c.model: (c.ok, c.error) for c in report.checkpoints}
    assert by_model["org/llama@cccccccccccc"] == (True, None)
    ok, error = by_model["org/gone@cccccccccccc"]
    assert ok is None and error.startswith("unreadable: ") and "link(s) to nothing" in error
    assert "config.json" in error and "model.safetensors" in error
    r = CliRunner().invoke(cli, ["check", str(hub)])
    assert "link(s) to nothing" in r.stdout + r.stderr


def test_a_dangling_path_named(tmp_path):
    link = tmp_path / "model.safetensors"
    link.symlink_to(tmp_path / "nowhere.safetensors")
    (c,) = check_paths([str(link)]).checkpoints
    assert c.ok is None and c.error == "unreadable: a symbolic link to nothing"
