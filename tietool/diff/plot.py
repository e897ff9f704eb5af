"""``tietool diff --plot FILE.png``: the relative difference of every pair,
grouped by layer, on a log scale. Needs matplotlib (the ``plot`` extra);
drawn with the Agg canvas (no display, no pyplot state), written to a
temporary file beside FILE and renamed into place."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile

from tietool.diff.checkpoints import DIFFERS, DTYPE, IDENTICAL, NEAR, DiffResult, layer_sort_key
from tietool.errors import MissingDependencyError, OutputExistsError, UsageError

INSTALL_HINT = "--plot needs matplotlib, which is not installed: pip install 'tietool[plot]'"
COLOURS = {IDENTICAL: "#9e9e9e", NEAR: "#f59e0b", DIFFERS: "#d62728", DTYPE: "#7b3fa0"}


def _matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError(INSTALL_HINT) from None
    return Figure, FigureCanvasAgg


def check_plot_output(path: str, force: bool) -> None:
    """Refuse before any work: no matplotlib, an existing file without
    ``force``, or a folder that does not exist."""
    _matplotlib()
    target = os.path.abspath(path)
    if os.path.isdir(target):
        raise UsageError("--plot needs a file name, this is a folder", path)
    if os.path.lexists(target) and not force:
        raise OutputExistsError("plot file exists (use --force to overwrite)", path)
    if not os.path.isdir(os.path.dirname(target)):
        raise UsageError("cannot write the plot: its folder does not exist", path)


def write_plot(result: DiffResult, path: str, force: bool = False) -> None:
    """Draw ``result`` into the PNG file ``path`` (see the module doc)."""
    Figure, FigureCanvasAgg = _matplotlib()
    check_plot_output(path, force)
    shown = [t for t in result.tensors if t.status in COLOURS]
    shown.sort(key=lambda t: (layer_sort_key(t.layer), t.key))
    values = [t.rel_l2 for t in shown if t.rel_l2 is not None and math.isfinite(t.rel_l2) and t.rel_l2 > 0]
    floor = 10 ** math.floor(math.log10(min(values))) / 10 if values else 1e-12
    ceiling = 10 ** math.ceil(math.log10(max(values))) * 10 if values else 1.0

    fig = Figure(figsize=(11, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ticks, labels = _layer_bands(ax, shown)
    for status, colour in COLOURS.items():
        _scatter_status(ax, shown, status, colour, floor, ceiling)
    ax.set_yscale("log")
    ax.set_ylim(floor / 2, ceiling * 2)
    ax.set_xlim(-1, max(1, len(shown)))
    step = max(1, math.ceil(len(ticks) / 40))
    ax.set_xticks(ticks[::step])
    ax.set_xticklabels([_text(lab[-28:]) for lab in labels[::step]], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("relative L2 error ||a-b|| / ||a||")
    ax.grid(axis="y", which="major", color="#dddddd", zorder=1)
    ax.set_title(_title(result, len(shown)), fontsize=10)
    if shown:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="identical: bottom\n"
                  "||a|| = 0: top", title_fontsize=7, alignment="left")
    fig.tight_layout()
    _save(fig, path)


def _layer_bands(ax, shown: list) -> tuple[list[float], list[str]]:
    """Shade every other layer's span; the layers' tick positions and labels."""
    start = 0
    ticks: list[float] = []
    labels: list[str] = []
    for i, t in enumerate(shown + [None]):
        if t is None or (i and t.layer != shown[i - 1].layer):
            if len(ticks) % 2 == 0:
                ax.axvspan(start - 0.5, i - 0.5, color="#eef2f7", zorder=0)
            ticks.append((start + i - 1) / 2)
            labels.append(shown[start].layer)
            start = i
    return ticks, labels


def _scatter_status(ax, shown: list, status: str, colour: str, floor: float, ceiling: float) -> None:
    """The pairs of one status: identical at the bottom, ||a|| = 0 at the top."""
    xs, ys, tops = [], [], []
    for x, t in enumerate(shown):
        if t.status != status:
            continue
        v = t.rel_l2
        if status == IDENTICAL or v == 0:
            xs.append(x)
            ys.append(floor)
        elif v is None or not math.isfinite(v):
            tops.append(x)  # ||a|| = 0: no relative error, drawn at the top
        else:
            xs.append(x)
            ys.append(v)
    if xs:
        ax.scatter(xs, ys, s=18, color=colour, label=f"{status} ({len(xs)})", zorder=3,
                   marker="o" if status != IDENTICAL else "_")
    if tops:
        ax.scatter(tops, [ceiling] * len(tops), s=30, color=colour, marker="^", zorder=3,
                   label=f"{status}, ||a|| = 0 ({len(tops)})")


def _title(result: DiffResult, shown: int) -> str:
    mode = "exact" if result.exact else f"atol={result.atol or 0}, rtol={result.rtol or 0}"
    missing = sum(1 for t in result.tensors if t.status not in COLOURS)
    title = f"{_short(result.a)} vs {_short(result.b)}: {shown} tensor(s), {mode}"
    if missing:
        title += f"; {missing} not plotted (only in one, or shapes differ)"
    return title


def _save(fig, path: str) -> None:
    """The PNG written to a temporary file beside ``path``, renamed into place."""
    target = os.path.abspath(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.tietool-tmp-", dir=os.path.dirname(target))
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _text(text: str) -> str:
    """Names from a file as plain text: control characters escaped, no mathtext."""
    from tietool.textsafe import printable

    return printable(text).replace("$", r"\$")


def _short(path: str, width: int = 40) -> str:
    path = path.rstrip("/")
    return _text(path if len(path) <= width else "..." + path[-(width - 3):])
