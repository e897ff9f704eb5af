"""Convert between Keras HDF5 and safetensors, losslessly: ``tietool convert``.

What goes where
---------------
A file in gives a file out; a folder in gives a folder out (the folder's
other files - config.json, generation_config.json, tokenizer files... -
copied unchanged, under the policy of :mod:`tietool.convert.sidefiles`).
Without ``out``: beside the source, the weights file renamed with the new
extension (``tf_model.h5`` <-> ``model.safetensors``,
``x.weights.h5`` -> ``x.safetensors``, ``full_model.h5`` -> ``full_model.safetensors``);
a folder ``DIR`` gives ``DIR-safetensors`` / ``DIR-h5``. When the output is
several files (``shard_size``, or an H5 checkpoint that was sharded) it is a
folder.

HDF5 -> safetensors
-------------------
One safetensors tensor per stored HDF5 dataset (one per set of verified
identical copies), bytes and dtype unchanged (Keras' 2-byte opaque bfloat16
becomes ``BF16``). Names: for a transformers ``tf_model.h5`` (a Keras 2 file
with a transformers config), the names transformers' TF
``save_pretrained(safe_serialization=True)`` gives the same variables
(``transformer/wte/embeddings:0``), so that transformers TF loads the output
as it is; otherwise, or when two kept tensors would get one such name, the
full dataset path (``layers/reversible_embedding/vars/0``).
``__metadata__`` (str -> str):

* ``format``: ``"tf"`` for Keras 2 / transformers TF sources, ``"keras"`` for
  Keras 3 ones. (Tensor names are HDF5 paths, not transformers' TF
  safetensors names: load the file after converting it back to HDF5.)
* ``tietool.layout``: JSON ``{"tietool": 1, "source_format": <reader format>,
  "files": [{"name": <HDF5 file name>, "tree": <tree>}, ...],
  "index": {"name": ..., "text": ...} | null}``. One ``files`` entry per HDF5
  file (several for a sharded checkpoint, whose index file is kept verbatim
  in ``index``). A tree lists every group with its attributes and every
  dataset with its attributes, each attribute with its HDF5 type; see
  :mod:`tietool.formats.h5_writer`. So ``layer_names``, ``weight_names`` (and
  order), ``backend``, ``keras_version``, ``model_config``,
  ``training_config``, Keras 3 ``vars`` ``name`` and the bfloat16 ``dtype``
  markers all come back.
* ``tietool.names``: JSON ``{dataset path: tensor name}`` when the names are
  transformers' TF names (absent: every tensor is named by its path).
* ``tietool.config``: the checkpoint's config as a JSON string (config.json
  of an HF folder/file, ``model_config`` of a full-model H5, ``config.json``
  of a ``.keras`` archive as its exact text), when there is one. Readers take
  it as the file's config (:mod:`tietool.formats.records`).
* ``tietool.keras_metadata``: a ``.keras`` archive's ``metadata.json`` text;
  ``tietool.layout`` then also records the archive's members (``archive``:
  name and timestamp, in order).
* ``<removed name>: <kept name>`` for each deduplicated copy (safetensors'
  ``save_model`` convention), see Ties.

safetensors -> HDF5
-------------------
* A file with ``tietool.layout`` gets its HDF5 file(s) back exactly as
  described: same groups, dataset paths, attributes, dtypes and bytes; each
  removed copy is written again from the tensor it names. A ``.keras``
  source comes back as ``<stem>.weights.h5`` plus root attributes
  ``tietool.config`` and ``tietool.keras_metadata`` (the archive's
  config.json and metadata.json), as does ``.keras --to h5``.

safetensors or .weights.h5 -> .keras (``to="keras"``)
-----------------------------------------------------
From a file that records a ``.keras`` archive (converted from one, or its
weights extracted with ``--to h5``): the archive's members in their order
and with their timestamps, ``config.json`` and ``metadata.json`` as the
recorded text, ``model.weights.h5`` written from the recorded layout
(:mod:`tietool.formats.keras_writer`).

Without ``to``: :func:`infer_target`.
* Any other safetensors file gives transformers' TF shard layout: root
  attribute ``layer_names`` = every tensor name in file order, one dataset per
  tensor at its name (``/`` in a name makes groups), bfloat16 as Keras does
  (2-byte opaque + ``dtype="bfloat16"`` attribute), plus a root attribute
  ``tietool.safetensors`` = JSON ``{"metadata": <__metadata__>, "file": <name>}``.
  Converting that back gives the same names, dtypes, shapes, bytes and
  ``__metadata__`` (no dedupe happens on that way back). Aliases recorded in
  ``__metadata__`` are kept there, not written as datasets.

Ties
----
``ties="dedupe"`` (default, safetensors output): candidate copies are the
tie groups of :func:`tietool.ties.verify.find_ties` of kind ``duplicate-copies`` /
``shared-storage`` (when that module is present), HDF5 hard links, and the
same Keras 2 variable stored under two layer groups (the same weight name
after the group: BERT's ``bert/...`` and ``mlm___cls/...``, T5's
``shared``/``encoder``/``decoder``). Each candidate is compared with the first
of its group bit by bit, streamed; only bit-identical copies are merged
(written once, the others recorded as aliases). ``ties="keep"`` writes every
stored tensor. HDF5 output always stores every copy the layout lists.

Safety
------
The source is only read. An existing output is replaced only with
``force``. Everything is written to a temporary file/folder beside the target
and renamed into place when complete and verified (every tensor of the
re-opened output compared byte for byte with its source, and every
safetensors output read with ``safetensors.safe_open``, unless
``verify=False``: :mod:`.verify`); on any error or interrupt the temporary is removed. What
``force`` may replace, refusing outputs that are or hold the source, fsync,
write errors and stale temporaries: :mod:`tietool.io.safe_output`.

Package layout (one pipeline: plan -> write -> verify)
------------------------------------------------------
* :mod:`.pipeline`: :func:`convert` / :func:`convert_to_pt`, and ``execute``,
  the one place that writes a plan (atomic output, side files, verification).
* :mod:`.plan`: the plan as data (``Plan``, ``OutputFile``, ``TensorOut``),
  sizes and names, the one shard splitter and index writer.
* :mod:`.keras_plan` / :mod:`.keras_layout` (``--names keras``, lossless) and
  :mod:`.pt_plan` (``--names pt``): the two plan builders.
* :mod:`.dedupe`: verified stored copies; :mod:`.sidefiles`: which other
  files of the source folder are copied (symlink policy there).
* :mod:`.write` / :mod:`.verify`: one output file each, no state shared
  between files; :mod:`.transpose`: bounded-memory layout moves.
* :mod:`.result`: :class:`ConversionResult` (``to_json()`` is ``--json``).
"""

from .keras_plan import infer_target
from .pipeline import convert, convert_to_pt
from .plan import ProgressFn, parse_size
from .result import ConversionResult, PtDetails

__all__ = ["ConversionResult", "ProgressFn", "PtDetails", "convert", "convert_to_pt", "infer_target", "parse_size"]
