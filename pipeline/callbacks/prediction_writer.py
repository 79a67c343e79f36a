"""Writes what ``ganforge predict`` generates, batch by batch, so that any number of samples fits in memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from pipeline.image_grid import save_grid


class PredictionWriter(BasePredictionWriter):
    """Per predicted batch, ``batch_r<rank>_<batch>.pt`` holding {"index", "samples", "labels"} (on the CPU;
    labels None for unconditional generators), and for images (N, C, H, W) one ``<index>.png`` per sample.

    ``ganforge predict`` adds one with the default folder when the config lists no prediction writer (the CLI's
    predict then keeps nothing in memory: ``return_predictions`` is false), so that it always writes its
    samples; list one under ``trainer.callbacks`` to choose the folder. Files of an earlier predict into the same
    folder are overwritten, not removed.

    Args:
        output_dir: where the files go (None: ``<trainer.default_root_dir>/predictions``).
        png: also write image samples as PNG files.
    """

    def __init__(self, output_dir: str | None = None, png: bool = True):
        super().__init__(write_interval="batch")
        self.output_dir, self.png = output_dir, png

    def folder(self, trainer: pl.Trainer) -> Path:
        return Path(self.output_dir or Path(trainer.default_root_dir) / "predictions")

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        out = self.folder(trainer)
        out.mkdir(parents=True, exist_ok=True)
        record = {key: None if value is None else value.detach().cpu() for key, value in prediction.items()}
        torch.save(record, out / f"batch_r{trainer.global_rank}_{batch_idx:06d}.pt")
        samples = record["samples"]
        if self.png and samples.dim() == 4:
            for index, image in zip(record["index"].tolist(), samples, strict=True):
                save_grid(image[None], out / f"{index:08d}.png", nrow=1, padding=0)
