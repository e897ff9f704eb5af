"""Format descriptors: every format is one object in tietool.formats, and
opening a path recognises its format once (each probe of the file made once,
its result handed to the reader)."""

from pathlib import Path

import pytest

import tietool.formats as formats
from tietool.audit.check import check_paths
from tietool.formats import DESCRIPTORS, FORMATS, Family, format_of, get_format, keras_h5, open_checkpoint
from tietool.formats import index as index_module
from tietool.io.h5safe import SafeH5

from helpers import Calls

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

CASES = {
    "tf/gpt2": ("keras2-h5", 1),
    "tf/gpt2_sharded": ("hf-tf-h5-sharded", None),
    "tf/gpt2_tf_safetensors": ("safetensors", 0),
    "pt/gpt2_sharded": ("safetensors-sharded", 0),
    "keras2/full_model.h5": ("keras2-full-h5", 1),
    "keras3/tied_revemb.weights.h5": ("keras3-weights-h5", 1),
    "keras3/tied_revemb.keras": ("keras3-archive", 1),
    "keras3/sharded/untied_revemb.weights.json": ("keras3-weights-sharded", 2),
}


def _calls():
    return Calls(recognise=formats.recognise, load_index=index_module.load_index, root_kind=keras_h5.root_kind,
                 open_hdf5=SafeH5.__init__, find_weights=formats.find_weights)


@pytest.mark.parametrize("rel", sorted(CASES))
def test_opening_recognises_the_format_once(rel):
    name, h5_files = CASES[rel]
    path = FIXTURES / rel
    with _calls() as counts, open_checkpoint(path) as ckpt:
        assert ckpt.format == name
        n_files = sum(1 for f in ckpt.files if f.endswith(".h5"))
    assert counts["recognise"] == 1
    assert counts["load_index"] == (1 if get_format(name).sharded else 0)
    files = n_files if h5_files is None else h5_files
    assert counts["open_hdf5"] == files  # every HDF5 file opened once, by recognition or the reader
    assert counts["root_kind"] <= files  # each file's layout told at most once


def test_check_recognises_each_checkpoint_once():
    """``check`` on a folder of checkpoints: one recognition per checkpoint,
    each index parsed once, each HDF5 file opened once."""
    paths = [str(FIXTURES / "tf/gpt2_sharded"), str(FIXTURES / "pt/gpt2_sharded"), str(FIXTURES / "keras3/sharded")]
    with _calls() as counts:
        report = check_paths(paths)
    assert len(report.checkpoints) == 3
    assert all(c.error is None for c in report.checkpoints)
    assert counts["recognise"] == 3
    # the two model folders: listed by the scan, then opened; keras3/sharded (no config.json) listed only
    assert counts["find_weights"] == 2 * 2 + 1
    assert counts["load_index"] == 3
    h5_shards = len(list((FIXTURES / "tf/gpt2_sharded").glob("*.h5"))) + 2
    assert counts["open_hdf5"] == h5_shards


def test_every_format_is_one_descriptor():
    assert set(FORMATS) == set(DESCRIPTORS)
    for name, fmt in DESCRIPTORS.items():
        assert fmt.name == name and str(fmt) == name
        assert FORMATS[name] == fmt.description
        assert fmt.container in ("safetensors", "h5", "keras")
        assert fmt.sharded == ("shard index" in fmt.side_files)
    assert {f.family for f in DESCRIPTORS.values()} == set(Family)


@pytest.mark.parametrize("rel", sorted(CASES))
def test_the_reader_writes_the_recognised_name(rel):
    with open_checkpoint(FIXTURES / rel) as ckpt:
        assert format_of(ckpt) is get_format(CASES[rel][0])
