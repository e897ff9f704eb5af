"""keras-hub preset -> transformers 5 folder (`convert PRESET --names pt`, issue 25) against a durable copy.

    python bench/bench_kerashub.py                  # a ~1 GB Llama 3 preset (made once in bench/out), 5 pairs
    python bench/bench_kerashub.py --runs 3 --mb 1024

The preset is written here with h5py in keras-hub 0.32's own layout (the dataset paths and config of
fixtures/kerashub_hf/llama3_tied, scaled up: hidden 2048, 16 query heads over 4 key/value heads,
intermediate 5632, vocabulary 32000, float32, tied; layers added until the weights reach ``--mb``), no
keras-hub needed. Rows, each run paired with its reference right before it (bench_convert.py's method):

* ``cp + sync`` of model.weights.h5 (the floor for a durable copy) vs ``convert --names pt`` (verified,
  fsynced): goal 1.5x, peak RSS <= 100 MB;
* ``cp`` vs ``convert --names pt --no-fsync`` (verified): for reference.

Warm cache (the source read before each run); the page cache is not dropped between runs (the machine is
shared), so pairs are only as comparable as the load (printed) was flat.

Almost every byte of a Llama preset is transposed on the way (q/k/v/o and the MLP kernels are
``[in, out]`` in keras-hub, ``[out, in]`` in transformers): the conversion moves the bytes, it cannot
hand them to the kernel as ``cp`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from bench_convert import TMP, clean, load1, run, warm  # noqa: E402

FIXTURE = os.path.join(ROOT, "fixtures", "kerashub_hf", "llama3_tied", "preset")
H, Q, K, D, I, V = 2048, 16, 4, 128, 5632, 32000  # noqa: E741


def layer_shapes() -> dict[str, tuple[int, ...]]:
    return {"_self_attention_layernorm/vars/0": (H,), "_feedforward_layernorm/vars/0": (H,),
            "_self_attention_layer/_query_dense/vars/0": (H, Q, D),
            "_self_attention_layer/_key_dense/vars/0": (H, K, D),
            "_self_attention_layer/_value_dense/vars/0": (H, K, D),
            "_self_attention_layer/_output_dense/vars/0": (Q, D, H),
            "_feedforward_gate_dense/vars/0": (H, I), "_feedforward_intermediate_dense/vars/0": (H, I),
            "_feedforward_output_dense/vars/0": (I, H)}


def make_preset(folder: str, mb: int) -> int:
    """Write the preset; returns the number of layers."""
    import h5py

    per_layer = sum(int(np.prod(s)) for s in layer_shapes().values()) * 4
    layers = max(1, round((mb * 1e6 - V * H * 4) / per_layer))
    tmp = folder + ".making"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    rng = np.random.default_rng(0)
    with h5py.File(os.path.join(tmp, "model.weights.h5"), "w") as f:
        def put(path: str, shape: tuple[int, ...]) -> None:
            ds = f.create_dataset(path, shape=shape, dtype="<f4")
            rows = max(1, (8 << 20) // max(1, int(np.prod(shape[1:])) * 4))
            for r in range(0, shape[0], rows):
                ds[r:r + rows] = rng.standard_normal((min(rows, shape[0] - r), *shape[1:]), dtype="float32")
        put("layers/reversible_embedding/vars/0", (V, H))
        put("layers/llama_layer_norm/vars/0", (H,))
        for i in range(layers):
            group = "layers/llama_transformer_decoder" + (f"_{i}" if i else "")
            for rel, shape in layer_shapes().items():
                put(f"{group}/{rel}", shape)
    with open(os.path.join(FIXTURE, "config.json")) as fh:
        cfg = json.load(fh)
    cfg["config"].update(vocabulary_size=V, num_layers=layers, num_query_heads=Q, num_key_value_heads=K,
                         hidden_dim=H, intermediate_dim=I)
    with open(os.path.join(tmp, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=4)
    os.rename(tmp, folder)
    return layers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mb", type=int, default=1024, help="weights size of the preset (default 1024)")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    preset = os.path.join(HERE, "out", f"kerashub_llama3_{args.mb}mb")
    if not os.path.isdir(preset):
        print(f"making {preset} ...", file=sys.stderr)
        make_preset(preset, args.mb)
    weights = os.path.join(preset, "model.weights.h5")
    size = os.path.getsize(weights)
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = os.path.join(TMP, "out")
    conv = [args.python, "-m", "tietool", "convert", preset, "--names", "pt", "-o", out]

    def cp() -> list[str]:
        return ["cp", weights, os.path.join(TMP, "cp.out")]

    def cpsync() -> list[str]:
        d = os.path.join(TMP, "syncdir")
        return ["sh", "-c", 'mkdir -p "$2" && cp "$1" "$2" && sync "$2"/* "$2"', "sh", weights, d]

    rows = [("convert --names pt (verified, fsynced)", conv, cpsync, "cp + sync", 1.5),
            ("convert --names pt --no-fsync (verified)", conv + ["--no-fsync"], cp, "cp", None)]
    print("| row | preset | against | ratio (median) | min-max | s | ref s | GB/s | peak RSS MB | load | goal |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")
    for label, argv, ref, against, goal in rows:
        ratios, times, refs, rss, loads = [], [], [], 0, []
        for _ in range(args.runs):
            for a in (ref(), argv):
                clean()
                os.makedirs(TMP, exist_ok=True)
                os.sync()
                warm([weights])
                loads.append(load1())
                t, r = run(a, env, args.timeout)
                if a is argv:
                    times.append(t)
                    rss = max(rss, r)
                else:
                    refs.append(t)
            ratios.append(times[-1] / refs[-1])
        clean()
        ratio = statistics.median(ratios)
        met = "" if goal is None else f"{goal}x: " + ("yes" if ratio <= goal else "**no**") + \
            f", RSS <= 100 MB: {'yes' if rss <= 100e6 else '**no**'}"
        print(f"| {label} | {size / 1e9:.2f} GB | {against} | **{ratio:.2f}** | {min(ratios):.2f}-{max(ratios):.2f} "
              f"| {statistics.median(times):.2f} | {statistics.median(refs):.2f} | "
              f"{size / 1e9 / statistics.median(times):.2f} | {rss / 1e6:.0f} | {min(loads):.1f}-{max(loads):.1f} "
              f"| {met} |", flush=True)


if __name__ == "__main__":
    main()
