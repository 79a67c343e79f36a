"""Checkpoints written atomically, so that a full disk or a kill mid-write never costs the previous one.

Lightning's TorchCheckpointIO serialises to memory, writes that to a temporary file in the system's temp
folder and moves it over the checkpoint: across filesystems the move is a copy into the final name, which
truncates the old file first (``last.ckpt`` included) and leaves a partial file on a full disk. This one
writes in the checkpoint's own folder under ``.<name>.partial`` (a name neither ``--ckpt_path last`` nor a
SLURM auto-resume picks), fsyncs and renames: ModelCheckpoint writes the step's checkpoint, then ``last.ckpt``,
so ``last.ckpt`` is replaced only by a complete file and keeps the previous state when either write fails.
A disk without room for the checkpoint is refused before a byte is written, naming the bytes needed and free.
"""

from __future__ import annotations

import io
import os
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from datamodules.atomic_write import AtomicFile
from datamodules.url_open import is_local, local_path

_HINT = ("the previous checkpoints are untouched; free space there, or point the checkpoints elsewhere "
         "(ModelCheckpoint dirpath), then resume from last.ckpt")


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose local writes are all-or-nothing (object stores write whole objects anyway)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not is_local(str(path)):
            super().save_checkpoint(checkpoint, path, storage_options)  # refuses storage_options, like Lightning
            return
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getbuffer()
        target = local_path(str(path))
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        with AtomicFile(target, needed=data.nbytes, hint=_HINT) as file:
            file.write(data)
