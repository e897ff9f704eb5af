"""Generate the large float32 checkpoints the convert benchmark (bench/bench_convert.py) runs on.

Needs only numpy and h5py (no TensorFlow), streams the data (memory flat
whatever the size) and writes under bench/out/ (git-ignored):

    keras2_<N>mb.h5            a Keras 2 ``save_weights`` H5 of N MB float32 in
                               64 tensors (64 Embedding layers, one
                               ``embeddings:0`` each), the layout tf-keras 2 writes:
                               root ``layer_names``/``backend``/``keras_version``,
                               one group per layer with ``weight_names``,
                               datasets at ``L/L/embeddings:0``, contiguous.
    sharded_<N>mb/             transformers' sharded TF checkpoint of N MB
                               (``tf_model-0000i-of-0000k.h5`` flat shards whose
                               root ``layer_names`` lists dataset paths, and
                               ``tf_model.h5.index.json``), 16 tensors per shard.

    python bench/make_cases.py keras2 2048          # bench/out/keras2_2048mb.h5
    python bench/make_cases.py sharded 8192 --shards 4

A file that exists is kept (delete it to make it again). The values are
random float32 from a fixed seed.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
MB = 1024 * 1024
ROW = 1024  # columns of every tensor (float32): rows = bytes // 4096


def _fill(ds, rows: int, rng: np.random.Generator, block_rows: int = 4096) -> None:
    for r in range(0, rows, block_rows):
        n = min(block_rows, rows - r)
        ds[r:r + n] = rng.standard_normal((n, ROW), dtype=np.float32)


def _strs(values: list[str]) -> np.ndarray:
    return np.array([v.encode() for v in values])


def make_keras2(path: str, mb: int, tensors: int = 64, seed: int = 0) -> str:
    """A tf-keras 2 ``save_weights`` file: ``tensors`` Embedding layers, ``mb`` MB in all."""
    import h5py

    if os.path.exists(path):
        return path
    rows = mb * MB // tensors // (ROW * 4)
    rng = np.random.default_rng(seed)
    tmp = path + ".part"
    layers = [f"embedding_{i}" for i in range(tensors)]
    with h5py.File(tmp, "w") as f:
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.21.0"
        f.attrs["layer_names"] = _strs(layers)
        for name in layers:
            g = f.create_group(name)
            g.attrs["weight_names"] = _strs([f"{name}/embeddings:0"])
            ds = g.create_group(name).create_dataset("embeddings:0", (rows, ROW), dtype="<f4")
            _fill(ds, rows, rng)
    os.replace(tmp, path)
    return path


def make_sharded(folder: str, mb: int, shards: int = 4, per_shard: int = 16, seed: int = 0) -> str:
    """transformers' sharded TF checkpoint (``tf_model.h5.index.json`` + flat shards)."""
    import h5py

    index_path = os.path.join(folder, "tf_model.h5.index.json")
    if os.path.exists(index_path):
        return index_path
    os.makedirs(folder, exist_ok=True)
    rows = mb * MB // (shards * per_shard) // (ROW * 4)
    rng = np.random.default_rng(seed)
    weight_map = {}
    total = 0
    for s in range(shards):
        sname = f"tf_model-{s + 1:05d}-of-{shards:05d}.h5"
        names = [f"layer_{s * per_shard + i}/embeddings:0" for i in range(per_shard)]
        with h5py.File(os.path.join(folder, sname), "w") as f:
            f.attrs["layer_names"] = _strs(names)
            for n in names:
                ds = f.create_dataset(n, (rows, ROW), dtype="<f4")
                _fill(ds, rows, rng)
                weight_map["model/" + n] = sname
                total += rows * ROW * 4
    with open(index_path + ".part", "w") as fh:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, fh, indent=2)
    os.replace(index_path + ".part", index_path)
    return index_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=("keras2", "sharded"))
    ap.add_argument("mb", type=int)
    ap.add_argument("--tensors", type=int, default=64)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.kind == "keras2":
        print(make_keras2(os.path.join(args.out, f"keras2_{args.mb}mb.h5"), args.mb, args.tensors))
    else:
        print(make_sharded(os.path.join(args.out, f"sharded_{args.mb}mb"), args.mb, args.shards,
                           max(1, args.tensors // args.shards)))


if __name__ == "__main__":
    main()
