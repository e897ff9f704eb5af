"""What the durability of `convert` costs: the same conversion with and without fsync.

tietool fsyncs every written file, the temporary folder and the folder that
receives the rename (tietool/writers/safe_output.py), so that an output that
is in place survives a crash or power cut right after tietool exits. This
times `convert` of a generated safetensors file of --mb MB (random bytes, 8
tensors) to HDF5 and back, in one process after the imports, alternating runs
with the fsync calls in place and replaced by no-ops; prints the medians.

    PYTHONPATH=. python bench/fsync_cost.py [--mb 500] [--runs 5] [--dir bench/out]

--dir should be on the disk you care about (tmpfs makes fsync free).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tietool.convert import convert  # noqa: E402
from tietool.io import safe_output  # noqa: E402


def make_source(path: str, mb: int, parts: int = 8) -> None:
    rows = mb * 256 // parts
    nbytes = rows * 1024 * 4
    header = {f"w{i}": {"dtype": "F32", "shape": [rows, 1024], "data_offsets": [i * nbytes, (i + 1) * nbytes]}
              for i in range(parts)}
    raw = json.dumps(header).encode()
    raw += b" " * (-(8 + len(raw)) % 8)
    rng = np.random.default_rng(0)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        for _ in range(parts):
            fh.write(rng.integers(0, 2**32, size=nbytes // 4, dtype=np.uint32).tobytes())


def timed(src: str, to: str, out: str, sync: bool) -> float:
    real = safe_output.fsync_tree, safe_output.fsync_path
    if not sync:
        safe_output.fsync_tree = safe_output.fsync_path = lambda path: None
    try:
        if os.path.exists(out):
            shutil.rmtree(out) if os.path.isdir(out) else os.unlink(out)
        t0 = time.perf_counter()
        convert(src, to, out=out, verify=False)
        return time.perf_counter() - t0
    finally:
        safe_output.fsync_tree, safe_output.fsync_path = real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=500)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", default=os.path.join(HERE, "out"))
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    src = os.path.join(args.dir, f"fsync_src_{args.mb}mb.safetensors")
    if not os.path.exists(src):
        make_source(src, args.mb)
    h5 = os.path.join(args.dir, "fsync_out.h5")
    back = os.path.join(args.dir, "fsync_back.safetensors")
    timed(src, "h5", h5, sync=False)  # warm the page cache and the imports
    print(f"| direction ({args.mb} MB, --no-verify) | without fsync (s) | with fsync (s) | cost |")
    print("|---|---:|---:|---:|")
    for label, s, to, out in (("safetensors -> h5", src, "h5", h5), ("h5 -> safetensors", h5, "safetensors", back)):
        if not os.path.exists(s):
            timed(src, "h5", h5, sync=False)
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.runs):
            for sync in (False, True):
                times[sync].append(timed(s, to, out, sync))
        a, b = statistics.median(times[False]), statistics.median(times[True])
        print(f"| {label} | {a:.3f} | {b:.3f} | +{b - a:.3f} s ({b / a:.2f}x) |")
    for p in (h5, back):
        if os.path.exists(p):
            os.unlink(p)


if __name__ == "__main__":
    main()
