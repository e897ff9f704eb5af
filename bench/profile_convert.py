"""Where `convert` spends its time: cProfile of one conversion, in process, after the imports.

    python bench/profile_convert.py [SOURCE] [--no-verify] [--no-fsync] [--names pt] [--top 15]

SOURCE defaults to bench/out/keras2_2048mb.h5 (bench/make_cases.py makes it).
Prints the wall time, the time inside the final fsync, and the top entries by
total (own) time. The output goes to bench/out/tmp-profile/ and is deleted.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tietool.convert import convert  # noqa: E402
from tietool.io import safe_output  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", nargs="?", default=os.path.join(HERE, "out", "keras2_2048mb.h5"))
    ap.add_argument("--no-verify", dest="verify", action="store_false")
    ap.add_argument("--no-fsync", dest="fsync", action="store_false")
    ap.add_argument("--names", default="keras")
    ap.add_argument("--shard-size", default=None)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    tmp = os.path.join(HERE, "out", "tmp-profile")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    out = os.path.join(tmp, "out")
    fsync_s = [0.0]
    real = safe_output.fsync_path

    def timed_fsync(path: str) -> None:
        t = time.perf_counter()
        real(path)
        fsync_s[0] += time.perf_counter() - t

    safe_output.fsync_path = timed_fsync
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    c0 = time.process_time()
    prof.enable()
    convert(args.source, "safetensors", out=out, verify=args.verify, names=args.names, shard_size=args.shard_size,
            fsync=args.fsync)
    prof.disable()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"wall {wall:.2f} s, process CPU {cpu:.2f} s, fsync {fsync_s[0]:.2f} s, load {os.getloadavg()[0]:.1f}")
    pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
