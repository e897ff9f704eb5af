"""What tietool records in the files it converts, read back as the
checkpoint's own: the config (``tietool.config``: a safetensors
``__metadata__`` key or an HDF5 root attribute) and, for a safetensors file
converted from HDF5, each tensor's role (optimizer state stays optimizer
state), so that a checkpoint and its conversion report the same config
highlights and the same parameter count.
"""

from __future__ import annotations

import dataclasses
import json

from .. import config as configlib
from ..errors import TietoolError
from ..model import ROLE_OPTIMIZER, ROLE_WEIGHT, Checkpoint
from .keras_h5 import KERAS3_ROLES

LAYOUT_KEY = "tietool.layout"
NAMES_KEY = "tietool.names"
CONFIG_KEY = "tietool.config"
KERAS_METADATA_KEY = "tietool.keras_metadata"

KERAS3_FORMATS = ("keras3-weights-h5", "keras3-weights-sharded", "keras3-archive")


def dataset_role(source_format: str, dataset_path: str) -> str:
    """The role a Keras reader gives the dataset at ``dataset_path``."""
    head = dataset_path.split("/", 1)[0]
    if source_format in KERAS3_FORMATS:
        return KERAS3_ROLES.get(head, ROLE_WEIGHT)
    if source_format == "keras2-full-h5" and head == "optimizer_weights":
        return ROLE_OPTIMIZER
    return ROLE_WEIGHT


def apply(ckpt: Checkpoint) -> None:
    """Fill in ``ckpt.config`` and tensor roles from tietool's records."""
    text = ckpt.metadata.get(CONFIG_KEY)
    if ckpt.config is None and isinstance(text, str):
        where = "__metadata__" if ckpt.format.startswith("safetensors") else "root attribute"
        label = f"{ckpt.path}:{where} {CONFIG_KEY}"
        try:
            value = configlib.parse_json_text(text, label)
        except TietoolError as exc:
            ckpt.warnings.append(f"{CONFIG_KEY} is not a usable config ({exc.message})")
        else:
            if isinstance(value, dict):
                ckpt.config = value
                ckpt.config_source = label
            else:
                ckpt.warnings.append(f"{CONFIG_KEY} is not a JSON object")
    origin = ckpt.origin_format
    if origin == ckpt.format or not ckpt.format.startswith("safetensors"):
        return
    try:
        names = json.loads(ckpt.metadata.get(NAMES_KEY, "{}"))
    except ValueError:
        names = {}
    if not isinstance(names, dict):
        names = {}
    path_of = {v: k for k, v in names.items() if isinstance(k, str) and isinstance(v, str)}
    for name, info in list(ckpt.tensors.items()):
        role = dataset_role(origin, path_of.get(name, name))
        if role != info.role:
            ckpt.tensors[name] = dataclasses.replace(info, role=role)
