"""`tietool convert` against `cp` on large checkpoints: paired runs, ratios to cp.

    python bench/bench_convert.py                      # 500 MB GPT-2 (if made) + 2 GB Keras 2, 5 pairs
    python bench/bench_convert.py --sizes 512,1024,2048,4096,8192   # per-GB rows (made on demand, deleted after)
    python bench/bench_convert.py --sharded 8192       # sharded 8 GB case (made on demand, deleted after)
    python bench/bench_convert.py --cold               # drop the page cache before every run (root only)

Every row is a command run as a subprocess (explicit argv, no shell). Each run
of a row is paired with a run of ``cp`` of the same source file made right
before it (warm cache: the source is read once before each of the two), and
the row's figure is the median over the pairs of (row time / cp time), with
the smallest and largest ratio. Rows of ``convert --no-fsync`` are paired
with ``cp`` and held to the issue's goals against it; the default, durable
rows (fsync before the rename) are paired with ``cp + sync`` (``cp``, then
``sync`` of the copy) instead, since ``cp`` leaves its copy in the page
cache. Peak RSS is the child's ``ru_maxrss``
(``os.wait4``). The load average (1 min) is printed with every row: on a
shared machine ratios are only as good as the load was flat.

The tietool under test is the one importable from the repository this file
lives in, run with the current interpreter (``sys.executable -m tietool``);
``--python`` picks another interpreter. The naive row needs ``safetensors``
in that interpreter and is left out otherwise. Outputs go to bench/out/tmp-convert/
and are deleted after every run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")
TMP = os.path.join(OUT, "tmp-convert")
sys.path.insert(0, HERE)

NAIVE = r"""
import sys, h5py, numpy as np
from safetensors.numpy import save_file
d = {}
with h5py.File(sys.argv[1], "r") as f:
    f.visititems(lambda n, o: d.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
save_file(d, sys.argv[2])
"""


def WARM_UP(py: str) -> list[str]:  # noqa: N802 - a constant that needs the interpreter
    return [py, "-c", "import tietool.cli.commands, tietool.convert, tietool.formats, h5py, numpy"]


def load1() -> float:
    return os.getloadavg()[0]


def warm(paths: list[str]) -> None:
    buf = bytearray(8 * 1024 * 1024)
    for p in paths:
        with open(p, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as fh:
        fh.write("3\n")


def settle() -> bool:
    """Drop the page cache and compact free memory (root on Linux only; False
    elsewhere). Measured on this project's VM: after many runs the page cache
    is fragmented and the same `cp` of 2 GB takes 1.7-2.8 s of kernel time
    instead of 0.75 s (large page-cache folios no longer found), which made
    pairs measured minutes apart incomparable."""
    try:
        drop_caches()
        with open("/proc/sys/vm/compact_memory", "w") as fh:
            fh.write("1\n")
    except OSError:
        return False
    return True


def clean() -> None:
    if os.path.exists(TMP):
        shutil.rmtree(TMP)
    os.makedirs(TMP)


def run(argv: list[str], env: dict, timeout: float) -> tuple[float, int]:
    """(seconds, peak RSS in bytes) of one run; raises on failure."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = t0 + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            p.kill()
            os.wait4(p.pid, 0)
            raise RuntimeError("timeout")
        time.sleep(0.002)
    dt = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise RuntimeError(f"exit {p.returncode}: {err.strip().splitlines()[-1] if err.strip() else ''}")
    return dt, ru.ru_maxrss * 1024


def source_files(src: str) -> list[str]:
    if src.endswith(".index.json"):
        d = os.path.dirname(src)
        return [os.path.join(d, n) for n in sorted(os.listdir(d)) if n.endswith(".h5")]
    return [src]


#: The issue's goals, as (row marker, paired with, 500 MB goal, 2 GB-and-up goal). ``--no-fsync`` rows are
#: measured against plain ``cp`` (neither waits for the disk); durable rows (the default: fsync before the
#: rename) against ``cp + sync`` (a copy that waits for the disk as well).
GOALS = {
    "nv-fast": ("cp", 1.3, 1.1),
    "v-fast": ("cp", 1.5, 1.4),
    "pt-fast": ("cp", 2.0, 2.0),
    "nv": ("cp + sync", 1.3, 1.1),
    "v": ("cp + sync", 1.5, 1.4),
    "pt": ("cp + sync", 2.0, 2.0),
}
COLD_NO_VERIFY = 1.2  # --no-verify on a cold cache, any size


def rows_for(case: str, src: str, py: str, naive: bool, pt: bool, shard: str | None) -> list[tuple[str, object, str]]:
    """(label, argv or special name, goal key) per row."""
    out = os.path.join(TMP, "out")
    conv = [py, "-m", "tietool", "convert", src, "--to", "safetensors", "-o", out]
    if shard:
        conv += ["--shard-size", shard]
    rows: list = [("dd bs=4M", "dd", ""), ("cp + sync of the copy (the floor for a durable copy)", "cpsync", "")]
    if naive:
        rows.append(("naive h5py + safetensors.numpy.save_file", [py, "-c", NAIVE, src, out], ""))
    rows += [("convert --no-verify --no-fsync", conv + ["--no-verify", "--no-fsync"], "nv-fast"),
             ("convert --no-fsync (verified)", conv + ["--no-fsync"], "v-fast"),
             ("convert --no-verify (fsynced)", conv + ["--no-verify"], "nv"),
             ("convert (verified, fsynced)", conv, "v")]
    if pt:
        pt_argv = [py, "-m", "tietool", "convert", src, "--names", "pt", "-o", out]
        rows += [("convert --names pt --no-fsync (verified)", pt_argv + ["--no-fsync"], "pt-fast"),
                 ("convert --names pt (verified, fsynced)", pt_argv, "pt")]
    return rows


def goal_for(key: str, size: int, cold: bool) -> tuple[str, float] | None:
    if key not in GOALS:
        return None
    against, small, large = GOALS[key]
    goal = small if size < 1.5e9 else large
    if cold and key in ("nv-fast",):
        goal = COLD_NO_VERIFY
    return against, goal


def bench_case(case: str, src: str, args, env: dict, report: list[str]) -> None:
    files = source_files(src)
    size = sum(os.path.getsize(f) for f in files)
    sharded = src.endswith(".index.json")
    naive = args.naive and not sharded
    rows = rows_for(case, src, args.python, naive and args.has_safetensors, case.startswith("gpt2") or args.pt,
                    args.shard_size if sharded else None)

    def cp_argv() -> list[str]:
        if len(files) == 1:
            return ["cp", files[0], os.path.join(TMP, "cp.out")]
        os.makedirs(os.path.join(TMP, "cpdir"), exist_ok=True)
        return ["cp", *files, os.path.join(TMP, "cpdir")]

    def dd_argv() -> list[str]:
        return ["dd", f"if={files[0]}", f"of={os.path.join(TMP, 'dd.out')}", "bs=4M", "status=none"]

    def cpsync_argv() -> list[str]:
        d = os.path.join(TMP, "syncdir")
        os.makedirs(d, exist_ok=True)
        return ["sh", "-c", 'd="$1"; shift; cp "$@" "$d" && sync "$d"/* "$d"', "sh", d, *files]

    special = {"dd": dd_argv, "cpsync": cpsync_argv}

    def prepare() -> None:
        clean()
        os.sync()  # no writeback left from the previous run to compete with this one
        if args.cold:
            drop_caches()
        else:
            if args.settle:
                settle()
                # Dropping the cache also dropped the interpreter's libraries: load them again, or
                # every tietool run would pay a cold start-up (0.3-0.4 s instead of 0.2 s here).
                subprocess.run(WARM_UP(args.python), env=env, check=True)
            warm(files)

    for label, argv, key in rows:
        if (label.startswith("dd") and len(files) > 1) or (args.rows and not any(r in label for r in args.rows)):
            continue
        goal = goal_for(key, size, args.cold)
        against = goal[0] if goal else "cp"
        base_argv = cpsync_argv if against == "cp + sync" else cp_argv
        ratios, times, bases, rss, loads = [], [], [], 0, []
        err = None
        for _ in range(args.runs):
            try:
                prepare()
                base_t, _ = run(base_argv(), env, args.timeout)
                prepare()
                loads.append(load1())
                t, r = run(special[argv]() if isinstance(argv, str) else argv, env, args.timeout)
            except RuntimeError as exc:
                err = str(exc)
                break
            ratios.append(t / base_t)
            times.append(t)
            bases.append(base_t)
            rss = max(rss, r)
        clean()
        if err:
            line = f"| {label} | {case} | {against} | FAILED: {err} | | | | | | | |"
        else:
            t_med, ratio = statistics.median(times), statistics.median(ratios)
            met = f"{goal[1]}x: " + ("yes" if ratio <= goal[1] else "**no**") if goal else ""
            line = (f"| {label} | {case} | {against} | **{ratio:.2f}** | {min(ratios):.2f}-{max(ratios):.2f} "
                    f"| {t_med:.3f} | {statistics.median(bases):.3f} | {size / 1e9 / t_med:.2f} "
                    f"| {rss / 1e6:.0f} | {min(loads):.1f}-{max(loads):.1f} | {met} |")
        print(line, flush=True)
        report.append(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs tietool (default: this one)")
    ap.add_argument("--runs", type=int, default=5, help="pairs per row (default 5)")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--cold", action="store_true", help="drop the page cache before every run (root only)")
    ap.add_argument("--no-settle", dest="settle", action="store_false",
                    help="warm runs: do not drop the page cache and compact memory before reading the source "
                         "(the default where permitted: root on Linux)")
    ap.add_argument("--sizes", default="",
                    help="per-GB rows: Keras 2 H5 sizes in MB, made and deleted (e.g. 512,1024,8192)")
    ap.add_argument("--sharded", type=int, default=0, help="also a sharded case of this many MB (made and deleted)")
    ap.add_argument("--shard-size", default="2GB", help="--shard-size of the sharded case's output (default 2GB)")
    ap.add_argument("--no-naive", dest="naive", action="store_false")
    ap.add_argument("--pt", action="store_true", help="--names pt rows on every case (default: GPT-2 only)")
    ap.add_argument("--rows", type=lambda t: [r for r in t.split(",") if r], default=[],
                    help="only rows whose label contains one of these (comma-separated), e.g. 'no-verify,verified'")
    ap.add_argument("--skip-default", action="store_true", help="leave out the 500 MB GPT-2 and 2 GB cases")
    args = ap.parse_args()
    args.has_safetensors = subprocess.run([args.python, "-c", "import safetensors.numpy, h5py"],
                                          capture_output=True).returncode == 0
    if shutil.which("cp") is None:
        sys.exit("cp not found")
    import make_cases

    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # Run tietool as an installed copy runs: from compiled bytecode (pip compiles on install), not
    # recompiling its sources at every start (which PYTHONDONTWRITEBYTECODE=1 would make it do).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([args.python, "-m", "compileall", "-q", os.path.join(ROOT, "tietool")], env=env,
                   stdout=subprocess.DEVNULL, check=True)
    os.makedirs(OUT, exist_ok=True)
    report = ["| row | case | paired with | x that (median) | min-max | time (s) | that (s) | GB/s | peak RSS (MB) "
              "| load 1m | goal: met |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    args.settle = args.settle and not args.cold and settle()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  python {args.python}  cpus {os.cpu_count()}  "
          f"{'COLD' if args.cold else 'warm'} cache{', settled' if args.settle else ''}, {args.runs} pairs per row")
    print("\n".join(report), flush=True)
    if not args.skip_default:
        gpt2 = os.path.join(OUT, "gpt2_small", "tf_model.h5")
        if os.path.exists(gpt2):
            bench_case("gpt2_small 498 MB", gpt2, args, env, report)
        else:
            print("(gpt2_small left out: make it with bench/make_checkpoints.py)")
        bench_case("keras2 2 GB, 64 tensors", make_cases.make_keras2(os.path.join(OUT, "keras2_2048mb.h5"), 2048),
                   args, env, report)
    for mb in [int(s) for s in args.sizes.split(",") if s]:
        path = os.path.join(OUT, f"keras2_{mb}mb.h5")
        keep = os.path.exists(path)
        make_cases.make_keras2(path, mb)
        try:
            bench_case(f"keras2 {mb / 1024:g} GB", path, args, env, report)
        finally:
            if not keep:
                os.unlink(path)
    if args.sharded:
        folder = os.path.join(OUT, f"sharded_{args.sharded}mb")
        keep = os.path.exists(folder)
        idx = make_cases.make_sharded(folder, args.sharded)
        try:
            bench_case(f"sharded {args.sharded / 1024:g} GB, --shard-size {args.shard_size}", idx, args, env, report)
        finally:
            if not keep:
                shutil.rmtree(folder)
    with open(os.path.join(OUT, "convert_results.md"), "w") as fh:
        fh.write("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
