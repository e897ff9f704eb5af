"""``run``: the rebuilt shared layer's embedding and linear passes.

Inputs are checked against the checkpoint's header before TensorFlow is
imported, so a bad id or a wrong hidden size fails fast with a clear message
(``tf.gather`` fails obscurely on CPU and silently returns zeros on GPU for an
out-of-range id).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from tietool.errors import InputNotFoundError, InvalidInputError, MissingDependencyError, UsageError

NPY_MAGIC = b"\x93NUMPY"


@dataclass
class RunResult:
    mode: str
    output: np.ndarray
    embedding: str
    decoder: str | None
    tied: bool
    kind: str
    layer: dict | None = None  # what the layer does besides the matmul (soft cap, dtype policy, quantisation)


def load_npy(path: str) -> np.ndarray:
    """A ``.npy`` array, never a pickle."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except FileNotFoundError:
        raise InputNotFoundError("no such file", path) from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read ({exc.strerror or exc})", path) from None
    if magic != NPY_MAGIC:
        raise InvalidInputError("not a .npy file (expected numpy's .npy format)", path)
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise InvalidInputError(f"cannot load the array ({exc})", path) from None
    except (OSError, EOFError) as exc:
        raise InvalidInputError(f"truncated or corrupt .npy file ({exc})", path) from None


def check_ids(ids: np.ndarray, vocab_size: int, label: str) -> np.ndarray:
    if ids.dtype.kind not in "iu":
        raise UsageError(f"token ids must be integers, got dtype {ids.dtype}", label)
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.ndim != 2:
        raise UsageError(f"token ids must be [batch, length], got shape {list(ids.shape)}", label)
    bad = np.argwhere((ids < 0) | (ids >= vocab_size))
    if bad.size:
        pos = tuple(int(i) for i in bad[0])
        raise UsageError(
            f"token id {int(ids[pos])} at position {list(pos)} is outside [0, {vocab_size}) "
            f"(the checkpoint's vocab size is {vocab_size})",
            label,
        )
    return ids.astype(np.int32 if vocab_size < 2**31 else np.int64)


def check_hidden(hidden: np.ndarray, hidden_size: int, label: str) -> np.ndarray:
    if hidden.dtype.kind != "f" and hidden.dtype.name != "bfloat16":
        raise UsageError(f"hidden states must be floating point, got dtype {hidden.dtype}", label)
    if hidden.ndim < 1 or hidden.shape[-1] != hidden_size:
        raise UsageError(
            f"hidden size {hidden.shape[-1] if hidden.ndim else 'none'} (shape {list(hidden.shape)}) does not match "
            f"the checkpoint's hidden size {hidden_size}",
            label,
        )
    return hidden


def run_layer(path: str, mode: str, inputs: np.ndarray | str, embedding: str | None = None,
              decoder: str | None = None, progress=None, quiet_native_stderr: bool = False,
              loading_tensorflow=None) -> RunResult:
    """Build the layer from the verified pair of ``path`` and run it on
    ``inputs``: token ids ``[batch, length]`` (embedding mode) or hidden
    states ``[..., hidden]`` (linear mode), as an array or a ``.npy`` file;
    ``progress(phase, done, total)`` is told the bytes compared and read;
    ``loading_tensorflow()`` is called once the inputs are checked, just
    before TensorFlow is imported (seconds of silence otherwise).

    ``quiet_native_stderr`` points file descriptor 2 at /dev/null while
    TensorFlow starts and runs (its C++ logs bypass ``sys.stderr``): a
    process-wide change the ``tietool`` command asks for; a library caller's
    stderr is left alone by default."""
    from tietool.layer.pair import load_pair

    if mode not in ("embedding", "linear"):
        raise UsageError(f"mode must be embedding or linear, not {mode!r}")
    # The verified pair, read once; inputs are checked against it before
    # TensorFlow is loaded.
    pair = load_pair(path, embedding=embedding, decoder=decoder, progress=progress, linear=(mode == "linear"))
    vocab, hidden = pair.embedding_matrix.shape
    if pair.output.output_dim is not None:  # a quantised (packed) matrix
        vocab, hidden = pair.output.input_dim, pair.output.output_dim
    label = inputs if isinstance(inputs, str) else "--ids"
    given = load_npy(inputs) if isinstance(inputs, str) else inputs
    x = check_ids(given, vocab, label) if mode == "embedding" else check_hidden(given, hidden, label)
    if loading_tensorflow is not None:
        loading_tensorflow()
    # TensorFlow's C++ start-up and device-probe chatter is not ours to print
    # (when asked); Python errors still propagate as exceptions.
    with _quiet_stderr() if quiet_native_stderr else contextlib.nullcontext():
        try:
            from tietool.layer.shared import SharedEmbeddings
        except MissingDependencyError:
            raise
        except ImportError as exc:  # pragma: no cover
            raise MissingDependencyError(f"TensorFlow is not installed ({exc}): pip install 'tietool[tf]'") from None
        import keras

        layer = SharedEmbeddings.from_pair(pair)
        if mode == "linear":
            x = keras.ops.cast(x, layer.compute_dtype)  # as the model's layer receives it (bfloat16 too)
        out = keras.ops.convert_to_numpy(layer(x, mode=mode))
    src = layer.source
    info = {"dtype_policy": layer.dtype_policy.name, "soft_cap": layer.logit_soft_cap,
            "quantization": layer.quantization_mode}
    return RunResult(mode, out, src.embedding, src.decoder, src.tied, src.kind, info)


class _quiet_stderr:
    """Point file descriptor 2 at /dev/null for the duration (C++ logs bypass
    Python's sys.stderr)."""

    def __enter__(self):
        import sys

        sys.stderr.flush()
        self.saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)


def check_npy_output(out_path: str, force: bool = False, sources: Iterable[str] = ()) -> str:
    """Refuse an output path before any work is done (not .npy, exists
    without ``force``, is or holds one of ``sources``, is a folder); returns
    its folder."""
    from tietool.io.safe_output import check_output

    if not out_path.endswith(".npy"):
        raise UsageError("--output must end in .npy", out_path)
    folder = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(folder):
        raise UsageError("the output's folder does not exist", out_path)
    check_output(out_path, sources, folder=False, force=force)
    return folder


def npy_array(array: np.ndarray, exact_bytes: bool = False) -> np.ndarray:
    """The array as a ``.npy`` file holds it so numpy reads numbers: a dtype
    .npy has no code for (bfloat16, float8) is upcast to float32, which is
    exact. ``exact_bytes`` keeps the layer's own bytes instead: such a dtype is
    written as unsigned integers of its width (its bit pattern)."""
    name = array.dtype.name
    if array.dtype.kind != "V" and name != "bfloat16" and not name.startswith("float8"):
        return array
    if exact_bytes:
        return array.view({1: np.uint8, 2: np.uint16}[array.dtype.itemsize])
    return array.astype(np.float32)


def save_npy_atomically(array: np.ndarray, out_path: str, force: bool = False, sources: Iterable[str] = (),
                        guard=None) -> None:
    """Write ``out_path`` through a temporary file beside it, fsynced and
    renamed into place (:func:`tietool.io.safe_output.atomic_output`);
    ``guard``: the sources as they were when they were read
    (:class:`tietool.io.sourceguard.SourceGuard`)."""
    from tietool.io.safe_output import atomic_output

    check_npy_output(out_path, force, sources)
    with atomic_output(out_path, folder=False, force=force, sources=sources, guard=guard) as tmp, \
            open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def top_k(logits: np.ndarray, k: int) -> list[dict]:
    """Per position: the k largest logits and their token ids."""
    flat = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    k = max(1, min(k, flat.shape[-1]))
    idx = np.argsort(-flat, axis=-1, kind="stable")[:, :k]
    positions = list(np.ndindex(*logits.shape[:-1])) or [()]
    return [
        {"position": list(pos), "tokens": [int(i) for i in row], "logits": [float(flat[n, i]) for i in row]}
        for n, (pos, row) in enumerate(zip(positions, idx, strict=False))
    ]


@dataclass(frozen=True)
class RunSummary:
    """What ``run`` reports: the layer used, the output's shape and dtype, a
    preview, and the top-k tokens per position in linear mode."""

    mode: str
    embedding: str
    decoder: str | None
    tied: bool
    tie_kind: str
    shape: tuple[int, ...]
    dtype: str
    output: str | None  # the .npy file written
    preview: tuple[float, ...]
    layer: dict | None = None
    top_k: tuple[dict, ...] | None = None  # linear mode

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mode": self.mode, "embedding": self.embedding, "decoder": self.decoder,
                             "tied": self.tied, "tie_kind": self.tie_kind, "shape": list(self.shape),
                             "dtype": self.dtype, "output": self.output, "preview": list(self.preview)}
        if self.layer:
            d["layer"] = self.layer
        if self.top_k is not None:
            d["top_k"] = list(self.top_k)
        return d


def run_summary(result: RunResult, top: int = 5, output_path: str | None = None, preview: int = 6) -> RunSummary:
    """What `run` prints: shape, dtype, a preview, and top-k tokens in linear mode."""
    out = result.output
    return RunSummary(result.mode, result.embedding, result.decoder, result.tied, result.kind, tuple(out.shape),
                      out.dtype.name, output_path, tuple(float(v) for v in out.reshape(-1)[:preview]),
                      result.layer or None, tuple(top_k(out, top)) if result.mode == "linear" else None)
