"""Benchmark `tietool diff` on two ~500 MB checkpoints against reading both files once.

    python bench/make_checkpoints.py      # once (TF venv): bench/out/gpt2_small, bench/out/bert_base
    python bench/bench_diff.py [--runs 3] [--tietool PATH]

Pairs (made once under bench/out/, git-ignored):

* gpt2_small/tf_model.h5 (498 MB, TF names, Conv1D kernels as stored) against
  its `convert --names pt` output (PyTorch names, safetensors): every pair
  matched by the TF<->PyTorch rules, biases squeezed; identical.
* bert_base/tf_model.h5 (534 MB; 72 kernels, the word embedding stored twice)
  against its `--names pt` output: kernels compared through the transpose, by
  column block; identical.
* gpt2_small against a "fine-tuned" copy of its PyTorch output, every float
  scaled by (1 + 2^-10): every element differs, so every block goes through
  the float64 figures (max abs/rel, L2, rows).

Baselines: `cat A B > /dev/null` and a Python loop reading both files once in
16 MB blocks (os.readinto). Time = median wall time of --runs runs with a warm
page cache (both files read before every run); peak RSS = max ru_maxrss of the
child. Goal (issue 14): time within 1.5x of reading both files once, peak
memory under 250 MB. Prints a markdown table and writes bench/out/diff_results.md.
"""

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")
MB = 1e6

READ_BOTH = """
import sys
view = memoryview(bytearray(16 << 20))
for path in sys.argv[1:]:
    with open(path, "rb", buffering=0) as fh:
        while fh.readinto(view):
            pass
"""


INPROC = """
import sys, time
import tietool.diff.checkpoints
t = time.perf_counter()
tietool.diff.checkpoints.diff_checkpoints(sys.argv[1], sys.argv[2])
print(time.perf_counter() - t)
"""


def inproc(python, a, b, paths, runs):
    """Median seconds of the work alone, in one process after the imports."""
    times = []
    for _ in range(runs):
        for p in paths:
            subprocess.run(["cat", p], stdout=subprocess.DEVNULL, check=True, timeout=300)
        out = subprocess.run([python, "-c", INPROC, a, b], capture_output=True, text=True, check=True)
        times.append(float(out.stdout.split()[-1]))
    return statistics.median(times)


def files_of(path):
    if os.path.isfile(path):
        return [path]
    return [os.path.join(path, n) for n in sorted(os.listdir(path)) if n.endswith((".h5", ".safetensors"))]


def measure(argv):
    """One run: wall seconds and peak RSS (bytes). Exit 0 or 1 (diff: differs) is a result."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit("%s failed (exit %d): %s" % (argv, code, proc.stderr.read().decode()[-300:]))
    proc.stderr.close()
    return seconds, usage.ru_maxrss * 1024  # Linux reports KiB


def row(argv, paths, runs):
    times, peaks = [], []
    for _ in range(runs):
        for p in paths:  # warm page cache
            subprocess.run(["cat", p], stdout=subprocess.DEVNULL, check=True, timeout=300)
        seconds, peak = measure(argv)
        times.append(seconds)
        peaks.append(peak)
    return statistics.median(times), min(times), max(times), max(peaks)


def prepare(cmd, env):
    pairs = []
    for name in ("gpt2_small", "bert_base"):
        src = os.path.join(OUT, name)
        if not os.path.exists(os.path.join(src, "tf_model.h5")):
            sys.exit("missing %s/tf_model.h5: run bench/make_checkpoints.py with the TF venv" % src)
        pt = src + "-pt"
        if not os.path.isdir(pt):
            subprocess.run([*cmd, "convert", src, "--to", "safetensors", "--names", "pt", "-o", pt, "--quiet"],
                           check=True, env=env)
        pairs.append((name + " h5 vs --names pt", src, pt))
    tuned = os.path.join(OUT, "gpt2_small-pt-tuned")
    if not os.path.isdir(tuned):  # in a child: the mapped pages would count in every later child's peak RSS
        subprocess.run([sys.executable, os.path.abspath(__file__), "--make-tuned",
                        os.path.join(OUT, "gpt2_small-pt"), tuned], check=True)
    pairs.append(("gpt2_small h5 vs every element changed", os.path.join(OUT, "gpt2_small"), tuned))
    return pairs


def make_tuned(src, dst):
    """A copy of a float32 safetensors folder with every weight scaled by (1 + 2^-10), in place by memmap."""
    import json
    import shutil
    import struct

    import numpy as np

    tmp = dst + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    path = os.path.join(tmp, "model.safetensors")
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r+", offset=8 + n)
    for name, h in header.items():
        if name == "__metadata__" or h["dtype"] != "F32":
            continue
        b, e = h["data_offsets"]
        for s in range(b, e, 16 << 20):
            part = data[s:min(e, s + (16 << 20))].view(np.float32)
            part *= np.float32(1 + 2 ** -10)
    data.flush()
    del data
    os.rename(tmp, dst)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--python", default=sys.executable, help="interpreter for tietool and the baselines")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=REPO)
    os.environ["PYTHONPATH"] = REPO  # the tietool of this repository
    tietool = [args.python, "-m", "tietool"]
    pairs = prepare(tietool, env)
    lines = ["| command | pair | time (s) | min-max (s) | x cat A B | x Python read both | peak RSS (MB) | goal "
             "| met |", "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for label, a, b in pairs:
        paths = files_of(a) + files_of(b)
        cat = row(["cat", *paths], paths, args.runs)
        py = row([args.python, "-c", READ_BOTH, *paths], paths, args.runs)
        diff = row([*tietool, "diff", a, b], paths, args.runs)
        ok = diff[0] < 1.5 * py[0] and diff[3] < 250 * MB
        work = inproc(args.python, a, b, paths, args.runs)
        pair = "%s (%.0f MB + %.0f MB)" % (label, sum(os.path.getsize(p) for p in files_of(a)) / MB,
                                           sum(os.path.getsize(p) for p in files_of(b)) / MB)
        for name, r in (("`cat A B > /dev/null`", cat), ("Python: read both files once (16 MB blocks)", py)):
            lines.append("| %s | %s | %.3f | %.3f-%.3f | %.2f | %.2f | %.0f | | |" % (
                name, pair, r[0], r[1], r[2], r[0] / cat[0], r[0] / py[0], r[3] / MB))
        lines.append("| `tietool diff A B` | %s | %.3f | %.3f-%.3f | %.2f | %.2f | %.0f | < 1.5x read both, "
                     "< 250 MB | %s |" % (pair, diff[0], diff[1], diff[2], diff[0] / cat[0], diff[0] / py[0],
                                          diff[3] / MB, "yes" if ok else "**NO**"))
        lines.append("| `diff_checkpoints` in one process, after the imports | %s | %.3f | | %.2f | %.2f | | | |"
                     % (pair, work, work / cat[0], work / py[0]))
    lines += ["", "Median of %d runs, warm page cache; peak RSS = ru_maxrss of the child. %s, %s, %d CPUs, "
              "Python %s." % (args.runs, datetime.date.today().isoformat(), platform.platform(terse=True),
                              os.cpu_count(), platform.python_version())]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(OUT, "diff_results.md"), "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--make-tuned"]:
        make_tuned(sys.argv[2], sys.argv[3])
    else:
        main()
