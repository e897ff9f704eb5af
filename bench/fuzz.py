"""Mutation fuzzing of every reader, in-process and through the CLI.

    python bench/fuzz.py [--cases 10000] [--cli 200] [--seed 0] [--save-escapes DIR] [--records N]

Each case copies a valid fixture, applies one or two byte-level mutations
(bit flips, byte sets, truncation, 2/4/8-byte integer overwrites, decimal
number edits in JSON headers, deletes, inserts, splices) to one of its
files, then calls ``tietool.open_checkpoint(path)`` and reads every tensor.
Only ``tietool.errors.TietoolError`` subclasses may escape; anything else
is counted as an escape. The CLI sample runs ``tietool inspect`` on mutated
copies in subprocesses: exit status must be 0 or 2 and, on 2, stderr one
line ``Error: ...`` without a traceback.

``--records N`` runs N structure-aware cases instead (tests/record_fuzz.py:
tietool's own records mutated as JSON trees, HDF5 link graphs; each case
converted): anything but a tietool error, a case over 20 s, or a file
written outside the output is a failure.

Prints the case count, how many were rejected with which error class, how
many were accepted, and every escape. Exits 1 if anything escaped.
"""

from __future__ import annotations

import argparse
import collections
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import hostile_corpus as hc  # noqa: E402

TIETOOL = str(Path(sys.executable).with_name("tietool"))


def one_case(reader: str, workdir: Path, rng: random.Random) -> tuple[Path, str, str]:
    """Set up a mutated copy of ``reader``'s fixture in ``workdir``."""
    if workdir.exists():
        shutil.rmtree(workdir)
    path, files = hc.setup_target(reader, workdir)
    target = rng.choice(sorted(files))
    data = files[target]
    kinds = [rng.choice(hc.MUTATIONS) for _ in range(rng.choice((1, 1, 2)))]
    for kind in kinds:
        data = hc.mutate(data, kind, rng)
    (workdir / target).write_bytes(data)
    return path, target, "+".join(kinds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000, help="in-process mutation cases (default 10000)")
    ap.add_argument("--cli", type=int, default=200, help="CLI subprocess cases (default 200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-escapes", metavar="DIR", help="keep a copy of every escaping input here")
    ap.add_argument("--records", type=int, default=0, metavar="N",
                    help="run N structure-aware record and link-graph cases instead")
    args = ap.parse_args()
    if args.records:
        return records(args.records, args.seed)

    readers = sorted(hc.FUZZ_TARGETS)
    rng = random.Random(args.seed)
    rejected: collections.Counter = collections.Counter()
    per_reader: dict[str, collections.Counter] = {r: collections.Counter() for r in readers}
    escapes: list[str] = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tietool-fuzz-") as tmp:
        work = Path(tmp) / "case"
        for i in range(args.cases):
            reader = readers[i % len(readers)]
            path, target, kinds = one_case(reader, work, rng)
            try:
                outcome = hc.open_and_read_all(path) or "accepted"
            except BaseException as exc:  # noqa: BLE001 - that is the point
                if isinstance(exc, KeyboardInterrupt):
                    raise
                outcome = "ESCAPE"
                tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
                escapes.append(f"[{i}] {reader} {target} {kinds}: {type(exc).__name__}: {exc}\n    at {tb[-2].strip()}")
                if args.save_escapes:
                    dest = Path(args.save_escapes) / f"case{i}-{reader}"
                    shutil.copytree(work, dest, dirs_exist_ok=True)
            if outcome not in ("accepted", "ESCAPE"):
                rejected[outcome] += 1
            per_reader[reader][outcome] += 1
        t_inproc = time.monotonic() - t0

        cli_bad: list[str] = []
        cli_codes: collections.Counter = collections.Counter()
        t1 = time.monotonic()
        for i in range(args.cli):
            reader = readers[i % len(readers)]
            path, target, kinds = one_case(reader, work, rng)
            proc = subprocess.run([TIETOOL, "inspect", str(path)], capture_output=True, text=True, timeout=120)
            cli_codes[proc.returncode] += 1
            lines = proc.stderr.splitlines()
            ok = proc.returncode == 0 or (
                proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("Error: ")
                and "Traceback" not in proc.stderr
            )
            if not ok:
                cli_bad.append(f"[cli {i}] {reader} {target} {kinds}: exit {proc.returncode}: "
                               f"{proc.stderr.strip()[:300]}")
        t_cli = time.monotonic() - t1

    total_rejected = sum(rejected.values())
    accepted = sum(c["accepted"] for c in per_reader.values())
    print(f"in-process cases: {args.cases} in {t_inproc:.1f} s ({len(readers)} readers: {', '.join(readers)})")
    print(f"  rejected: {total_rejected}")
    for cls, n in rejected.most_common():
        print(f"    {cls}: {n}")
    print(f"  accepted (mutation left a readable checkpoint): {accepted}")
    print(f"  escapes (non-tietool exceptions): {len(escapes)}")
    print("  per reader:")
    for r in readers:
        c = per_reader[r]
        print(f"    {r}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    codes = ", ".join(f"{k}: {v}" for k, v in sorted(cli_codes.items()))
    print(f"CLI cases: {args.cli} in {t_cli:.1f} s; exit codes: {codes}")
    print(f"  CLI escapes (not exit 0, or not one 'Error:' line with exit 2): {len(cli_bad)}")
    for e in escapes[:50] + cli_bad[:50]:
        print("ESCAPE " + e)
    return 1 if escapes or cli_bad else 0


def records(n: int, seed: int) -> int:
    import record_fuzz

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tietool-fuzz-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        summary = record_fuzz.run_cases(work, n, seed, stop_at_first=False)
    print(f"record and link-graph cases: {summary.cases} in {time.monotonic() - t0:.1f} s")
    for outcome, count in summary.outcomes.most_common():
        print(f"  {outcome}: {count}")
    for f in summary.failures[:50]:
        print("FAILURE " + f)
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(main())
