"""``SharedEmbeddings``: the tied embedding/decoder layer, rebuilt on Keras 3.

The seed is transformers' ``TFSharedEmbeddings``: one weight ``[vocab,
hidden]``; ``mode="embedding"`` gathers rows, ``mode="linear"`` computes
``inputs @ weight.T``. Here it is built on Keras' own
``keras.layers.ReversibleEmbedding`` (``tie_weights=True``; its
``reverse=True`` pass is the linear mode) so that what Keras maintains — dtype
policies, quantization, ``reverse_dtype``, ``logit_soft_cap`` — comes along.
An untied checkpoint rebuilds with ``tie_weights=False`` and the stored
decoder as ``reverse_embeddings``.

This module imports Keras (and so TensorFlow): only ``tietool run`` and
library users who ask for the layer load it. It sets nothing in the process
environment (``tietool run`` itself keeps TensorFlow's start-up chatter off
stderr, :func:`tietool.cli.commands.run`).
"""

from __future__ import annotations

try:
    import keras
except ImportError as exc:  # pragma: no cover - exercised without the extra
    from tietool.errors import MissingDependencyError

    raise MissingDependencyError(
        "the layer needs TensorFlow 2.21 with Keras 3: pip install 'tietool[tf]'"
    ) from exc

import numpy as np

MODES = ("embedding", "linear")


@keras.saving.register_keras_serializable(package="tietool")
class SharedEmbeddings(keras.layers.ReversibleEmbedding):
    """``SharedEmbeddings(vocab_size, hidden_size, initializer_range=None, **kwargs)``.

    The weight is initialised from a truncated normal with standard deviation
    ``initializer_range``, or ``hidden_size ** -0.5`` when it is None (as
    transformers' ``TFSharedEmbeddings``). Other keyword arguments go to
    ``ReversibleEmbedding`` (``tie_weights``, ``reverse_dtype``,
    ``logit_soft_cap``, ``dtype``, ``name`` ...).
    """

    def __init__(self, vocab_size: int, hidden_size: int, initializer_range: float | None = None, **kwargs):
        self.vocab_size = int(vocab_size)
        self.hidden_size = int(hidden_size)
        self.initializer_range = hidden_size**-0.5 if initializer_range is None else float(initializer_range)
        kwargs.setdefault("embeddings_initializer", keras.initializers.TruncatedNormal(stddev=self.initializer_range))
        super().__init__(self.vocab_size, self.hidden_size, **kwargs)

    @property
    def weight(self):
        """The shared ``[vocab, hidden]`` matrix (the seed's name for it)."""
        return self.embeddings

    def call(self, inputs, mode: str = "embedding"):
        if mode == "embedding":
            return super().call(inputs)
        if mode == "linear":
            return super().call(inputs, reverse=True)
        raise ValueError(f"mode {mode!r} is not valid; use one of {', '.join(MODES)}")

    def quantized_call(self, inputs, mode: str = "embedding"):
        """A quantised layer's pass (Keras calls this instead of ``call``)."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not valid; use one of {', '.join(MODES)}")
        return super().quantized_call(inputs, reverse=(mode == "linear"))

    def compute_output_shape(self, input_shape, mode: str = "embedding"):
        return super().compute_output_shape(input_shape, reverse=(mode == "linear"))

    def compute_output_spec(self, inputs, mode: str = "embedding"):
        return super().compute_output_spec(inputs, reverse=(mode == "linear"))

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("input_dim", None)
        config.pop("output_dim", None)
        config.update(
            {"vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
             "initializer_range": self.initializer_range}
        )
        return config

    @classmethod
    def from_checkpoint(cls, path, embedding: str | None = None, decoder: str | None = None,
                        **kwargs) -> "SharedEmbeddings":
        """Build the layer from any checkpoint tietool reads, from the pair that
        ``verify-tie`` finds (or the names given), with the weights
        bit-identical to the stored ones."""
        from tietool.layer.pair import load_pair

        return cls.from_pair(load_pair(path, embedding=embedding, decoder=decoder), **kwargs)

    @classmethod
    def from_pair(cls, pair, **kwargs) -> "SharedEmbeddings":
        """Build the layer from a :class:`tietool.layer.pair.Pair` already read:
        the model's dtype policy, soft cap and quantisation come along (a
        quantised layer's stored variables are loaded by Keras'
        ``load_own_variables``, so they are dequantised as Keras does)."""
        out = getattr(pair, "output", None)
        vocab, hidden = pair.embedding_matrix.shape
        if out is not None and out.soft_cap is not None:
            kwargs.setdefault("logit_soft_cap", out.soft_cap)
        dtype = kwargs.pop("dtype", None) or (out.dtype if out is not None and out.dtype else None) \
            or _keras_dtype(pair.embedding_matrix.dtype)
        name = kwargs.pop("name", "shared_embeddings")
        if out is not None and out.quantization is not None:
            q = out.quantization
            policy_cls = getattr(keras.dtype_policies, q["class_name"])
            source = q.get("source_name") or (dtype if isinstance(dtype, str) else "float32")
            layer = cls(out.input_dim, out.output_dim, tie_weights=pair.tied, dtype=policy_cls(q["mode"], source),
                        name=name, **kwargs)
            layer.build()
            layer.load_own_variables({str(i): v for i, v in enumerate(pair.layer_vars)})
            layer.source = pair
            return layer
        layer = cls(vocab, hidden, tie_weights=pair.tied, dtype=dtype, name=name, **kwargs)
        layer.build()
        layer.embeddings.assign(pair.embedding_matrix)
        if not pair.tied:
            layer.reverse_embeddings.assign(pair.decoder_kernel)  # [hidden, vocab]
        layer.source = pair  # names and how the tie is stored, for reports
        return layer


def _keras_dtype(dtype: np.dtype) -> str:
    name = np.dtype(dtype).name
    return name if name in ("float16", "float32", "float64", "bfloat16") else "float32"
