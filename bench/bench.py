"""Benchmark tietool on large real checkpoints against cp and the naive routes.

Run with the dev venv, after bench/make_checkpoints.py made bench/out/gpt2_small
and bench/out/bert_base:

    python bench/bench.py [--with-transformers]

Every row is one command run as a subprocess with an explicit argv (no shell)
and a timeout. Time = median wall time of --runs runs; before every run the
input file is read once with `cat FILE > /dev/null` so the page cache is warm.
Peak RSS = ru_maxrss of the child from os.wait4 (includes the child's own
waited-for children). Prints a markdown table and writes it to
bench/out/results.md.
"""

import argparse
import datetime
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")
TMP = os.path.join(OUT, "tmp")
MB = 1e6

# Naive route: read every dataset into memory with h5py, then write safetensors.
NAIVE = """
import sys, h5py
from safetensors.numpy import save_file
tensors = {}
with h5py.File(sys.argv[1], "r") as f:
    def grab(name, obj):
        if isinstance(obj, h5py.Dataset):
            tensors[name] = obj[()]
    f.visititems(grab)
save_file(tensors, sys.argv[2])
"""

# Baseline for verify-tie: read each stored copy of the word embedding once.
READ_BOTH = """
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    names = []
    f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset)
                 and n.endswith("word_embeddings/weight:0") else None)
    assert len(names) == 2, names
    for n in names:
        data = f[n][()]
        del data
"""

# transformers 4.57 TF route (tf venv): load the TF model, save as safetensors.
TRANSFORMERS = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
os.environ["HF_HUB_OFFLINE"] = "1"
from transformers import TFAutoModelForCausalLM
model = TFAutoModelForCausalLM.from_pretrained(sys.argv[1])
model.save_pretrained(sys.argv[2], safe_serialization=True)
"""


# The same work timed inside one process, after the imports: what the design
# costs without Python's start-up (about 0.25 s for numpy + h5py here).
INPROC = """
import sys, time
import tietool.convert, tietool.summary, tietool.ties.verify
what, args = sys.argv[1], sys.argv[2:]
t = time.perf_counter()
if what == "inspect":
    tietool.summary.inspect_checkpoint(args[0])
elif what == "verify-tie":
    tietool.ties.verify.verify_tie(args[0])
elif what == "convert":
    tietool.convert.convert(args[0], args[1], args[2], verify=args[3] == "verify")
elif what == "convert-pt":
    tietool.convert.convert_to_pt(args[0], args[1], verify=True)
print(time.perf_counter() - t)
"""


def inproc_seconds(py, args, warm_file, runs, timeout):
    """Median of the seconds the INPROC snippet prints."""
    times = []
    for _ in range(runs):
        clean_tmp()
        warm(warm_file)
        done = subprocess.run([py, "-c", INPROC, *args], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError((done.stderr.strip().splitlines() or ["failed"])[-1])
        times.append(float(done.stdout.strip().splitlines()[-1]))
    clean_tmp()
    return statistics.median(times)


def measure(argv, timeout=600.0):
    """Run argv once; return (wall seconds, peak RSS bytes). Raises on failure."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            lines = err.read().decode(errors="replace").strip().splitlines()
            why = "timeout" if proc.returncode == -9 else "exit %d" % proc.returncode
            raise RuntimeError("%s: %s" % (why, lines[-1] if lines else "(no stderr)"))
    return seconds, usage.ru_maxrss * 1024  # Linux reports KiB


COLD = False  # --cold: drop the page cache before every run instead of warming it


def warm(path):
    """Read path once so the page cache holds it (cat FILE > /dev/null), or,
    with --cold, empty the page cache (needs root: /proc/sys/vm/drop_caches)."""
    if COLD:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return
    subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True, timeout=300)


def clean_tmp():
    shutil.rmtree(TMP, ignore_errors=True)
    os.makedirs(TMP)
    os.sync()  # no writeback left over from the previous run


def run_row(argv, warm_file, runs, timeout):
    """Median time and max peak RSS over runs; outputs in TMP deleted after each."""
    times, peaks = [], []
    for _ in range(runs):
        clean_tmp()
        warm(warm_file)
        seconds, peak = measure(argv, timeout)
        times.append(seconds)
        peaks.append(peak)
    clean_tmp()
    return statistics.median(times), min(times), max(times), max(peaks)


def tietool_commands(tietool):
    out = subprocess.run([tietool, "--help"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    commands, in_section = set(), False
    for line in out.splitlines():
        if line.strip() == "Commands:":
            in_section = True
        elif in_section and line.startswith("  ") and line.split():
            commands.add(line.split()[0])
        elif in_section and line.strip() and not line.startswith(" "):
            in_section = False
    return commands


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter with tietool, h5py and safetensors (default: this one, %(default)s)")
    ap.add_argument("--tf-python", default=sys.executable,
                    help="interpreter with tensorflow + transformers 4.57 for --with-transformers (default: this one)")
    ap.add_argument("--with-transformers", action="store_true",
                    help="also time the transformers TF route (slow, ~GBs of RAM)")
    ap.add_argument("--runs", type=int, default=3, help="runs per row (default 3)")
    ap.add_argument("--cold", action="store_true",
                    help="cold cache: drop the page cache before every run (root only) instead of warming it")
    ap.add_argument("--timeout", type=float, default=900.0,
                    help="seconds before one run is killed (default 900)")
    args = ap.parse_args()
    global COLD
    COLD = args.cold

    py = args.python
    # the tietool script beside that interpreter (a virtual environment's bin/), else on PATH
    tietool = os.path.join(os.path.dirname(py), "tietool")
    if not os.path.exists(tietool):
        tietool = shutil.which("tietool") or sys.exit("no tietool script beside %s or on PATH: pip install ." % py)
    tf_py = args.tf_python
    tiny_dir = os.path.join(REPO, "fixtures", "tf", "gpt2")
    gpt2_dir = os.path.join(OUT, "gpt2_small")
    bert_dir = os.path.join(OUT, "bert_base")
    tiny_h5, gpt2_h5, bert_h5 = (os.path.join(d, "tf_model.h5") for d in (tiny_dir, gpt2_dir, bert_dir))
    for path in (gpt2_h5, bert_h5):
        if not os.path.exists(path):
            sys.exit("missing %s: run python bench/make_checkpoints.py (needs TensorFlow, tf-keras, transformers 4.57)"
                     % path)
    commands = tietool_commands(tietool)
    tmp = lambda name: os.path.join(TMP, name)  # noqa: E731

    # (label, file key, argv, file to warm, goal text or None, goal check or None)
    # goal check: f(seconds, peak, ref) -> bool, ref = measured reference rows.
    rows = [
        ("`tietool --help` (startup)", None, [tietool, "--help"], tietool,
         "< 0.5 s", lambda s, m, r: s < 0.5),
    ]
    for key, h5 in (("gpt2_small", gpt2_h5), ("bert_base", bert_h5)):
        rows += [
            ("`cp tf_model.h5`", key, ["cp", h5, tmp("copy.h5")], h5, None, None),
            ("`dd bs=1M` (user-space read/write copy)", key,
             ["dd", "if=" + h5, "of=" + tmp("copy.h5"), "bs=1M", "status=none"], h5, None, None),
            ("naive: h5py read all + safetensors save_file", key,
             [py, "-c", NAIVE, h5, tmp("naive.safetensors")], h5, None, None),
        ]
    rows += [
        ("`tietool inspect` tiny fixture tf/gpt2", "tiny", [tietool, "inspect", tiny_dir], tiny_h5,
         None, None),
        ("`tietool inspect`", "gpt2_small", [tietool, "inspect", gpt2_dir], gpt2_h5,
         "≈ time of tiny inspect, < 200 MB",
         lambda s, m, r: s < 1.5 * r["inspect_tiny"][0] and m < 200 * MB),
    ]
    if args.with_transformers:
        rows.append(("transformers 4.57 TF: from_pretrained + save_pretrained(safe_serialization)",
                     "gpt2_small", [tf_py, "-c", TRANSFORMERS, gpt2_dir, tmp("tf_route")], gpt2_h5,
                     None, None))
    if "convert" in commands:
        rows += [
            ("`tietool convert --to safetensors` (verified)", "gpt2_small",
             [tietool, "convert", gpt2_h5, "--to", "safetensors", "-o", tmp("model.safetensors")],
             gpt2_h5, "< 1.5x cp, < 200 MB",
             lambda s, m, r: s < 1.5 * r["cp_gpt2_small"][0] and m < 200 * MB),
            ("`tietool convert --to safetensors --no-verify`", "gpt2_small",
             [tietool, "convert", gpt2_h5, "--to", "safetensors", "--no-verify", "-o", tmp("model.safetensors")],
             gpt2_h5, "< 1.5x cp, < 200 MB",
             lambda s, m, r: s < 1.5 * r["cp_gpt2_small"][0] and m < 200 * MB),
            ("`tietool convert --to safetensors --names pt` (verified)", "gpt2_small",
             [tietool, "convert", gpt2_dir, "--to", "safetensors", "--names", "pt", "-o", tmp("pt")],
             gpt2_h5, "< 1.5x cp, < 200 MB",
             lambda s, m, r: s < 1.5 * r["cp_gpt2_small"][0] and m < 200 * MB),
        ]
    rows += [
        ("read both word-embedding copies once (h5py)", "bert_base",
         [py, "-c", READ_BOTH, bert_h5], bert_h5, None, None),
    ]
    if "verify-tie" in commands:
        rows.append(("`tietool verify-tie`", "bert_base", [tietool, "verify-tie", bert_dir], bert_h5,
                     "< 1.5x read-both, < 250 MB",
                     lambda s, m, r: s < 1.5 * r["read_both"][0] and m < 250 * MB))

    ref = {}  # reference measurements: cp_<key>, naive_<key>, inspect_tiny, read_both
    results = []
    for label, key, argv, warm_file, goal, check in rows:
        print("running: %s [%s] ..." % (label, key or "-"), file=sys.stderr, flush=True)
        try:
            seconds, fastest, slowest, peak = run_row(argv, warm_file, args.runs, args.timeout)
        except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
            results.append((label, key, None, None, None, goal, "FAILED: %s" % exc))
            continue
        if label.startswith("`cp"):
            ref["cp_" + key] = (seconds, peak)
        elif label.startswith("naive"):
            ref["naive_" + key] = (seconds, peak)
        elif key == "tiny":
            ref["inspect_tiny"] = (seconds, peak)
        elif label.startswith("read both"):
            ref["read_both"] = (seconds, peak)
        verdict = ""
        if check is not None:
            try:
                verdict = "yes" if check(seconds, peak, ref) else "**NO**"
            except KeyError:
                verdict = "(no reference)"
        results.append((label, key, seconds, (fastest, slowest), peak, goal, verdict))

    # Convert back (safetensors -> h5) needs the safetensors file from convert: done apart.
    if "convert" in commands:
        label = "`tietool convert --to h5` (back from safetensors)"
        src = os.path.join(OUT, "gpt2_small_converted.safetensors")
        try:
            clean_tmp()
            measure([tietool, "convert", gpt2_h5, "--to", "safetensors", "-o", src], args.timeout)
            seconds, fastest, slowest, peak = run_row(
                [tietool, "convert", src, "--to", "h5", "-o", tmp("back.h5")], src, args.runs, args.timeout)
            ok = seconds < 1.5 * ref["cp_gpt2_small"][0] and peak < 200 * MB
            results.append((label, "gpt2_small", seconds, (fastest, slowest), peak,
                            "< 1.5x cp, < 200 MB", "yes" if ok else "**NO**"))
        except (RuntimeError, subprocess.SubprocessError, OSError, KeyError) as exc:
            results.append((label, "gpt2_small", None, None, None, "< 1.5x cp, < 200 MB",
                            "FAILED: %s" % exc))
        finally:
            if os.path.exists(src):
                os.remove(src)
    # The work alone, in one process after the imports.
    inproc = []
    jobs = [("inspect", "gpt2_small", ["inspect", gpt2_dir], gpt2_h5, None)]
    if "verify-tie" in commands:
        jobs.append(("verify-tie", "bert_base", ["verify-tie", bert_dir], bert_h5, ("read_both", "x read-both")))
    if "convert" in commands:
        jobs += [
            ("convert --to safetensors --no-verify", "gpt2_small",
             ["convert", gpt2_h5, "safetensors", tmp("a.safetensors"), "no"], gpt2_h5, ("cp_gpt2_small", "x cp")),
            ("convert --to safetensors (verified)", "gpt2_small",
             ["convert", gpt2_h5, "safetensors", tmp("a.safetensors"), "verify"], gpt2_h5, ("cp_gpt2_small", "x cp")),
            ("convert --names pt (verified)", "gpt2_small",
             ["convert-pt", gpt2_dir, tmp("pt")], gpt2_h5, ("cp_gpt2_small", "x cp")),
        ]
    for label, key, jargs, warm_file, against in jobs:
        print("running in-process: %s ..." % label, file=sys.stderr, flush=True)
        try:
            secs = inproc_seconds(py, jargs, warm_file, args.runs, args.timeout)
        except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as exc:
            inproc.append("| %s | %s | FAILED: %s | - |" % (label, key, exc))
            continue
        ratio = "-"
        if against and against[0] in ref:
            ratio = "%.2f %s" % (secs / ref[against[0]][0], against[1])
        inproc.append("| %s | %s | %.3f | %s |" % (label, key, secs, ratio))
    shutil.rmtree(TMP, ignore_errors=True)

    sizes = {"tiny": os.path.getsize(tiny_h5), "gpt2_small": os.path.getsize(gpt2_h5),
             "bert_base": os.path.getsize(bert_h5)}
    lines = [
        "| command | checkpoint | time (s) | min-max (s) | x cp | x naive | peak RSS (MB) | RSS / file | goal | met |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for label, key, seconds, spread, peak, goal, verdict in results:
        name = {"tiny": "fixtures/tf/gpt2", None: "-"}.get(key, key)
        if seconds is None:
            lines.append("| %s | %s | - | - | - | - | - | - | %s | %s |" % (label, name, goal or "", verdict))
            continue
        cp = ref.get("cp_" + str(key))
        naive = ref.get("naive_" + str(key))
        lines.append("| %s | %s | %.3f | %.3f-%.3f | %s | %s | %.0f | %s | %s | %s |" % (
            label, name, seconds, spread[0], spread[1],
            "%.2f" % (seconds / cp[0]) if cp else "-",
            "%.2f" % (seconds / naive[0]) if naive else "-",
            peak / MB,
            "%.2f" % (peak / sizes[key]) if key in ("gpt2_small", "bert_base") else "-",
            goal or "", verdict))
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    notes_floor = ("Peak RSS has a floor of about %.0f MB: Linux carries the forking bench.py's own "
                   "RSS into the child's ru_maxrss, so rows near that value (cp, dd) used less."
                   % (floor / MB))
    missing = [c for c in ("verify-tie", "convert") if c not in commands]
    notes = [
        "",
        ("Median wall time of %d runs, " % args.runs)
        + ("COLD page cache (dropped before every run); " if COLD
           else "warm page cache (`cat FILE > /dev/null` before every run); ")
        + "peak RSS = max ru_maxrss (os.wait4) over the runs. x cp / x naive: time ratio to `cp` / "
        "the naive route on the same checkpoint. RSS / file: peak RSS over the tf_model.h5 size "
        "(gpt2_small %.0f MB, bert_base %.0f MB)." % (sizes["gpt2_small"] / MB, sizes["bert_base"] / MB),
        "",
        notes_floor,
    ]
    if missing:
        notes.append("")
        notes.append("Not available in this tietool (not in `tietool --help`): %s." % ", ".join(missing))
    if not args.with_transformers:
        notes.append("")
        notes.append("transformers TF route not run (pass --with-transformers).")
    notes += ["", "%s, %s, %d CPUs, Python %s." % (
        datetime.date.today().isoformat(), platform.platform(terse=True), os.cpu_count(),
        platform.python_version())]
    if inproc:
        notes += ["", "Time inside tietool, in one process after the imports (median of %d runs, %s cache):"
                  % (args.runs, "cold" if COLD else "warm"), "",
                  "| work | checkpoint | seconds | ratio |", "|---|---|---:|---|"] + inproc
    table = "\n".join(lines + notes) + "\n"
    print(table)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write(table)


if __name__ == "__main__":
    main()
