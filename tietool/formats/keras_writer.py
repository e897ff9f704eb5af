"""Write a Keras 3 ``.keras`` archive: the zip ``Model.save`` writes.

Members as Keras writes them: stored (not compressed), in the recorded
order (Keras: ``metadata.json``, ``config.json``, ``model.weights.h5``),
with the recorded timestamps; ``config.json`` and ``metadata.json`` are the
recorded text, byte for byte. ``model.weights.h5`` is first written to a
temporary file beside the archive by :func:`tietool.formats.h5_writer.write_h5`
and then streamed into the zip in bounded blocks.
"""

from __future__ import annotations

import os
import time
import zipfile

from tietool.io.safe_output import temporary_beside
from tietool.io.tensorcopy import COPY_BYTES, Progress, SourceFiles
from tietool.model import Checkpoint, TensorInfo

WEIGHTS_MEMBER = "model.weights.h5"
#: Member order and timestamps when nothing was recorded (what Keras 3.15 writes).
DEFAULT_MEMBERS = ("metadata.json", "config.json", WEIGHTS_MEMBER)
JSON_MEMBER_TIME = (1980, 1, 1, 0, 0, 0)


def _zip_info(name: str, date_time) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=tuple(date_time))
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o600 << 16  # as Keras' archives carry
    return info


def write_keras(path: str, ckpt: Checkpoint, tree: dict, data: dict[str, TensorInfo], texts: dict[str, str],
                members: list[dict] | None, files: SourceFiles, progress: Progress | None = None) -> None:
    """Write the archive to ``path``: ``texts`` maps member name -> text
    (``config.json``, ``metadata.json``); ``members`` is the recorded
    ``[{"name", "date_time"}]`` (None: Keras' order, now for the weights)."""
    from tietool.formats.h5_writer import write_h5

    if not members:
        now = time.localtime()[:6]
        members = [{"name": n, "date_time": list(JSON_MEMBER_TIME if n != WEIGHTS_MEMBER else now)}
                   for n in DEFAULT_MEMBERS if n == WEIGHTS_MEMBER or n in texts]
    with temporary_beside(path) as weights_tmp:
        write_h5(weights_tmp, ckpt, tree, data, files, progress, writeback=False)  # zipped, then removed
        size = os.path.getsize(weights_tmp)
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
            for m in members:
                name = m["name"]
                info = _zip_info(name, m["date_time"])
                if name == WEIGHTS_MEMBER:
                    info.file_size = size
                    with open(weights_tmp, "rb") as src, z.open(info, "w") as dst:
                        while True:
                            block = src.read(COPY_BYTES)
                            if not block:
                                break
                            dst.write(block)
                elif name in texts:
                    z.writestr(info, texts[name].encode("utf-8"))
