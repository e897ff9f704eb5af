"""Whole-process start-up of every command on a tiny fixture, paired with the floors.

    python bench/bench_startup.py                        # 9 pairs per row; table on stdout and in bench/out/
    python bench/bench_startup.py --baseline-tree DIR    # also the same commands from another checkout (before/after)
    python bench/bench_startup.py --with-run             # also `run` (imports TensorFlow: seconds, not ms)

Every row is a command run as a subprocess (explicit argv, no shell), tietool
as the installed ``tietool`` script runs it (``from tietool.cli import main``,
from compiled bytecode). Each run of a row is paired with a run of the anchor,
``python -c "import numpy, h5py"`` (what every command needs, whatever tietool
does), made right before it; the row's figures are the medians over the
pairs of its wall time, of (row - anchor) and of (row / anchor), and the
median CPU time (user + system, from ``os.wait4``), which a loaded machine
inflates less than wall time. ``python -c pass`` is the interpreter's own
floor. The 1-minute load average is recorded with every row: on a shared
machine read the paired figures, not the seconds.

The issue's goal (issue 28): ``inspect`` on a tiny checkpoint within 0.15 s
whole process, or within 0.1 s of the anchor, whichever is larger.
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
TMP = os.path.join(OUT, "tmp-startup")

SCRIPT = "import sys; sys.argv[0] = 'tietool'; from tietool.cli import main; sys.exit(main())"  # the console script
ANCHOR = "import numpy, h5py"
GOAL_S, GOAL_OVER_ANCHOR_S = 0.15, 0.10

COMMANDS = [
    ("--help", ["--help"]),
    ("inspect", ["inspect", "fixtures/tf/gpt2"]),
    ("inspect --json", ["inspect", "fixtures/pt/llama_tied", "--json"]),
    ("verify-tie", ["verify-tie", "fixtures/tf/bert_mlm", "--quiet"]),
    ("convert", ["convert", "fixtures/tf/gpt2", "-o", "{tmp}/gpt2.safetensors", "--quiet"]),
    ("convert --names pt", ["convert", "fixtures/tf/gpt2", "--names", "pt", "-o", "{tmp}/gpt2-pt", "--quiet"]),
    ("check", ["check", "fixtures/tf/t5"]),
    ("fix", ["fix", "fixtures/damaged/pt/llama_flag_untied_no_head", "-o", "{tmp}/fixed"]),
    ("diff", ["diff", "fixtures/tf/gpt2", "fixtures/pt/gpt2"]),
]
RUN = ("run", ["run", "fixtures/tf/gpt2", "--mode", "embedding", "--ids", "1,2,3"])


def run(argv: list[str], env: dict, cwd: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run; raises on failure."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    p.returncode = code
    if code not in (0, 1):  # 1: a command's "found something" status (check, diff)
        raise RuntimeError(f"{argv[3:]}: exit {code}: {err.strip().splitlines()[-1] if err.strip() else ''}")
    return wall, ru.ru_utime + ru.ru_stime


def clean() -> None:
    shutil.rmtree(TMP, ignore_errors=True)
    os.makedirs(TMP)


def env_for(tree: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = tree
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: from bytecode
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=sys.executable, help="interpreter (default: this one)")
    ap.add_argument("--runs", type=int, default=9, help="pairs per row (default 9)")
    ap.add_argument("--baseline-tree", help="another checkout of tietool: its rows beside this one's, same runs")
    ap.add_argument("--with-run", action="store_true", help="also `run` (needs TensorFlow)")
    args = ap.parse_args()
    trees = [("", ROOT)] + ([("before: ", os.path.abspath(args.baseline_tree))] if args.baseline_tree else [])
    for _, tree in trees:
        subprocess.run([args.python, "-m", "compileall", "-q", os.path.join(tree, "tietool")],
                       env=env_for(tree), stdout=subprocess.DEVNULL, check=True)
    commands = COMMANDS + ([RUN] if args.with_run else [])
    rows: list[tuple[str, str, list[str]]] = [("python -c pass", ROOT, [args.python, "-c", "pass"]),
                                              (f'python -c "{ANCHOR}"', ROOT, [args.python, "-c", ANCHOR])]
    for label, argv in commands:
        for prefix, tree in trees:
            rows.append((f"{prefix}tietool {label}", tree, [args.python, "-c", SCRIPT, *argv]))
    os.makedirs(OUT, exist_ok=True)
    anchor = [args.python, "-c", ANCHOR]
    for _, tree, argv in rows:  # warm the page cache and the bytecode
        clean()
        run([a.format(tmp=TMP) for a in argv], env_for(tree), tree)
    results: dict[str, dict[str, list[float]]] = {label: {"wall": [], "cpu": [], "over": [], "ratio": [],
                                                          "cpu_over": [], "load": []} for label, _, _ in rows}
    uptime_before = os.getloadavg()
    for _ in range(args.runs):
        for label, tree, argv in rows:  # one pair per row per round: load drifts alike for all rows
            clean()
            a_wall, a_cpu = run(anchor, env_for(tree), tree)
            r = results[label]
            r["load"].append(os.getloadavg()[0])
            wall, cpu = run([a.format(tmp=TMP) for a in argv], env_for(tree), tree)
            r["wall"].append(wall)
            r["cpu"].append(cpu)
            r["cpu_over"].append(cpu - a_cpu)
            r["over"].append(wall - a_wall)
            r["ratio"].append(wall / a_wall)
    shutil.rmtree(TMP, ignore_errors=True)
    uptime_after = os.getloadavg()
    med = statistics.median
    lines = [f"{time.strftime('%Y-%m-%d %H:%M')} UTC, python {args.python}, {os.cpu_count()} CPUs, {args.runs} pairs "
             f"per row; load average (1/5/15 min) {'/'.join(f'{x:.1f}' for x in uptime_before)} before, "
             f"{'/'.join(f'{x:.1f}' for x in uptime_after)} after",
             "",
             "| command (tiny fixture) | wall (s) | min-max (s) | minus anchor (s) | x anchor | CPU (s) "
             "| CPU minus anchor's (s) | load 1m |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for label, _, _ in rows:
        r = results[label]
        lines.append(f"| `{label}` | {med(r['wall']):.3f} | {min(r['wall']):.3f}-{max(r['wall']):.3f} "
                     f"| {med(r['over']):+.3f} | {med(r['ratio']):.2f} | {med(r['cpu']):.3f} "
                     f"| {med(r['cpu_over']):+.3f} | {min(r['load']):.1f}-{max(r['load']):.1f} |")
    inspect = results["tietool inspect"]
    anchor_wall = med(results[f'python -c "{ANCHOR}"']["wall"])
    goal = max(GOAL_S, anchor_wall + GOAL_OVER_ANCHOR_S)
    met = med(inspect["over"]) <= GOAL_OVER_ANCHOR_S or med(inspect["wall"]) <= GOAL_S
    lines += ["", f"Goal (issue 28): `inspect` tiny <= max({GOAL_S} s, anchor + {GOAL_OVER_ANCHOR_S} s) = "
              f"{goal:.3f} s: {med(inspect['wall']):.3f} s, {med(inspect['over']):+.3f} s over the anchor "
              f"(paired): " + ("met" if met else "**not met**")]
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(OUT, "startup_results.md"), "w") as fh:
        fh.write(text + "\n")


if __name__ == "__main__":
    main()
