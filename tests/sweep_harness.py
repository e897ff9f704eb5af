"""What tietool must say on every checkpoint of a transformers 5 class sweep (fixtures/make_pt_sweep.py).

    PYTHONPATH=$PWD python tests/sweep_harness.py /tmp/tietool-sweep [--only REGEX] [--no-round-trip] [--json OUT]

A sweep folder holds ``SWEEP.json`` (the truth, from the models transformers 5 built) and one folder per
checkpoint. :func:`evaluate` runs tietool's library (in process: thousands of checkpoints) on each and returns one
:class:`Outcome` per check:

genuine checkpoints (what ``save_pretrained`` wrote)
  ``check``        ``check`` finds no problem (exit 0);
  ``verdict``      ``verify-tie`` says tied exactly when the built model's head shares the embedding's storage;
  ``head``         where the head is stored (not tied), verify-tie's group has a decoder member named as the head;
  ``declaration``  inspect, verify-tie and check carry one ``tie_declaration`` (where tietool reports it), and
                   its value is what transformers 5 did (a model built from the saved config ties or not);
  ``round_trip``   convert to H5 and back to safetensors: every tensor bit for bit;
broken copies (every ``tie_word_embeddings`` deleted or flipped, the weights untouched)
  ``check``        exit 1 where transformers 5 would now tie otherwise (``broken``), exit 0 where not;
  ``declaration``  the same three-way agreement, and its value is what a model built from the copy's config does.

``fix`` restoring the original's logits needs torch: tests/interop/test_pt_sweep_fix.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBSET = ROOT / "fixtures" / "pt_sweep"


@dataclass(frozen=True)
class Outcome:
    checkpoint: str  # folder name inside the sweep
    check: str  # check | verdict | head | declaration | round_trip
    ok: bool | None  # None: does not apply (said why in detail)
    detail: str = ""


def load_sweep(folder: str | os.PathLike) -> dict:
    return json.loads((Path(folder) / "SWEEP.json").read_text())


def materialise(folder: str | os.PathLike, into: str | os.PathLike) -> Path:
    """A sweep folder whose broken copies are complete. The committed subset stores a broken copy as its
    ``config.json`` alone (``weights_from``: the original, whose other files it shares byte for byte):
    copied with those files into ``into``. A full sweep (every copy complete) is returned as it is."""
    folder, into = Path(folder), Path(into)
    sweep = load_sweep(folder)
    partial = [b for _n, _t, b in cases(sweep) if b is not None and b.get("weights_from")]
    if not partial:
        return folder
    shutil.copytree(folder, into, dirs_exist_ok=True)
    for b in partial:
        for f in (folder / b["weights_from"]).iterdir():
            if f.name != "config.json":
                shutil.copy2(f, into / b["path"] / f.name)
    return into


def cases(sweep: dict) -> list[tuple[str, dict, dict | None]]:
    """``(folder name, the variant's truth, broken-copy record or None)`` for every checkpoint."""
    out = []
    for rec in sweep["classes"]:
        for truth in rec.get("variants", {}).values():
            out.append((truth["path"], truth, None))
            for b in truth.get("broken", []):
                out.append((b["path"], truth, b))
    return out


def _declarations(path: str) -> dict[str, dict | None]:
    """``tie_declaration`` as inspect, verify-tie and check report it (None: not reported)."""
    from tietool.audit.check import check_checkpoint
    from tietool.summary import inspect_checkpoint
    from tietool.ties.verify import verify_tie

    got: dict[str, dict | None] = {}
    for name, fn in (("inspect", inspect_checkpoint), ("verify-tie", verify_tie), ("check", check_checkpoint)):
        doc = fn(path).to_json()
        got[name] = doc.get("tie_declaration")
    return got


def _declaration(name: str, path: str, expect: bool) -> Outcome:
    got = _declarations(path)
    if all(v is None for v in got.values()):
        return Outcome(name, "declaration", None, "no command reports tie_declaration yet")
    values = {k: (v or {}).get("value") for k, v in got.items()}
    if len({json.dumps(v, sort_keys=True) for v in got.values()}) != 1:
        return Outcome(name, "declaration", False, f"the commands disagree: {values}")
    value = next(iter(values.values()))
    return Outcome(name, "declaration", value is expect or (value is None and not expect),
                   f"tie_declaration {value}, transformers 5 ties: {expect}")


def _verdict(name: str, report, truth: dict) -> list[Outcome]:
    want = truth["shared"]
    out = [Outcome(name, "verdict", report.tied is want,
                   f"verify-tie tied={report.tied}, built model shared={want}: {report.message[:300]}")]
    if not want and truth.get("head_stored", truth["head"]) is None:
        out.append(Outcome(name, "head", None, "the head's values are stored under no name (computed on load)"))
    elif not want:
        members = [m.name for g in report.groups for m in g.members if m.role == "decoder"]
        stored = truth.get("head_stored") or truth["head"]
        out.append(Outcome(name, "head", stored in members,
                           f"head {stored} {truth['head_shape']}; verify-tie's decoders: {members}"))
    return out


def _round_trip(name: str, path: str) -> Outcome:
    from tietool.convert import convert
    from tietool.formats import open_checkpoint

    with tempfile.TemporaryDirectory(prefix="tietool-sweep-") as tmp:
        h5, back = os.path.join(tmp, "h5"), os.path.join(tmp, "back")
        convert(path, "h5", out=h5, fsync=False)
        convert(h5, "safetensors", out=back, fsync=False)
        with open_checkpoint(path) as a, open_checkpoint(back) as b:
            if sorted(a.tensors) != sorted(b.tensors):
                odd = sorted(set(a.tensors) ^ set(b.tensors))[:5]
                return Outcome(name, "round_trip", False, f"names differ: {odd}")
            for tname, t in a.tensors.items():
                u = b.tensors[tname]
                if (t.shape, t.dtype) != (u.shape, u.dtype) or a.read(tname).tobytes() != b.read(tname).tobytes():
                    return Outcome(name, "round_trip", False, f"{tname} differs")
    return Outcome(name, "round_trip", True, "")


def evaluate_one(folder: Path, name: str, truth: dict, broken: dict | None, round_trip: bool = True) -> list[Outcome]:
    from tietool.audit.check import check_checkpoint
    from tietool.errors import TietoolError
    from tietool.ties.verify import verify_tie

    path = str(folder / name)
    try:
        res = check_checkpoint(path)
        codes = [p.code for p in res.problems]
        if broken is None:
            out = [Outcome(name, "check", res.ok is True, f"problems: {codes}")]
            out += _verdict(name, verify_tie(path), truth)
            out.append(_declaration(name, path, truth["shared"]))
            if round_trip:
                out.append(_round_trip(name, path))
            return out
        want = not broken["broken"]
        out = [Outcome(name, "check", res.ok is want, f"ok={res.ok} (want {want}) problems: {codes}")]
        out.append(_declaration(name, path, broken["declares_tie"]))
        return out
    except TietoolError as exc:
        return [Outcome(name, "check", False, f"error: {exc}")]


def evaluate(folder: str | os.PathLike, only: str | None = None, round_trip: bool = True) -> list[Outcome]:
    folder = Path(folder)
    sweep = load_sweep(folder)
    out: list[Outcome] = []
    for name, truth, broken in cases(sweep):
        if only and not re.search(only, name):
            continue
        out.extend(evaluate_one(folder, name, truth, broken, round_trip))
    return out


def summary(outcomes: list[Outcome]) -> dict:
    """Per check kind and checkpoint kind (genuine / broken): passed, failed, not applicable."""
    table: dict[str, Counter] = {}
    for o in outcomes:
        kind = ("broken " if "__flag_" in o.checkpoint else "genuine ") + o.check
        table.setdefault(kind, Counter())["n/a" if o.ok is None else "pass" if o.ok else "fail"] += 1
    return {k: dict(v) for k, v in sorted(table.items())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="tietool's checks on a transformers 5 class sweep")
    ap.add_argument("sweep", nargs="?", default=str(SUBSET))
    ap.add_argument("--only")
    ap.add_argument("--no-round-trip", action="store_true")
    ap.add_argument("--json", help="write every outcome here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tietool-sweep-") as tmp:
        outcomes = evaluate(materialise(args.sweep, tmp), args.only, not args.no_round_trip)
    for o in outcomes:
        if o.ok is False:
            print(f"FAIL {o.check:12s} {o.checkpoint}: {o.detail}")
    print(json.dumps(summary(outcomes), indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps([o.__dict__ for o in outcomes], indent=1))
    return 1 if any(o.ok is False for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
