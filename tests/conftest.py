"""pytest wiring only: the --update-golden option and session fixtures that
build things lazily, nothing at collection (the hostile corpus; the torch +
transformers 5 interpreter). Helpers tests import are in tests/helpers.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers import UPDATE_GOLDEN_ENV


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/* from the current output instead of comparing "
                          f"(same as {UPDATE_GOLDEN_ENV}=1)")


def pytest_configure(config):
    if config.getoption("--update-golden"):
        os.environ[UPDATE_GOLDEN_ENV] = "1"


class HostileCorpus:
    """tests/hostile_corpus.py written once per session under ``workdir/corpus``;
    ``cases``: ``{name: path relative to workdir}``; ``expect_text``: what each
    case's error line must contain."""

    def __init__(self, workdir: Path):
        import hostile_corpus as hc

        self.workdir = workdir
        self.root = workdir / "corpus"
        built = hc.build_corpus(self.root)
        self.cases = {name: str(Path(path).relative_to(workdir)) for name, path in built}
        self.expect_text = dict(hc.EXPECT_TEXT)
        self.expect_ok = set(hc.EXPECT_OK)


@pytest.fixture
def fresh_clone(tmp_path, monkeypatch) -> Path:
    """The working folder as a fresh clone of the repository looks to the
    README's and the help's examples: a copy of fixtures/, out/ (shipped
    empty, its contents ignored) and .gitignore, committed to a git repository
    so that ``git status --porcelain`` shows whatever an example leaves that
    git does not ignore (a copy, not a link: an example writing into fixtures/
    shows up too, and the real ones are never touched)."""
    from helpers import ROOT

    root = tmp_path / "tietool"
    shutil.copytree(ROOT / "fixtures", root / "fixtures", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "out", root / "out")
    shutil.copyfile(ROOT / ".gitignore", root / ".gitignore")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "fresh clone"], cwd=root, check=True)
    monkeypatch.chdir(root)
    monkeypatch.delenv("TIETOOL_DEBUG", raising=False)
    return root


@pytest.fixture(scope="session")
def hostile_corpus(tmp_path_factory) -> HostileCorpus:
    return HostileCorpus(tmp_path_factory.mktemp("hostile"))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` run only when asked for: ``pytest -m slow``."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with `python -m pytest -m slow`")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# -- the torch 2.13 + transformers 5 interpreter ------------------------------------------
# The interpreter the interop tests (and the README's transformers 5 example) load outputs
# in, the session fixture ``pt_python``:
#
# * ``TIETOOL_PT_PYTHON=/path/to/python``, else
# * a venv created once under ``~/.cache/tietool-test/venv-pt`` (override the
#   folder with ``TIETOOL_PT_VENV``) with ``pip install torch==2.13.0
#   "transformers>=5,<6" safetensors``, reused afterwards. The build is
#   announced on the terminal (what, where, how big) and pip's progress is
#   shown there, pytest's output capture notwithstanding: about 1.2 GB and a
#   minute or more on a fast connection.
#
# Skipped, with the reason, only when that environment cannot be created.
REQUIREMENTS = ["torch==2.13.0", "transformers>=5,<6", "safetensors"]
CHECK = "import torch, transformers, safetensors; assert transformers.__version__.split('.')[0] == '5'"


def _works(python: str) -> bool:
    try:
        return subprocess.run([python, "-c", CHECK], capture_output=True, timeout=300).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


ANNOUNCE = """
tietool tests: building the torch + transformers 5 environment the interop tests load outputs in
  what:  a virtual environment with pip install {reqs}
  where: {folder}
  size:  about 1.2 GB on disk (torch is most of it), plus pip's download cache; a minute or more
  once:  later runs reuse it; to use an existing one instead: TIETOOL_PT_PYTHON=/path/to/bin/python
"""


def _create_venv(folder: Path, show) -> tuple[str | None, str]:
    """Build the venv in a temporary folder beside ``folder`` and rename it into
    place, so an interrupted build is never reused. ``show``: a context
    manager under which the subprocesses' output reaches the terminal."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".building-", dir=folder.parent))
    try:
        subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, capture_output=True, timeout=300)
        with show():
            sys.stderr.write(ANNOUNCE.format(reqs=" ".join(f"'{r}'" for r in REQUIREMENTS), folder=folder))
            sys.stderr.flush()
            # pip's own progress (downloads, installs) goes straight to the terminal
            res = subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", *REQUIREMENTS],
                                 stdout=2, timeout=3600)
        if res.returncode != 0:
            return None, f"pip install {' '.join(REQUIREMENTS)} failed (exit {res.returncode}; its output is above)"
        if folder.exists():
            shutil.rmtree(folder)
        # bin/python finds its site-packages through pyvenv.cfg beside it, so the renamed venv works
        # (only console-script shebangs keep the old path; the tests run bin/python alone)
        tmp.rename(folder)
        return str(folder / "bin" / "python"), ""
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"creating the venv failed: {exc}"
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def pt_python(request) -> str:
    explicit = os.environ.get("TIETOOL_PT_PYTHON")
    if explicit:
        if not _works(explicit):
            pytest.fail(f"TIETOOL_PT_PYTHON={explicit} cannot import torch + transformers 5 + safetensors")
        return explicit
    folder = Path(os.environ.get("TIETOOL_PT_VENV") or Path.home() / ".cache" / "tietool-test" / "venv-pt")
    py = folder / "bin" / "python"
    if py.exists() and _works(str(py)):
        return str(py)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    show = capture.global_and_fixture_disabled if capture is not None else contextlib.nullcontext
    made, why = _create_venv(folder, show)
    if made is None or not _works(made):
        pytest.skip(f"no torch 2.13.0 + transformers 5 environment: {why or 'the created venv does not import them'}"
                    " (set TIETOOL_PT_PYTHON to use an existing one)")
    return made
