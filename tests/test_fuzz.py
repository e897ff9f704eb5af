"""Property-based fuzzing of every reader: mutate a valid fixture (bit flips,
truncation, integer and JSON-number header edits, deletes, inserts, splices),
open it with ``tietool.open_checkpoint`` and read every tensor. Only
``tietool.errors.TietoolError`` subclasses may escape. Small CI sample;
``bench/fuzz.py`` runs 10,000+ cases."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hostile_corpus as hc

EXAMPLES = 100


@pytest.fixture(scope="module")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="tietool-fuzz-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("reader", sorted(hc.FUZZ_TARGETS))
def test_fixture_itself_reads(reader, workdir):
    path, _ = hc.setup_target(reader, workdir / f"valid-{reader}")
    assert hc.open_and_read_all(path) is None


@pytest.mark.parametrize("reader", sorted(hc.FUZZ_TARGETS))
def test_mutations_raise_only_tietool_errors(reader, workdir):
    base = workdir / reader
    _, files = hc.setup_target(reader, base / "orig")
    targets = sorted(files)

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(
        target=st.sampled_from(targets),
        kinds=st.lists(st.sampled_from(hc.MUTATIONS), min_size=1, max_size=3),
        seed=st.integers(0, 2**32 - 1),
    )
    def check(target, kinds, seed):
        case = base / "case"
        if case.exists():
            shutil.rmtree(case)
        path, orig = hc.setup_target(reader, case)
        rng = random.Random(seed)
        data = orig[target]
        for kind in kinds:
            data = hc.mutate(data, kind, rng)
        (case / target).write_bytes(data)
        hc.open_and_read_all(path)  # anything but a TietoolError fails the test

    check()


def test_truncation_everywhere_safetensors(workdir):
    """Every truncation point of a small safetensors file is refused."""
    p = workdir / "trunc" / "model.safetensors"
    full = hc.st_bytes(hc._valid_st_header(), bytes(range(32)))
    for n in range(len(full)):
        hc._write(p, full[:n])
        assert hc.open_and_read_all(p) is not None, n


# -- structure-aware: tietool's own records and HDF5 link graphs (tests/record_fuzz.py) ---------------

#: Cases in the default run (a few seconds); ``pytest -m slow`` runs :data:`RECORD_CASES_SLOW`.
RECORD_CASES = 50
RECORD_CASES_SLOW = int(os.environ.get("TIETOOL_FUZZ_CASES", 10_000))


def _record_fuzz(tmp_path, n: int, seed: int) -> None:
    import record_fuzz

    work = tmp_path / "fuzz" / "work"
    work.mkdir(parents=True)
    summary = record_fuzz.run_cases(work, n, seed)
    print(f"{summary.cases} cases: {dict(summary.outcomes)}")
    assert not summary.failures, "\n".join(summary.failures[:5])
    assert summary.cases == n
    assert summary.outcomes["converted"] and len(summary.outcomes) >= 3  # the mutations reach the records


def test_records_and_link_graphs_sample(tmp_path):
    """A fast sample: converting mutated records and HDF5 link graphs ends in
    a conversion or one TietoolError, in bounded time, writing nothing else."""
    _record_fuzz(tmp_path, RECORD_CASES, seed=0)


@pytest.mark.slow
def test_records_and_link_graphs_many(tmp_path):
    """>= 10,000 cases (``python -m pytest -m slow tests/test_fuzz.py``; about 10 minutes)."""
    _record_fuzz(tmp_path, RECORD_CASES_SLOW, seed=1)
