"""The command line: thin. Each command parses its options, calls one library
function, and renders the result as a table or as JSON. Errors are mapped to
one line and an exit status in :class:`tietool.cli.app.TietoolGroup`, and
nowhere else.

Start-up stays light: nothing heavy (h5py, numpy, TensorFlow) is imported
until a command runs.
"""

from __future__ import annotations

import os

import click

from tietool import __version__
from tietool.cli.app import TietoolGroup, json_option, output, progress_reporter
from tietool.cli.exits import EXIT_FOUND, check_exit, exit_status
from tietool.errors import UsageError


class OutputFormat(click.Choice):
    """--to: Click's choice, and a pointer to --names for the names people try first."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.lower() in ("pt", "pytorch", "torch", "transformers", "hf"):
            self.fail(f"{value!r} is a naming scheme, not a file format: use --names pt (it writes safetensors "
                      "with PyTorch names, a folder transformers 5 loads)", param, ctx)
        return super().convert(value, param, ctx)


def _tensorflow_notice(quiet: bool):
    """`run` on a terminal: one line on stderr while TensorFlow loads (3-9 s)."""
    import sys

    if quiet or not sys.stderr.isatty():
        return None
    return lambda: click.echo("loading TensorFlow (a few seconds) ...", err=True)


def _size_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--shard-size checked before any work: a unit is required (5GB, 500MB)."""
    if value is not None:
        from tietool.convert.plan import parse_size
        from tietool.errors import UsageError

        try:
            parse_size(value)
        except UsageError as exc:
            raise click.BadParameter(exc.message, ctx, param) from None
    return value



@click.group(cls=TietoolGroup, epilog=exit_status(None), context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="tietool")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors (also after the command name).")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Read, verify, run and convert checkpoints whose embedding and output
    (decoder) weights are tied: Keras 2 / transformers TF HDF5 (tf_model.h5),
    Keras 3 .weights.h5 / .keras, and safetensors. No TensorFlow needed, and
    nothing from a checkpoint is ever executed.

    PATH is a weights file, a shard index, a .keras archive or a model folder.
    Run "tietool COMMAND --help" for a command's options and examples.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


@cli.command(short_help="List tensors, config and ties (headers only).", epilog=exit_status("inspect"))
@click.argument("path", type=click.Path(path_type=str, readable=False))
@click.option("--filter", "filter_glob", metavar="GLOB",
              help="Only list tensors whose name matches GLOB (e.g. '*embed*').")
@json_option
def inspect(path: str, filter_glob: str | None, as_json: bool) -> None:
    """List every stored tensor of PATH with the format, files, parameter
    count, config highlights and tie groups. Reads headers only.

    Optimizer state is listed with role "optimizer" and not counted as
    parameters; a file tietool converted shows the config it carries.

    Examples:

    \b
      tietool inspect fixtures/tf/bert_mlm
      tietool inspect fixtures/keras3/tied_revemb.keras --filter 'layers/*'
      tietool inspect fixtures/pt/gpt2 --json
    """
    from tietool.cli.render import render_inspect
    from tietool.summary import inspect_checkpoint

    output(inspect_checkpoint(path, filter_glob=filter_glob), as_json, render_inspect)


@cli.command("verify-tie", short_help="Prove the embedding and LM head are tied.",
             epilog=exit_status("verify-tie"))
@click.argument("path", type=click.Path(path_type=str, readable=False))
@click.option("--embedding", metavar="NAME", help="The embedding tensor [vocab, hidden] (default: detected).")
@click.option("--decoder", metavar="NAME",
              help="The decoder / LM head tensor, [vocab, hidden] or [hidden, vocab] (default: detected).")
@click.option("--atol", type=float, default=None,
              help="Absolute tolerance (numpy.isclose on float64). Default: exact, bitwise.")
@click.option("--rtol", type=float, default=None,
              help="Relative tolerance (numpy.isclose on float64). Default: exact, bitwise.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
@json_option
def verify_tie_cmd(path: str, embedding: str | None, decoder: str | None, atol: float | None, rtol: float | None,
                   quiet: bool, as_json: bool) -> None:
    """Find the embedding and decoder (LM head) weights of PATH and prove
    whether they are tied: implicitly (one matrix, the config declares the
    tie), by shared storage (hard link, safetensors alias), or as stored
    copies (duplicate or transposed) compared in one streaming pass. Reports
    where copies differ and when the config contradicts the weights.

    Exact by default: bitwise, so bfloat16 and NaN payloads compare as
    stored and -0.0 differs from 0.0. With --atol/--rtol, numpy.isclose
    semantics (|a-b| <= atol + rtol*|b|; an option not given counts as 0),
    and any NaN matches any NaN.

    Examples:

    \b
      tietool verify-tie fixtures/tf/bert_mlm
      tietool verify-tie fixtures/pt/llama_untied --embedding model.embed_tokens.weight --decoder lm_head.weight
      tietool verify-tie fixtures/pt/llama_tied --json
    """
    from tietool.cli.render import render_verify_tie
    from tietool.ties.verify import verify_tie

    progress = progress_reporter(quiet)
    try:
        report = verify_tie(path, embedding=embedding, decoder=decoder, atol=atol, rtol=rtol, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    output(report, as_json, render_verify_tie)
    if not report.tied:
        click.get_current_context().exit(EXIT_FOUND)


@cli.command(short_help="Run the shared layer's embedding or linear pass.", epilog=exit_status("run"))
@click.argument("path", type=click.Path(path_type=str, readable=False))
@click.option("--mode", type=click.Choice(["embedding", "linear"]), required=True,
              help="embedding: gather rows for token ids; linear: hidden states @ weight.T (logits).")
@click.option("--ids", metavar="1,2,3", help="Token ids for embedding mode.")
@click.option("--input", "input_path", metavar="FILE.npy",
              help="Token ids [batch, length] (embedding) or hidden states [..., hidden] (linear), as .npy.")
@click.option("--output", "output_path", metavar="OUT.npy", help="Write the exact result here (.npy).")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@click.option("--exact-bytes", is_flag=True,
              help="--output keeps the layer's own bytes: bfloat16/float8 as their bit patterns (uint16/uint8), "
                   "not upcast to float32.")
@click.option("--top-k", type=click.IntRange(1), default=5, show_default=True,
              help="Linear mode: tokens shown per position.")
@click.option("--embedding", metavar="NAME", help="Use this tensor as the embedding instead of the detected one.")
@click.option("--decoder", metavar="NAME", help="Use this tensor as the decoder (omit for a tied layer).")
@click.option("--quiet", is_flag=True,
              help="Nothing on stderr but errors (a terminal otherwise shows a line while TensorFlow loads, and "
                   "progress when reading over 100 MB).")
@json_option
def run(path: str, mode: str, ids: str | None, input_path: str | None, output_path: str | None, force: bool,
        exact_bytes: bool, top_k: int, embedding: str | None, decoder: str | None, quiet: bool,
        as_json: bool) -> None:
    """Rebuild the shared embedding layer of PATH (tietool.SharedEmbeddings,
    a Keras 3 ReversibleEmbedding) with the stored weights, bit for bit, and
    run its embedding or linear pass.

    Needs TensorFlow: pip install 'tietool[tf]'. Inputs are checked before
    TensorFlow is loaded.

    Examples:

    \b
      tietool run fixtures/tf/gpt2 --mode embedding --ids 1,2,3
      tietool run fixtures/tf/gpt2 --mode linear --input fixtures/keras2/seed_shared/hidden.npy --top-k 3
      tietool run fixtures/keras3/tied_revemb.keras --mode embedding --ids 5 --output out/emb.npy
    """
    from tietool.cli.render import render_run
    from tietool.layer.run import check_npy_output, npy_array, run_layer, run_summary, save_npy_atomically

    inputs = run_inputs(mode, ids, input_path)
    sources = [p for p in (path, input_path) if p]
    guard = None
    if output_path:
        from tietool.io.sourceguard import SourceGuard

        check_npy_output(output_path, force, sources=sources)  # before the work, not after it
        guard = SourceGuard.of(sources)  # the checkpoint as it is read (a folder: the files in it)
    # The command's own process: keep TensorFlow's start-up chatter off stderr
    # (the library leaves the environment and file descriptor 2 alone).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    progress = progress_reporter(quiet, large_only=True)
    try:
        result = run_layer(path, mode, inputs, embedding=embedding, decoder=decoder, progress=progress,
                           quiet_native_stderr=True, loading_tensorflow=_tensorflow_notice(quiet))
    finally:
        if progress is not None:
            progress.close()
    if output_path:
        save_npy_atomically(npy_array(result.output, exact_bytes), output_path, force=force, sources=sources,
                            guard=guard)
    output(run_summary(result, top=top_k, output_path=output_path), as_json, render_run)


def run_inputs(mode: str, ids: str | None, input_path: str | None):
    """``run``'s input from its options: the token ids of ``--ids`` (an array)
    or the ``--input`` file, checked to suit ``--mode``."""
    if mode == "embedding":
        if ids is None and input_path is None:
            raise UsageError("embedding mode needs token ids: --ids 1,2,3 or --input ids.npy")
        if ids is not None and input_path is not None:
            raise UsageError("give either --ids or --input, not both")
        return parse_ids(ids) if ids is not None else input_path
    if input_path is None:
        raise UsageError("linear mode needs hidden states: --input hidden.npy ([..., hidden])")
    if ids is not None:
        raise UsageError("--ids is for embedding mode; linear mode takes --input hidden.npy")
    return input_path


def parse_ids(text: str):
    """``--ids 1,2,3`` -> int array ``[1, 3]``."""
    import numpy as np

    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise UsageError("--ids is empty; give comma-separated token ids, e.g. --ids 1,2,3")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        bad = next(p for p in parts if not p.lstrip("-").isdigit())
        raise UsageError(f"--ids: {bad!r} is not an integer token id") from None
    return np.asarray([values], dtype=np.int64)


@cli.command(short_help="Convert losslessly: HDF5, .keras <-> safetensors.", epilog=exit_status("convert"))
@click.argument("src", type=click.Path(path_type=str, readable=False))
@click.option("--to", "to", type=OutputFormat(["safetensors", "h5", "keras"]), default=None,
              help="Output format. Default: from the -o name (.safetensors, .h5, .keras), else from SRC: "
                   "HDF5 or .keras -> safetensors, safetensors -> the format it was converted from, else h5.")
@click.option("-o", "--output", "out", type=click.Path(path_type=str, readable=False), default=None,
              help="Output file, or folder for a folder source (unless the name ends in .safetensors, .h5 or "
                   ".keras: then one file). Default: beside SRC with the new extension.")
@click.option("--ties", type=click.Choice(["dedupe", "keep"]), default="dedupe", show_default=True,
              help="dedupe: write bit-identical stored copies once and record the others as aliases; "
                   "keep: write every copy.")
@click.option("--shard-size", metavar="SIZE", default=None, callback=_size_option,
              help="Split safetensors output into shards of at most SIZE, with its unit: 5GB, 500MB, 2GiB.")
@click.option("--names", type=click.Choice(["keras", "pt", "keras-hub"]), default="keras", show_default=True,
              help="keras: keep the stored names (lossless); pt: a transformers TF checkpoint or a keras-hub preset "
                   "-> a folder PyTorch transformers loads (PyTorch names and layouts, {\"format\": \"pt\"}, 5GB "
                   "shards by default); keras-hub: a transformers 5 folder -> a keras-hub preset folder.")
@click.option("--head", type=click.Choice(["explicit", "implicit"]), default=None,
              help="With --names pt: explicit writes a tied head as a real tensor under the architecture's PyTorch "
                   "name; implicit (the default) leaves it out, as transformers 5 saves.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--no-verify", is_flag=True,
              help="Skip re-reading the output and comparing every tensor with the source.")
@click.option("--no-fsync", is_flag=True,
              help="Do not wait for the output to reach the disk, as cp does not: faster where the disk is slower "
                   "than memory, but a crash or power cut in the next seconds can leave the output (and a replaced "
                   "previous output) missing or truncated. The source is never at risk.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
@json_option
def convert(src: str, to: str | None, out: str | None, ties: str, shard_size: str | None, names: str, head: str | None,
            force: bool, no_verify: bool, no_fsync: bool, quiet: bool, as_json: bool) -> None:
    """Convert SRC (file, shard index, .keras archive or model folder)
    between Keras HDF5 / .keras and safetensors, losslessly: names, bytes,
    dtypes, H5 attributes and config kept, so converting back restores the
    original, a .keras archive included.

    The output is verified (re-read and compared byte for byte) before it
    replaces anything; the summary says which format was chosen when --to
    is not given.

    Examples:

    \b
      tietool convert fixtures/tf/t5 -o out/t5-st                 # HDF5 -> safetensors
      tietool convert fixtures/keras3/tied_revemb.keras -o out/m.safetensors
      tietool convert out/m.safetensors -o out/m.keras            # back to .keras
      tietool convert fixtures/tf/gpt2 --names pt -o out/gpt2-pt  # for PyTorch transformers
    """
    from tietool.cli.render import render_convert
    from tietool.convert import convert as convert_checkpoint

    progress = progress_reporter(quiet)
    try:
        result = convert_checkpoint(src, to, out=out, ties=ties, shard_size=shard_size, force=force,
                                    verify=not no_verify, progress=progress, names=names, head=head,
                                    fsync=not no_fsync)
    finally:
        if progress is not None:
            progress.close()
    output(result, as_json, render_convert)


@cli.command(short_help="Audit tie flags against the stored weights.", epilog=exit_status("check"))
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@json_option
def check(paths: tuple[str, ...], as_json: bool) -> None:
    """Audit config against weights for every checkpoint under PATHS (files,
    model folders, or folders scanned recursively, the Hugging Face cache
    layout included): the effective tie flag, what is stored (no head, an
    identical or transposed copy, a different head, copies that differ),
    whether they agree, and for each problem the `tietool fix` command.
    Reads headers and only the tensor bytes a decision needs. Given
    ~/.cache/huggingface/hub, it audits every model downloaded.

    Examples:

    \b
      tietool check fixtures/damaged
      tietool check fixtures/damaged/pt fixtures/pt/gpt2 --json
    """
    from tietool.audit.check import check_paths
    from tietool.cli.render import check_document, check_error_lines, render_check

    report = check_paths(list(paths))
    code = check_exit(report)
    output(check_document(report, code) if as_json else report, as_json, render_check)
    for line in check_error_lines(report):  # each unreadable one, as every command reports an error
        click.echo(line, err=True)
    if code:
        click.get_current_context().exit(code)


@cli.command(short_help="Write a repaired copy of a checkpoint.", epilog=exit_status("fix"))
@click.argument("path", type=click.Path(path_type=str))
@click.option("-o", "--output", "out", type=click.Path(path_type=str), default=None,
              help="Where to write the repaired copy (default: PATH-fixed).")
@click.option("--head", type=click.Choice(["explicit", "implicit"]), default=None,
              help="explicit: write a tied head as a real tensor under the architecture's PyTorch name (for loaders "
                   "that ignore alias metadata); implicit: drop a stored head bit-identical to the embedding and "
                   "record the tie in the config.")
@click.option("--prefer", metavar="embedding|decoder|NAME", default=None,
              help="Stored copies differ with no majority: keep this one (the first copy, the last, or a tensor name).")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--no-verify", is_flag=True, help="Skip re-reading the output and comparing it with the source.")
@json_option
def fix(path: str, out: str | None, head: str | None, prefer: str | None, force: bool, no_verify: bool,
        as_json: bool) -> None:
    """Write a repaired copy of PATH in its own format and layout (same file
    names, shards and index; other files copied unchanged). The source is
    never modified; with nothing to fix, nothing is written.

    \b
    Repairs: a flag saying untied with no head stored -> tied; a flag saying
    tied (or default) with a different head stored -> untied; top-level and
    nested flags that disagree -> all agree with the weights; stored copies
    that differ -> the strict majority (or --prefer).

    Examples:

    \b
      tietool fix fixtures/damaged/pt/llama_flag_untied_no_head -o out/llama-fixed
      tietool fix fixtures/damaged/tf/bert_copies_differ -o out/bert-fixed --prefer embedding
    """
    from tietool.audit.fix import fix as fix_checkpoint
    from tietool.cli.render import render_fix

    result = fix_checkpoint(path, out, head=head, prefer=prefer, force=force, verify=not no_verify)
    output(result, as_json, render_fix)


def main() -> None:
    """The ``tietool`` command. Process-wide settings are made here, for the
    command's own process, never by importing the library: signal handlers
    (:mod:`tietool.io.signals`) and ``HDF5_PLUGIN_PATH`` pointed at nothing, so
    that HDF5 can load no filter plugin at all (the library already refuses
    every filter that is not built in before HDF5 would look one up:
    :data:`tietool.io.h5safe.BUILTIN_FILTERS`)."""
    from tietool.cli.exits import exit_code_for
    from tietool.io.signals import install

    os.environ["HDF5_PLUGIN_PATH"] = os.devnull  # before h5py loads HDF5
    install(exit_code_for)  # already done by tietool.cli.main, the console script
    cli(prog_name="tietool")


if __name__ == "__main__":  # pragma: no cover
    main()


# -- diff -----------------------------------------------------------------------------------------

@cli.command("diff", short_help="Compare two checkpoints tensor by tensor.", epilog=exit_status("diff"))
@click.argument("a", type=click.Path(path_type=str))
@click.argument("b", type=click.Path(path_type=str))
@click.option("--atol", type=float, default=None,
              help="Absolute tolerance (numpy.isclose on float64). Default: exact, bitwise.")
@click.option("--rtol", type=float, default=None,
              help="Relative tolerance (numpy.isclose on float64). Default: exact, bitwise.")
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

    Examples:

    \b
      tietool diff fixtures/diff/bert_tf fixtures/diff/bert_pt5
      tietool diff fixtures/diff/bert_pt5 fixtures/diff/bert_pt5_tuned --plot out/diff.png
      tietool diff fixtures/diff/bert_pt5 fixtures/diff/bert_pt5_tuned --atol 1e-3 --json
    """
    from tietool.cli.render import render_diff
    from tietool.diff.checkpoints import diff_checkpoints

    if plot_path:
        from tietool.diff.plot import check_plot_output

        check_plot_output(plot_path, force)  # before the work, not after it
    result = diff_checkpoints(a, b, atol=atol, rtol=rtol)
    if plot_path:
        from tietool.diff.plot import write_plot

        write_plot(result, plot_path, force=force)
    doc = result.to_json()
    if plot_path:
        doc["plot"] = plot_path  # the file written, as given
    output(doc if as_json else result, as_json, lambda r: render_diff(r, show_all=show_all, plot=plot_path))
    if not result.identical:
        click.get_current_context().exit(EXIT_FOUND)
