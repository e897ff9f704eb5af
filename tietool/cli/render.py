"""Turning library results into text for people. No I/O here."""

from __future__ import annotations

import shlex
import textwrap
from typing import TYPE_CHECKING, Sequence

from tietool.cli.tables import key_values, table
from tietool.textsafe import printable

if TYPE_CHECKING:  # annotations only: rendering imports no reader
    from tietool.audit.check import CheckReport, CheckResult
    from tietool.audit.fix import FixResult
    from tietool.convert import ConversionResult
    from tietool.diff.checkpoints import DiffResult, TensorDiff
    from tietool.layer.run import RunSummary
    from tietool.summary import InspectReport
    from tietool.ties.verify import Member, TieGroup, TieReport


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n} B"  # pragma: no cover


def shape_str(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def render_inspect(report: InspectReport) -> str:
    s = report.summary
    h = report.config_highlights
    pairs: list[tuple[str, object]] = [
        ("path", printable(report.path)),
        ("format", f"{report.format} ({report.format_description})"),
    ]
    if report.converted:
        pairs.append(("converted from", f"{report.origin_format} ({report.origin_description})"))
    pairs += [
        ("files", "\n".join(printable(f) for f in report.files)),
        ("tensors", f"{s.tensor_count}"
         + (f" ({s.optimizer_tensor_count} optimizer)" if s.optimizer_tensor_count else "")),
        ("parameters", f"{s.parameter_count:,}"),
        ("total size", f"{human_bytes(s.total_bytes)} ({s.total_bytes:,} bytes)"),
        ("by dtype", ", ".join(f"{k} {human_bytes(v)}" for k, v in s.bytes_by_dtype.items()) or "-"),
    ]
    if report.config_source:
        pairs.append(("config", printable(report.config_source)))
        pairs += _config_highlights(h)
    else:
        pairs.append(("config", "none"))
    pairs.append(("tie declaration", printable(report.tie_declaration.describe())))
    meta = dict(report.metadata)
    meta.update(report.keras_metadata)  # a .keras archive's metadata.json, also when carried
    for k, v in sorted(meta.items()):
        # tietool's own records (layout, config, names) are shown by what they mean, above
        if isinstance(v, (str, int, float)) and len(str(v)) < 120 and not str(k).startswith("tietool."):
            pairs.append((f"meta {printable(k)}", printable(str(v))))
    parts = [key_values(pairs)]
    has_roles = any(t.role != "weight" for t in report.tensors)
    headers = ["name", "shape", "dtype", "size"] + (["role"] if has_roles else [])
    rows = []
    for t in report.tensors:
        row = [printable(t.name) + (f" -> {printable(t.alias_of)}" if t.alias_of else ""),
               shape_str(t.shape), t.dtype, human_bytes(t.nbytes)]
        if has_roles:
            row.append(t.role)
        rows.append(row)
    if s.shown_count is not None:
        parts.append(f"{s.shown_count} of {s.tensor_count} tensors match the filter")
    parts.append(table(rows, headers) if rows else "(no tensors)")
    if report.ties:
        parts.append(render_tie_groups(report.ties))
        if any(g.verdict == "unverified" for g in report.ties):
            parts.append("unverified: inspect reads headers only; to compare the stored values bit for bit, run\n"
                         f"  tietool verify-tie {shell_quote(printable(report.path))}")
    if report.config_code:
        lines = ["Code in the config (reported, never run):"]
        lines += [f"  {printable(c['path'])}: {printable(c['what'])}" for c in report.config_code]
        parts.append("\n".join(lines))
    if report.warnings:
        parts.append("\n".join("warning: " + printable(w) for w in report.warnings))
    return "\n\n".join(parts)


def _config_highlights(h: dict) -> list[tuple[str, object]]:
    """The rows for :func:`tietool.config.highlights` (keys present only when the config has them)."""
    pairs: list[tuple[str, object]] = []
    for key in ("model_type", "class_name"):
        if h.get(key):
            pairs.append((key.replace("_", " "), printable(str(h[key]))))
    if h.get("architectures"):
        pairs.append(("architectures", printable(", ".join(map(str, h["architectures"])))))
    if h.get("vocab_size") is not None:
        pairs.append(("vocab size", h["vocab_size"]))
    if h.get("hidden_size") is not None:
        pairs.append(("hidden size", h["hidden_size"]))
    hub = h.get("kerashub")
    if hub:
        for key, text in (("final_logit_soft_cap", "soft cap"), ("dtype", "dtype policy")):
            if hub.get(key) is not None:
                pairs.append((text, printable(str(hub[key]))))
        modes = sorted({q["mode"] for q in (hub.get("quantized_layers") or {}).values()})
        if modes:
            pairs.append(("quantized", printable(", ".join(modes))))
    return pairs


def shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def _member_label(m: Member) -> str:
    text = printable(m.name)
    if m.transposed:
        text += " (T)"
    text += f" [{m.role}]"
    if m.same_storage_as:
        how = "alias of" if not m.stored else "same storage as"
        text += f" = {how} {printable(m.same_storage_as)}"
    return text


def _evidence(g: TieGroup) -> str:
    """One line per comparison (:meth:`tietool.ties.compare.Diff.as_dict`: the
    difference figures are there only when some bits differ)."""
    lines = []
    for c in g.comparisons:
        if c["equal"] and c["identical"]:
            lines.append(f"{printable(c['member'])}: identical")
        elif c["equal"]:
            lines.append(f"{printable(c['member'])}: equal within tolerance "
                         f"({c.get('bits_differ', 0)} element(s) differ in bits, "
                         f"max abs diff {c.get('max_abs_diff', 0.0):.6g})")
        else:
            what = "near copy" if c.get("near_copy") else "differs"
            first = ", ".join(str(r) for r in c.get("first_rows", []))
            lines.append(f"{printable(c['member'])}: {what}: max abs diff {c.get('max_abs_diff', 0.0):.6g}, "
                         f"{c.get('rows_differ', 0)} row(s) differ" + (f" (first: {first})" if first else "")
                         + (f", {c['nan_mismatch']} NaN on one side only" if c.get("nan_mismatch") else ""))
    if not lines and g.tie_source:
        lines.append(printable(g.tie_source))
    return "\n".join(lines) or "-"


def render_tie_groups(groups: Sequence[TieGroup]) -> str:
    """The tie groups (:class:`tietool.ties.verify.TieGroup`) as one table."""
    rows = []
    for g in groups:
        members = "\n".join(_member_label(m) for m in g.members)
        rows.append([members, g.kind, g.verdict, _evidence(g)])
    return "Tie groups:\n" + table(rows, ["members", "stored as", "verdict", "evidence"])


def render_verify_tie(report: TieReport) -> str:
    cfg = report.config
    pairs: list[tuple[str, object]] = [
        ("path", printable(report.path)),
        ("format", report.format),
        ("config", printable(cfg["file"]) if cfg.get("file") else "none"),
        ("tie declaration", printable(report.tie_declaration.describe())),
        ("comparison", "exact (bitwise)" if report.exact else f"atol={report.atol}, rtol={report.rtol}"),
    ]
    hub = cfg.get("kerashub")
    if hub:
        pairs.insert(3, ("keras-hub", printable(", ".join(_kerashub_bits(hub)))))
    parts = [key_values(pairs)]
    if report.groups:
        parts.append(render_tie_groups(report.groups))
    lines = []
    for g in report.groups:
        lines.append(f"{g.verdict}: {printable(g.reason)}")
        lines += _agreement_lines(g.agreement)
        cons = g.consistency
        if cons and not cons["consistent"]:
            side = {"config": "the config is wrong", "weights": "the weights are wrong"}.get(
                cons["wrong_side"], "unclear which side is wrong")
            lines.append(f"config contradicts weights ({side}): {printable(cons['message'])}")
    if not report.groups:
        lines.append(printable(report.message))
    lines.append("TIED" if report.tied else "NOT TIED")
    parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _kerashub_bits(hub: dict) -> list[str]:
    bits = [str(hub.get("task_class") or hub.get("backbone_class"))]
    if hub.get("final_logit_soft_cap") is not None:
        bits.append(f"final_logit_soft_cap={hub['final_logit_soft_cap']}")
    if hub.get("dtype"):
        bits.append(f"dtype {hub['dtype']}")
    modes = sorted({q["mode"] for q in (hub.get("quantized_layers") or {}).values()})
    if modes:
        bits.append("quantized " + "/".join(modes))
    return bits


def _agreement_lines(agree: dict | None) -> list[str]:
    """Copies that differ: the majority (:meth:`tietool.ties.majority.Agreement.to_json`)."""
    if not agree:
        return []
    n = sum(len(c) for c in agree["classes"])
    lines = [f"majority: {len(agree['majority'])} of {n} copies identical" if agree["majority"]
             else f"majority: none ({n} copies, no strict majority)"]
    for o in agree["odd_ones_out"]:  # with no majority (two copies), neither is the odd one out
        name = printable(o["name"])
        label = f"odd one out: {name}:" if agree["majority"] else f"copies differ: {name}"
        lines.append(f"{label} first differs at {o['index']} "
                     f"({o['value']} vs {o['expected']} in {printable(o['reference'])})")
    return lines


def render_run(summary: RunSummary) -> str:
    pairs: list[tuple[str, object]] = [
        ("mode", summary.mode),
        ("embedding", printable(summary.embedding)),
        ("decoder", printable(summary.decoder) if summary.decoder else "none used (tied)"),
        ("tied", f"{str(summary.tied).lower()} ({summary.tie_kind})"),
        ("output shape", shape_str(summary.shape)),
        ("dtype", summary.dtype),
    ]
    lay = summary.layer or {}
    if lay.get("dtype_policy") and lay["dtype_policy"] != summary.dtype:
        pairs.append(("dtype policy", printable(str(lay["dtype_policy"]))))
    if lay.get("soft_cap") is not None:
        pairs.append(("soft cap", f"{lay['soft_cap']} (tanh(x / cap) * cap)"))
    if lay.get("quantization"):
        pairs.append(("quantized", printable(str(lay["quantization"]))))
    pairs += [
        ("preview", ", ".join(f"{v:.6g}" for v in summary.preview) + (" ..." if summary.preview else "")),
    ]
    if summary.output:
        pairs.append(("written to", printable(summary.output)))
    parts = [key_values(pairs)]
    if summary.top_k:
        rows = [[shape_str(item["position"]),
                 "  ".join(f"{t}:{v:.4f}" for t, v in zip(item["tokens"], item["logits"], strict=False))]
                for item in summary.top_k]
        parts.append(table(rows, ["position", "top tokens (id:logit)"]))
    return "\n\n".join(parts)


#: Lines of one kind (aliases, dropped tensors ...) in a summary before "... and N more".
SUMMARY_LINES = 20


def _bounded_lines(lines: list[str], what: str) -> list[str]:
    """At most :data:`SUMMARY_LINES` of ``lines`` (a file decides how many there are), then a count."""
    if len(lines) <= SUMMARY_LINES:
        return lines
    return lines[:SUMMARY_LINES] + [f"  ... and {len(lines) - SUMMARY_LINES:,} more {what} (--json lists them all)"]


def _by_value(mapping: dict[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in mapping.items():
        out.setdefault(value, []).append(key)
    return out


def render_convert(r: ConversionResult) -> str:
    """The summary of `convert` (both naming schemes)."""
    pt = r.pt
    lines = [f"{printable(r.source)} ({r.source_format}) -> {printable(r.output)}" + (" (PyTorch names)" if pt else "")]
    if r.to_inferred:
        lines.append(f"  chose --to {r.to}: {r.to_inferred}")
    lines += [f"  wrote {printable(f)}" for f in r.files]
    if r.copied_files:
        lines.append(f"  copied {len(r.copied_files)} other file(s) unchanged")
    lines.append(f"  {r.tensors} tensors, {r.bytes:,} bytes of tensor data, {r.seconds:.2f} s"
                 + (", verified" if r.verified else ", not verified")
                 + ("" if r.fsynced else ", not fsynced (--no-fsync)"))
    if pt is not None:
        if pt.transposed:
            lines.append(f"  transposed {len(pt.transposed)} kernel(s)")
        if pt.reshaped:
            lines.append(f"  moved size-1 axes of {len(pt.reshaped)} tensor(s) to the {pt.pt_class} shapes")
        lines += _bounded_lines([f"  dropped {printable(name)}: {printable(why)}" for name, why in pt.dropped.items()],
                                "dropped")
        lines += _bounded_lines([f"  wrote {printable(pt_name)} once for the stored copies "
                                 + ", ".join(printable(c) for c in copies)
                                 for pt_name, copies in _by_value(pt.copies_merged).items()], "copies")
        lines += _bounded_lines([f"  tied {printable(head)} left out (transformers ties it to {printable(emb)})"
                                 for head, emb in pt.tied_heads_left_out.items()], "tied heads")
    lines += _bounded_lines([f"  alias {printable(removed)} -> {printable(kept)}"
                             for removed, kept in r.aliases.items()], "aliases")
    lines += [f"  note: {printable(n)}" for n in r.notes]
    return "\n".join(lines)


def _check_tie(c: CheckResult) -> str:
    """The tie column: the declared value (its source opens the row's text)."""
    d = c.declaration
    return "-" if d is None or d.value is None else str(d.value).lower()


def fix_command(c: CheckResult) -> str | None:
    """The ``tietool fix`` command line that repairs ``c`` (None: nothing to fix)."""
    from tietool.audit.check import suggest_output

    if c.ok is not False:
        return None
    cmd = f"tietool fix {shlex.quote(c.path)} -o {shlex.quote(suggest_output(c.path))}"
    return cmd + " --prefer embedding" if c.needs_prefer else cmd


def check_document(report: CheckReport, exit_code: int) -> dict:
    """``check --json``: the report, each checkpoint with its ``fix`` command,
    and the exit status."""
    checkpoints = []
    for c, d in zip(report.checkpoints, report.to_json()["checkpoints"], strict=True):
        out = {}
        for k, v in d.items():
            out[k] = v
            if k == "problems":
                out["fix"] = fix_command(c)
        checkpoints.append(out)
    return {**report.to_json(), "checkpoints": checkpoints, "exit_code": exit_code}


def render_check(report: CheckReport) -> str:
    """`tietool check`: one row per checkpoint, then the fix commands."""
    rows = []
    for c in report.checkpoints:
        verdict = "ok" if c.ok else "unreadable" if c.ok is None else "PROBLEM"
        if c.ok is None:
            problem = printable(c.error or "")
        elif c.problems:
            problem = printable("; ".join(p.message for p in c.problems))
        else:
            problem = f"stored: {c.stored or '-'}"
        if c.warnings:
            problem += "; " + printable("; ".join(f"warning: {w.message}" for w in c.warnings))
        said = printable(c.declaration.describe()) if c.declaration is not None else None
        if said and said not in problem:  # the same line inspect and verify-tie print (problems quote it)
            problem = f"tie declaration: {said}; {problem}"
        rows.append([printable(c.path), verdict, _check_tie(c),
                     textwrap.fill(problem, 72, break_long_words=False, break_on_hyphens=False)])
    parts = [table(rows, ["path", "verdict", "tie", "problem"]) if rows else "(no checkpoints found)"]
    fixes = [f"  {cmd}" for cmd in map(fix_command, report.checkpoints) if cmd]
    if fixes:
        parts.append("fix:\n" + "\n".join(printable(f) for f in fixes))
    s = report.to_json()["summary"]
    parts.append(f"{s['checked']} checkpoint(s): {s['consistent']} consistent, {s['problems']} with a problem, "
                 f"{s['unreadable']} unreadable ({s['seconds']:.2f} s)")
    return "\n\n".join(parts)


def check_error_lines(report: CheckReport) -> list[str]:
    """`tietool check`: one ``Error: PATH: what is wrong`` line (stderr) per
    checkpoint that could not be read; the table lists it too."""
    return [f"Error: {printable(c.path)}: {printable(c.error or 'cannot be read')}"
            for c in report.checkpoints if c.ok is None]


def render_fix(r: FixResult) -> str:
    """`tietool fix`: what was repaired and written."""
    if r.nothing_to_fix:
        return f"{printable(r.source)}: nothing to fix (config and weights agree); nothing written"
    lines = [f"{printable(r.source)} -> {printable(r.output or '')}"]
    lines += [f"  repaired: {printable(x.message)}" for x in r.repairs]
    lines += [f"  wrote {printable(f)}" for f in r.written]
    if r.copied:
        lines.append(f"  copied {len(r.copied)} other file(s) unchanged")
    lines.append(f"  {r.seconds:.2f} s" + (", verified" if r.verified else ", not verified"))
    return "\n".join(lines)


# -- diff ---------------------------------------------------------------------------------

def _g(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return "0" if x == 0 else f"{x:.3g}"


def _diff_name(t: TensorDiff) -> str:
    a, b = t.a, t.b
    name = printable(str(a if a is not None else b))
    if a is not None and b is not None and a != b:
        how = f"{t.match}" + (f", {t.transform}" if t.transform else "")
        name += f"\n  = {printable(b)} ({how})"
    elif t.match and t.match != "name":
        name += f" ({t.match})"
    return name


def _diff_row(t: TensorDiff) -> list:
    if t.status in ("only-a", "only-b", "shape-mismatch"):
        detail = (f"{shape_str(t.shape_a or ())} vs {shape_str(t.shape_b or ())}" if t.status == "shape-mismatch"
                  else shape_str(t.shape_a or t.shape_b or ()) + f" {t.dtype_a or t.dtype_b}")
        return [t.status, _diff_name(t), "-", "-", "-", detail, "-"]
    differ = f"{t.elements_differ:,} of {t.elements:,}" + (f", {t.rows_differ:,} row(s)" if t.elements_differ else "")
    if t.status == "dtype-mismatch":
        differ = f"{t.dtype_a} vs {t.dtype_b}; " + differ
    first = shape_str(t.first_index) if t.first_index is not None else "-"
    return [t.status, _diff_name(t), _g(t.max_abs), _g(t.max_rel), _g(t.rel_l2), differ, first]


def render_diff(report: DiffResult, show_all: bool = False, plot: str | None = None) -> str:
    """A :class:`~tietool.diff.checkpoints.DiffResult` for people: differences
    first, identical tensors counted (listed with ``show_all``); ``plot``: the
    plot file written."""
    s = report.summary()
    by = s["by_status"]
    matched = ", ".join(f"{n} by {how}" for how, n in s["by_match"].items()) or "none"
    pairs: list[tuple[str, object]] = [
        ("a", f"{printable(report.a)} ({report.format_a})"),
        ("b", f"{printable(report.b)} ({report.format_b})"),
        ("comparison", s["comparison"]),
        ("matched", f"{s['pairs']} pair(s): {matched}" + (f"; {s['transformed']} with a layout change"
                                                          if s["transformed"] else "")),
        ("result", ", ".join(f"{n} {k}" for k, n in by.items() if n) or "no tensors"),
    ]
    parts = [key_values(pairs)]
    rows = [_diff_row(t) for t in report.tensors if show_all or t.status != "identical"]
    hidden = by.get("identical", 0) if not show_all else 0
    if rows:
        parts.append(table(rows, ["status", "tensor", "max abs", "max rel", "rel L2", "elements differ", "first"]))
    if hidden:
        parts.append(f"{hidden} identical tensor(s) not listed (--all lists them)")
    layers = report.layers
    if len(layers) > 1 or (layers and layers[0].layer != "(no layer)"):
        lrows = [[printable(g.layer), g.tensors, g.differ,
                  f"{g.elements_differ:,} of {g.elements:,}"
                  + (f" ({100 * g.elements_differ / g.elements:.1f}%)" if g.elements else ""),
                  _g(g.max_abs), _g(g.max_rel_l2)] for g in layers]
        parts.append("Per layer:\n" + table(lrows, ["layer", "tensors", "differ", "elements differ", "max abs",
                                                    "max rel L2"]))
    if plot:
        parts.append(f"plot: wrote {printable(plot)} (rel L2 per tensor, grouped by layer)")
    parts.append("IDENTICAL" if report.identical else "DIFFERENT")
    return "\n\n".join(parts)
