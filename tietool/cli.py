"""The command line: thin. Each command parses its options, calls one library
function, and renders the result as a table or as JSON. Errors are mapped to
one line and an exit status here, in :class:`TietoolGroup`, and nowhere else.

Start-up stays light: nothing heavy (h5py, numpy, TensorFlow) is imported
until a command runs.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any, Callable

import click

from . import __version__
from .errors import TietoolError

EXIT_OK = 0
EXIT_NOT_TIED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3

EXIT_CODES = """\b
Exit status:
  0  success (verify-tie: tied, every stored copy identical)
  1  verify-tie: not tied, a copy differs, or no output layer
  2  bad input or usage: one line "Error: FILE: what is wrong" on stderr
  3  internal error (a bug; --debug or TIETOOL_DEBUG=1 shows the traceback)"""


def _debug_enabled(ctx: click.Context | None) -> bool:
    if os.environ.get("TIETOOL_DEBUG", "") not in ("", "0"):
        return True
    root = ctx.find_root() if ctx else None
    return bool(root and root.obj and root.obj.get("debug"))


class TietoolGroup(click.Group):
    """Maps every error to one line on stderr and an exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TietoolError as exc:
            if _debug_enabled(ctx):
                traceback.print_exc()
            click.echo(f"Error: {_one_line(str(exc))}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            # `tietool inspect ... | head`: not an error worth a traceback
            sys.stderr.close()
            ctx.exit(EXIT_OK)
        except MemoryError:
            click.echo("Error: out of memory", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except Exception as exc:  # a bug in tietool, not bad input
            if _debug_enabled(ctx):
                traceback.print_exc()
            click.echo(f"Error: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
                       "(please report; --debug shows the traceback)", err=True)
            ctx.exit(EXIT_INTERNAL)


def _one_line(text: str) -> str:
    from .render import printable

    return printable(" ".join(text.split("\n")), backslash=False)


# -- shared options (decorators) -------------------------------------------------

def json_option(f: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")(f)


def output(data: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    """The one place results are printed: JSON for scripts, text for people.
    Rendering happens before anything is written, so output is all or nothing."""
    text = json.dumps(data, indent=2, default=_json_default) if as_json else render(data)
    click.echo(text)


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, tuple)):
        return list(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# -- commands ------------------------------------------------------------------------

@click.group(cls=TietoolGroup, epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="tietool")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Read, verify, run and convert checkpoints whose embedding and output
    (decoder) weights are tied: Keras 2 / transformers TF HDF5 (tf_model.h5),
    Keras 3 .weights.h5 / .keras, and safetensors. No TensorFlow needed, and
    nothing from a checkpoint is ever executed."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


@cli.command(epilog=EXIT_CODES)
@click.argument("path", type=click.Path(path_type=str))
@click.option("--filter", "filter_glob", metavar="GLOB", help="Only list tensors whose name matches GLOB (e.g. '*embed*').")
@json_option
def inspect(path: str, filter_glob: str | None, as_json: bool) -> None:
    """List every stored tensor of PATH (file, shard index or model folder)
    with the format, config highlights and tie groups. Reads headers only."""
    from .inspect import inspect_checkpoint
    from .render import render_inspect

    output(inspect_checkpoint(path, filter_glob=filter_glob), as_json, render_inspect)


@cli.command("verify-tie", epilog=EXIT_CODES)
@click.argument("path", type=click.Path(path_type=str))
@click.option("--embedding", metavar="NAME", help="The embedding tensor [vocab, hidden] (default: detected).")
@click.option("--decoder", metavar="NAME", help="The decoder / LM head tensor, [vocab, hidden] or [hidden, vocab] (default: detected).")
@click.option("--atol", type=float, default=None, help="Absolute tolerance (numpy.isclose on float64). Default: exact, bitwise.")
@click.option("--rtol", type=float, default=None, help="Relative tolerance (numpy.isclose on float64). Default: exact, bitwise.")
@json_option
def verify_tie_cmd(path: str, embedding: str | None, decoder: str | None, atol: float | None, rtol: float | None,
                   as_json: bool) -> None:
    """Find the embedding and decoder (LM head) weights of PATH and prove
    whether they are tied: implicitly (one matrix, tie declared by the
    config), by shared storage (hard link, safetensors alias), or as stored
    copies (duplicate or transposed) compared value by value in one streaming
    pass. Reports where copies differ and when the config contradicts the
    weights.

    Exact by default: bitwise, so bfloat16 and NaN payloads compare as
    stored and -0.0 differs from 0.0. With --atol/--rtol, numpy.isclose
    semantics (|a-b| <= atol + rtol*|b|; an option not given counts as 0),
    and any NaN matches any NaN.
    """
    from .render import render_verify_tie
    from .ties import verify_tie

    report = verify_tie(path, embedding=embedding, decoder=decoder, atol=atol, rtol=rtol)
    output(report, as_json, render_verify_tie)
    if not report["tied"]:
        click.get_current_context().exit(EXIT_NOT_TIED)


@cli.command(epilog=EXIT_CODES)
@click.argument("path", type=click.Path(path_type=str))
@click.option("--mode", type=click.Choice(["embedding", "linear"]), required=True,
              help="embedding: gather rows for token ids; linear: hidden states @ weight.T (logits).")
@click.option("--ids", metavar="1,2,3", help="Token ids for embedding mode.")
@click.option("--input", "input_path", metavar="FILE.npy",
              help="Token ids [batch, length] (embedding) or hidden states [..., hidden] (linear), as .npy.")
@click.option("--output", "output_path", metavar="OUT.npy", help="Write the exact result here (.npy).")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@click.option("--top-k", type=click.IntRange(1), default=5, show_default=True, help="Linear mode: tokens shown per position.")
@click.option("--embedding", metavar="NAME", help="Use this tensor as the embedding instead of the detected one.")
@click.option("--decoder", metavar="NAME", help="Use this tensor as the decoder (omit for a tied layer).")
@json_option
def run(path: str, mode: str, ids: str | None, input_path: str | None, output_path: str | None, force: bool,
        top_k: int, embedding: str | None, decoder: str | None, as_json: bool) -> None:
    """Rebuild the shared embedding layer of PATH (tietool.SharedEmbeddings,
    a Keras 3 ReversibleEmbedding) and run its embedding or linear pass.
    Needs TensorFlow: pip install 'tietool[tf]'."""
    from .render import render_run
    from .run import check_npy_output, parse_ids, run_layer, run_summary, save_npy_atomically

    if output_path:
        check_npy_output(output_path, force)  # before the work, not after it
    result = run_layer(path, mode, ids=parse_ids(ids) if ids is not None else None, input_path=input_path,
                       embedding=embedding, decoder=decoder)
    if output_path:
        save_npy_atomically(result.output, output_path, force=force)
    output(run_summary(result, top=top_k, output_path=output_path), as_json, render_run)


@cli.command(epilog=EXIT_CODES)
@click.argument("src", type=click.Path(path_type=str))
@click.option("--to", "to", type=click.Choice(["safetensors", "h5"]), required=True, help="Output format.")
@click.option("-o", "--output", "out", type=click.Path(path_type=str), default=None,
              help="Output file (or folder, for a folder source). Default: beside SRC with the new extension.")
@click.option("--ties", type=click.Choice(["dedupe", "keep"]), default="dedupe", show_default=True,
              help="dedupe: write bit-identical stored copies once and record the others as aliases; keep: write every copy.")
@click.option("--shard-size", metavar="SIZE", default=None, help="Split safetensors output into shards of at most SIZE (e.g. 5GB).")
@click.option("--names", type=click.Choice(["keras", "pt"]), default="keras", show_default=True,
              help="keras: keep the stored names (lossless); pt: a transformers TF checkpoint -> a folder PyTorch "
                   "transformers loads (PyTorch names and layouts, {\"format\": \"pt\"}, 5GB shards by default).")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--no-verify", is_flag=True, help="Skip re-reading the output and comparing every tensor with the source.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
@json_option
def convert(src: str, to: str, out: str | None, ties: str, shard_size: str | None, names: str, force: bool,
            no_verify: bool, quiet: bool, as_json: bool) -> None:
    """Convert SRC (file, shard index or model folder) between Keras HDF5 and
    safetensors, losslessly: names, bytes, dtypes, H5 attributes and config
    kept; converting back restores the original layout."""
    from .convert import convert as convert_checkpoint
    from .render import render_convert

    progress = None
    if not quiet and sys.stderr.isatty():
        def progress(phase: str, done: int, total: int) -> None:
            pct = 100 * done // total if total else 100
            click.echo(f"\r{phase}: {pct:3d}% of {total / 1e6:.1f} MB", err=True, nl=False)
    try:
        result = convert_checkpoint(src, to, out=out, ties=ties, shard_size=shard_size, force=force,
                                    verify=not no_verify, progress=progress, names=names)
    finally:
        if progress is not None:
            click.echo("", err=True)
    output(result, as_json, render_convert)


def main() -> None:
    cli(prog_name="tietool")


if __name__ == "__main__":  # pragma: no cover
    main()


# -- diff (appended: keep at the end) -----------------------------------------------------------

DIFF_EXIT_CODES = """\b
Exit status:
  0  every tensor matched and is identical (within --atol/--rtol if given)
  1  a tensor differs, has another shape or dtype, or is in one checkpoint only
  2  bad input or usage: one line "Error: FILE: what is wrong" on stderr
  3  internal error (a bug; --debug or TIETOOL_DEBUG=1 shows the traceback)"""


@cli.command("diff", epilog=DIFF_EXIT_CODES)
@click.argument("a", type=click.Path(path_type=str))
@click.argument("b", type=click.Path(path_type=str))
@click.option("--atol", type=float, default=None, help="Absolute tolerance (numpy.isclose on float64). Default: exact, bitwise.")
@click.option("--rtol", type=float, default=None, help="Relative tolerance (numpy.isclose on float64). Default: exact, bitwise.")
@click.option("--all", "show_all", is_flag=True, help="List identical tensors too (the table lists differences only).")
@click.option("--plot", "plot_path", metavar="FILE.png", default=None,
              help="Draw the relative difference per tensor, grouped by layer, on a log scale (needs matplotlib: "
                   "pip install 'tietool[plot]').")
@click.option("--force", is_flag=True, help="Overwrite --plot FILE if it exists.")
@json_option
def diff_cmd(a: str, b: str, atol: float | None, rtol: float | None, show_all: bool, plot_path: str | None,
             force: bool, as_json: bool) -> None:
    """Compare checkpoints A and B tensor by tensor, across layouts and naming
    schemes: file, shard index, .keras or model folder, H5 or safetensors,
    transformers TF or PyTorch names (kernels compared through the transpose),
    a tie stored once on one side and twice on the other.

    Exact by default (bitwise); --atol/--rtol as verify-tie (numpy.isclose,
    an option not given counts as 0, NaN matches NaN). Prints how each pair
    was matched and, for each difference, the max absolute and relative
    difference, the relative L2 error ||a-b||/||a||, how many elements and
    rows differ and the first differing index; then a per-layer summary.

    \b
    Examples:
      tietool diff fixtures/diff/bert_tf fixtures/diff/bert_pt5
      tietool diff fixtures/diff/bert_pt5 fixtures/diff/bert_pt5_tuned --plot diff.png
      tietool diff A B --atol 1e-6 --json
    """
    from .diff import diff_checkpoints
    from .render import render_diff

    if plot_path:
        from .diffplot import check_plot_output

        check_plot_output(plot_path, force)  # before the work, not after it
    result = diff_checkpoints(a, b, atol=atol, rtol=rtol)
    if plot_path:
        from .diffplot import write_plot

        write_plot(result, plot_path, force=force)
    output(result.to_json(), as_json, lambda r: render_diff(r, show_all=show_all))
    if not result.identical:
        click.get_current_context().exit(1)
