"""Throughput while training and the run's totals at the end, so runs compare on speed as well as quality."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import pytorch_lightning as pl

from pipeline.callbacks.periodic import log_metrics


class RunSummaryCallback(pl.Callback):
    """Logs ``perf/images_per_s`` every batch (real images shown to D per second, all ranks together, over the
    last ``window`` batches), and when training ends ``run/final_kimg`` and ``run/wall_time_s`` (training wall
    time summed over every session of a resumed run: the total so far is kept in checkpoints).

    Needs a module that counts ``images_seen`` (modules.gan.GAN).
    """

    def __init__(self, window: int = 50):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.earlier_wall_time_s = 0.0  # sessions before this one (from the checkpoint)
        self._session_start: float | None = None
        self._recent: deque[tuple[float, int]] = deque(maxlen=window + 1)

    def wall_time_s(self) -> float:
        session = 0.0 if self._session_start is None else time.perf_counter() - self._session_start
        return self.earlier_wall_time_s + session

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._session_start = time.perf_counter()
        self._recent.clear()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._recent.append((time.perf_counter(), pl_module.images_seen))
        (t0, seen0), (t1, seen1) = self._recent[0], self._recent[-1]
        if t1 > t0:
            pl_module.log("perf/images_per_s", (seen1 - seen0) / (t1 - t0))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        totals = {"run/final_kimg": pl_module.images_seen / 1000.0, "run/wall_time_s": self.wall_time_s()}
        log_metrics(trainer, totals)

    def state_dict(self) -> dict[str, Any]:
        return {"wall_time_s": self.wall_time_s()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.earlier_wall_time_s = float(state_dict["wall_time_s"])
