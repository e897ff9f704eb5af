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
from ..model import Checkpoint, Role
from .descriptor import FORMATS, Family, format_of
from .keras_h5 import KERAS3_ROLES

LAYOUT_KEY = "tietool.layout"
NAMES_KEY = "tietool.names"
CONFIG_KEY = "tietool.config"
KERAS_METADATA_KEY = "tietool.keras_metadata"

def dataset_role(source_format: str, dataset_path: str) -> Role:
    """The role a Keras reader gives the dataset at ``dataset_path``."""
    head = dataset_path.split("/", 1)[0]
    fmt = FORMATS.get(source_format)
    if fmt is not None and fmt.family is Family.KERAS3:
        return KERAS3_ROLES.get(head, Role.WEIGHT)
    if fmt is not None and head == fmt.optimizer_group:
        return Role.OPTIMIZER
    return Role.WEIGHT


def apply(ckpt: Checkpoint) -> None:
    """Fill in ``ckpt.config`` and tensor roles from tietool's records."""
    text = ckpt.metadata.get(CONFIG_KEY)
    if ckpt.config is None and isinstance(text, str):
        where = format_of(ckpt).records_in
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
    if origin == ckpt.format or not format_of(ckpt).is_safetensors:
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
