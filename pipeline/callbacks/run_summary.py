"""Throughput while training and the run's totals at the end, so runs compare on speed as well as quality; and
one block at the end of a fit that says what the run did and where everything it wrote is."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from pipeline.callbacks.gan_progress import format_duration, headline_metric, latest_evaluation
from pipeline.callbacks.periodic import PeriodicCallback, log_metrics, samples_dir
from pipeline.tracking.metric_goals import goal_of


class RunSummaryCallback(pl.Callback):
    """Logs ``perf/images_per_s`` on logging steps (real images shown to D per second, all ranks together, over
    the last ``window`` batches), and when training ends ``run/final_kimg`` and ``run/wall_time_s`` (training
    wall time summed over every session of a resumed run: the total so far is kept in checkpoints). Then prints
    the summary block: steps, kimg, wall time, the best evaluation and its step, and where the checkpoints,
    sample images and logged runs are.

    ``ganforge fit`` adds one to every fit whose config names none. Rates need a module that counts
    ``images_seen`` (modules.gan.GAN); other modules get the rest.
    """

    def __init__(self, window: int = 50):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.earlier_wall_time_s = 0.0  # sessions before this one (from the checkpoint)
        self._session_start: float | None = None
        self._recent: deque[tuple[float, int]] = deque(maxlen=window + 1)
        self._wall_time_at_end = 0.0
        self._tracked_runs: list[str] = []

    def wall_time_s(self) -> float:
        session = 0.0 if self._session_start is None else time.perf_counter() - self._session_start
        return self.earlier_wall_time_s + session

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._session_start = time.perf_counter()
        self._recent.clear()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        seen = getattr(pl_module, "images_seen", None)
        if seen is None:
            return
        self._recent.append((time.perf_counter(), seen))
        (t0, seen0), (t1, seen1) = self._recent[0], self._recent[-1]
        # Lightning writes logged values every log_every_n_steps batches: a value logged in between is dropped
        if t1 > t0 and (trainer.fit_loop.total_batch_idx + 1) % max(1, trainer.log_every_n_steps) == 0:
            pl_module.log("perf/images_per_s", (seen1 - seen0) / (t1 - t0))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seen = getattr(pl_module, "images_seen", None)
        totals = {"run/wall_time_s": self.wall_time_s()}
        if seen is not None:
            totals["run/final_kimg"] = seen / 1000.0
        log_metrics(trainer, totals)
        self._wall_time_at_end = self.wall_time_s()
        if trainer.is_global_zero:  # W&B's run is open until the loggers close, before on_fit_end
            self._tracked_runs = tracked_runs(trainer)

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """After every callback's end of training (the last evaluation, the last checkpoint)."""
        lines = summary_lines(trainer, pl_module, self._wall_time_at_end) + self._tracked_runs
        print("\n".join(lines), flush=True)

    def state_dict(self) -> dict[str, Any]:
        return {"wall_time_s": self.wall_time_s()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.earlier_wall_time_s = float(state_dict["wall_time_s"])


def summary_lines(trainer: pl.Trainer, pl_module: pl.LightningModule, wall_time_s: float) -> list[str]:
    """The end-of-fit block, one fact a line (the loggers' runs: tracked_runs)."""
    seen = getattr(pl_module, "images_seen", None)
    head = f"{trainer.global_step} generator steps"
    if getattr(pl_module, "d_steps", None) is not None:
        head += f" ({pl_module.d_steps} D steps)"
    if seen:
        head += f", {seen / 1000:.4g} kimg"
    head += f" in {format_duration(wall_time_s)}"
    if seen:
        head += f" ({wall_time_s / (seen / 1000):.3g} s/kimg)"
    lines = [f"── ganforge fit: {head} ──"]
    evaluations = [ev for cb in trainer.callbacks if isinstance(cb, PeriodicCallback) for ev in cb.evaluations]
    latest = latest_evaluation(trainer)
    if latest is not None:
        step, metrics = latest
        name = headline_metric(metrics)
        if goal_of(name):
            pick = min if goal_of(name) == "min" else max
            best_step, best = pick(((s, m[name]) for s, m in evaluations if name in m), key=lambda sm: sm[1])
            lines.append(_row("best", f"{_short(name)} {best:.4g} at step {best_step}"))
        lines.append(_row("last evaluation", f"step {step}: "
                          + ", ".join(f"{_short(m)} {value:.4g}" for m, value in metrics.items())))
    checkpoints = [cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
    for cb in checkpoints[:1]:
        latest = cb.last_model_path or cb.best_model_path  # without a monitor "best" is the latest written
        lines.append(_row("checkpoints", _shown(cb.dirpath) + (f" (latest: {Path(latest).name})" if latest else "")))
    samples = samples_dir(trainer, create=False)
    images = sorted(samples.glob("*.png")) if samples.is_dir() else []
    if images:
        lines.append(_row("sample images", f"{_shown(samples)} ({len(images)}, latest {images[-1].name})"))
    return lines


def tracked_runs(trainer: pl.Trainer) -> list[str]:
    """Where each logger keeps the run (W&B: the local run folder, and its page when online)."""
    lines = []
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            url = getattr(run, "url", None)
            lines.append(_row("W&B run", _shown(Path(run.dir).parent) + (f" ({url})" if url else " (offline)")))
        elif getattr(logger, "log_dir", None):
            lines.append(_row(f"{type(logger).__name__.removesuffix('Logger')} run", _shown(logger.log_dir)))
    return lines


def _shown(path: str | Path) -> str:
    """Relative to the working directory when below it (as the configs name run folders), else absolute."""
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def _row(label: str, text: str) -> str:
    return f"  {label + ':':<16} {text}"


def _short(metric: str) -> str:
    return metric.split("/", 1)[-1]

