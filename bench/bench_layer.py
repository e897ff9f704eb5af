"""Benchmark rows for `tietool run` / SharedEmbeddings (needs the `tf` extra).

    python bench/bench_layer.py

Linear mode on hidden states [8, 512, 768] against a 50257 x 768 weight
(GPT-2 small), beside a bare ``tf.matmul(x, W, transpose_b=True)`` on the
same arrays; embedding mode on [8, 512] ids beside a bare ``tf.gather``.
Goal: each within 1.1x of its bare op. Median of repeated runs after a
warm-up; the layer is called eagerly, as `tietool run` calls it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tietool.layer.shared import SharedEmbeddings  # noqa: E402


def paired_medians(bare, mine, repeats: int) -> tuple[float, float]:
    """Median seconds of two callables run alternately (bare, mine, bare, ...)
    after a warm-up of each, so that drift in a shared machine's speed hits
    both alike."""
    bare()
    mine()
    tb, tm = [], []
    for _ in range(repeats):
        for fn, times in ((bare, tb), (mine, tm)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(tb), statistics.median(tm)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((args.vocab, args.hidden), dtype=np.float32) * 0.02)
    hidden = rng.standard_normal((args.batch, args.length, args.hidden), dtype=np.float32)
    ids = rng.integers(0, args.vocab, size=(args.batch, args.length), dtype=np.int32)

    layer = SharedEmbeddings(args.vocab, args.hidden)
    layer.build()
    layer.embeddings.assign(weight)
    w = tf.constant(weight)
    h = tf.constant(hidden)
    i = tf.constant(ids)

    # Same results first: the comparison is only fair if both compute the same thing.
    ref = tf.matmul(h, w, transpose_b=True).numpy()
    got = np.asarray(layer(h, mode="linear"))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert np.array_equal(np.asarray(layer(i, mode="embedding")), tf.gather(w, i).numpy())

    big = tf.constant(rng.integers(0, args.vocab, size=(64, 2048), dtype=np.int32))
    cases = [
        ("linear [8, 512, 768] x 50257x768", "tf.matmul(transpose_b=True)",
         lambda: tf.matmul(h, w, transpose_b=True).numpy(), lambda: layer(h, mode="linear").numpy(), args.repeats),
        ("embedding [8, 512] ids, `layer(ids)`", "tf.gather",
         lambda: tf.gather(w, i).numpy(), lambda: layer(i, mode="embedding").numpy(), args.repeats * 8),
        # Keras' Layer.__call__ costs about a millisecond per call whatever the
        # size: `layer.call` is the pass alone, and a larger batch shows the
        # constant fading.
        ("embedding [8, 512] ids, `layer.call(ids)`", "tf.gather",
         lambda: tf.gather(w, i).numpy(), lambda: layer.call(i, mode="embedding").numpy(), args.repeats * 8),
        ("embedding [64, 2048] ids, `layer(ids)`", "tf.gather",
         lambda: tf.gather(w, big).numpy(), lambda: layer(big, mode="embedding").numpy(), args.repeats * 2),
    ]
    rows = [(what, op, *paired_medians(bare, mine, n)) for what, op, bare, mine, n in cases]

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs; median of alternating runs after a warm-up\n")
    print("| pass | bare op | bare (s) | SharedEmbeddings (s) | ratio | goal | met |")
    print("|---|---|---:|---:|---:|---|---|")
    for what, op, b, m in rows:
        ratio = m / b
        print(f"| {what} | `{op}` | {b:.4f} | {m:.4f} | {ratio:.2f} | <= 1.1x | {'yes' if ratio <= 1.1 else 'no'} |")


if __name__ == "__main__":
    main()
