"""Base for evaluations that run every N generator steps and once more at the end of training, and once in
``validate`` / ``test`` (on the checkpoint's weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn


class PeriodicCallback(pl.Callback):
    """Calls ``run(trainer, pl_module)`` when global_step (generator steps) hits a multiple of ``every_n_steps``
    and at the end of fit, never twice for one step. ``every_n_steps=0`` runs it at the end only.

    ``validate`` and ``test`` run it once, at the end of their epoch, where its metrics join Lightning's results
    (printed, returned, logged). Validation loops inside a fit leave it alone: it already runs on its steps.
    ``prepare`` runs before the first evaluation of a fit, validate or test. Metrics a subclass reports with
    ``record`` are logged and kept in ``evaluations`` (the progress bar and the run summary read them).
    """

    def __init__(self, every_n_steps: int):
        self.every_n_steps = every_n_steps
        self._last_step = -1
        self._checkpoint_step: int | None = None
        self.evaluations: list[tuple[int, dict[str, float]]] = []  # (generator step, metrics), this session

    def record(self, trainer: pl.Trainer, metrics: dict[str, float]) -> None:
        """Log an evaluation's metrics (see log_metrics) and keep them with the step they evaluate."""
        self.evaluations.append((self.evaluated_step(trainer), dict(metrics)))
        log_metrics(trainer, metrics)

    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        raise NotImplementedError

    def prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Set-up that needs the trainer (extractors on the module's device, real statistics): none here."""

    def evaluated_step(self, trainer: pl.Trainer) -> int:
        """The generator step of the weights being evaluated: the checkpoint's in validate / test (whose
        trainer does not restore its step), else trainer.global_step."""
        if trainer.state.fn != TrainerFn.FITTING and self._checkpoint_step is not None:
            return self._checkpoint_step
        return trainer.global_step

    def file_stem(self, prefix: str, trainer: pl.Trainer) -> str:
        """``<prefix>_<step>``, plus ``_validate`` / ``_test`` outside fit: never a training file's name."""
        stage = "" if trainer.state.fn == TrainerFn.FITTING else f"_{trainer.state.fn.value}"
        return f"{prefix}_{self.evaluated_step(trainer):07d}{stage}"

    def _maybe_run(self, trainer, pl_module) -> None:
        if trainer.global_step != self._last_step:
            self._last_step = trainer.global_step
            self.run(trainer, pl_module)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._checkpoint_step = None
        self.prepare(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0:
            self._maybe_run(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._maybe_run(trainer, pl_module)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            self._checkpoint_step = int(checkpoint.get("global_step", 0))

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self.prepare(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self.run(trainer, pl_module)

    def on_test_start(self, trainer, pl_module) -> None:
        self.prepare(trainer, pl_module)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self.run(trainer, pl_module)


def samples_dir(trainer: pl.Trainer, create: bool = True) -> Path:
    """``<run dir>/samples``: sample images live beside the run's checkpoints (or in the logger's folder).

    Not ``trainer.log_dir``: under DDP that is a collective call, and this may run on rank 0 only.
    """
    checkpoints = trainer.checkpoint_callback
    if checkpoints is not None and getattr(checkpoints, "dirpath", None):
        run_dir = Path(checkpoints.dirpath).parent
    else:
        logger = trainer.logger
        run_dir = (getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)) if logger else None
    out = Path(run_dir or trainer.default_root_dir) / "samples"
    if create:
        out.mkdir(parents=True, exist_ok=True)
    return out


def logger_step(trainer: pl.Trainer) -> int:
    """The step Lightning stamps on ``self.log`` values: with manual optimization it counts batches (D steps),
    not generator steps. Callbacks log at the same step so that all series share one x-axis."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def log_metrics(trainer: pl.Trainer, metrics: dict[str, float]) -> None:
    """Metrics computed by a callback, to every logger, at the step of the module's own metrics. In validate /
    test they go through the module's ``log``, so that they are among the results Lightning prints and returns."""
    if trainer.state.fn in (TrainerFn.VALIDATING, TrainerFn.TESTING):
        for name, value in metrics.items():  # equal on every rank: the mean over ranks changes nothing
            trainer.lightning_module.log(name, value, sync_dist=True)
        return
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=logger_step(trainer))


def log_image(trainer: pl.Trainer, key: str, path: Path) -> None:
    """Send an image file to every logger that takes images (W&B); CSV loggers keep the file path only."""
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):
            logger.log_image(key=key, images=[str(path)], step=logger_step(trainer))
