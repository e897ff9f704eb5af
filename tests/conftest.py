"""pytest wiring only: the --update-golden option and session fixtures that
build things lazily (nothing is built at collection). Helpers tests import
are in tests/helpers.py."""

from __future__ import annotations

import os
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
