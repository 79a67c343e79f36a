"""``ganforge fit`` / ``validate`` / ``test`` / ``predict``: LightningCLI over any LightningModule and
LightningDataModule, so that every module, datamodule, trainer, logger and callback option is a config key
(jsonargparse)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from lightning_fabric.plugins.environments import SLURMEnvironment
from pytorch_lightning.callbacks import BasePredictionWriter, Callback
from pytorch_lightning.callbacks.progress import ProgressBar
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.model_helpers import is_overridden

import pipeline.strategies  # noqa: F401  registers the ddp_gan and deepspeed_gan strategies
from pipeline.callbacks.gan_progress import GanProgressBar
from pipeline.callbacks.prediction_writer import PredictionWriter
from pipeline.callbacks.preemption import latest_hpc_checkpoint
from pipeline.callbacks.run_summary import RunSummaryCallback
from pipeline.commands.quiet import silence_irrelevant_output
from pipeline.commands.resume_config import Change, ResumeMismatchError, check_resume
from pipeline.tracking.redact import redact
from pipeline.tracking.run_record import RunRecordCallback
from pipeline.tracking.wandb_logger import GanForgeWandbLogger

# A fit evaluates in its callbacks, every N generator steps; validation loops would change what it runs (and
# slow it) only because the modules can validate. ``--trainer.limit_val_batches N`` turns them on.
# Checkpoints are written atomically (a full disk or a kill mid-write leaves the previous last.ckpt intact).
FIT_DEFAULTS = {"trainer.limit_val_batches": 0, "trainer.num_sanity_val_steps": 0,
                "trainer.plugins": [{"class_path": "pipeline.plugins.atomic_checkpoint_io.AtomicCheckpointIO"}]}
# The module method each evaluating subcommand runs.
EVALUATION_STEPS = {"validate": "validation_step", "test": "test_step", "predict": "predict_step"}


class GanForgeCLI(LightningCLI):
    """``fit`` trains, evaluating in callbacks every N generator steps (no validation loop unless asked for).
    ``validate`` and ``test`` score a trained checkpoint on the datamodule's evaluation set (the module's
    val/ or test/ metrics, plus one run of every evaluation callback); ``predict`` writes samples by index
    (pipeline.callbacks.prediction_writer). All three need ``--ckpt_path``.
    """

    resume_changes: tuple[Change, ...] = ()  # a resumed fit's allowed config changes (set by _parse_ckpt_path)

    def init_parser(self, **kwargs: Any) -> Any:
        kwargs.setdefault("exit_on_error", False)  # raise: `ganforge` reports it in one line, not a usage dump
        return super().init_parser(**kwargs)

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict[str, Any],
                     subparser_kwargs: dict[str, Any]) -> None:
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        # Without subcommands (run=False) the parsed trainer is the one a caller fits with.
        self._parser("fit" if add_subcommands else None).set_defaults(FIT_DEFAULTS)
        if add_subcommands:  # the prediction writer has the samples; holding all of them too could exhaust memory
            self._parser("predict").set_defaults({"return_predictions": False})

    def before_instantiate_classes(self) -> None:
        if self.subcommand in EVALUATION_STEPS and self.config[self.subcommand].ckpt_path is None:
            raise SystemExit(f"ganforge {self.subcommand}: error: pass --ckpt_path CHECKPOINT (the run to evaluate); "
                             "an untrained generator is almost never what is meant")

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        step = EVALUATION_STEPS.get(self.subcommand)
        if step is not None and not is_overridden(step, self.model, pl.LightningModule):
            raise SystemExit(f"ganforge {self.subcommand}: error: {type(self.model).__name__} has no {step}; "
                             f"{self.subcommand} runs GAN modules (modules.gan.GAN and its subclasses)")

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        trainer = self._get(self.config_init, "trainer", default={})
        kwargs.setdefault("callbacks", default_callbacks(trainer.get("callbacks"), trainer.get("enable_progress_bar"),
                                                         self.subcommand in (None, "fit")))
        return super().instantiate_trainer(**kwargs)

    def before_fit(self) -> None:
        for callback in self.trainer.callbacks:
            if isinstance(callback, RunRecordCallback) and self.resume_changes:
                callback.resume_changes = {change.key: [change.saved, change.given] for change in self.resume_changes}
        # W&B starts its run before any callback or checkpoint hook: only here is the resumed checkpoint known.
        for logger in self.trainer.loggers:
            if isinstance(logger, GanForgeWandbLogger):
                logger.resume_from(self.config.fit.ckpt_path)

    def _parse_ckpt_path(self) -> None:
        """A resumed fit (``--ckpt_path``, or SLURM's automatic resume from the root dir's latest hpc_ckpt) must
        build the model the checkpoint was trained with: refused in one line, before anything is built,
        otherwise. Lightning's CLI would instead replace the given model config with the checkpoint's
        hyper-parameters, silently: another model's config, and the learning rates a resume may change on
        purpose, would be ignored. Other subcommands evaluate a checkpoint with its own model (Lightning's way)."""
        if self.config.get("subcommand") != "fit":
            return super()._parse_ckpt_path()
        config = self.config.fit
        ckpt_path = config.ckpt_path
        if ckpt_path is None and SLURMEnvironment.detect():
            ckpt_path = latest_hpc_checkpoint(Path(config.trainer.default_root_dir or Path.cwd()))
        if ckpt_path is None:
            return
        given = redact(yaml.safe_load(self._parser("fit").dump(config, skip_none=False)))
        try:
            self.resume_changes = tuple(check_resume(str(ckpt_path), given))
        except ResumeMismatchError as err:
            raise SystemExit(f"ganforge fit: error: {err}") from None
        if self.resume_changes:
            rank_zero_info(f"ganforge: resuming {ckpt_path} with changes: "
                           f"{'; '.join(str(c) for c in self.resume_changes)}")

    def before_predict(self) -> None:
        if not any(isinstance(callback, BasePredictionWriter) for callback in self.trainer.callbacks):
            self.trainer.callbacks.append(PredictionWriter())


def default_callbacks(callbacks: Callback | list[Callback] | None, enable_progress_bar: bool | None,
                      fitting: bool) -> list[Callback]:
    """The configured callbacks, plus what every ganforge run shows where the config names none: the GAN
    progress display (unless ``trainer.enable_progress_bar`` is false, which also drops a configured one), after
    the other callbacks, and, in a fit, the run summary at the end."""
    chosen = [] if callbacks is None else list(callbacks) if isinstance(callbacks, list) else [callbacks]
    bars = [callback for callback in chosen if isinstance(callback, ProgressBar)]
    chosen = [callback for callback in chosen if not isinstance(callback, ProgressBar)]
    if enable_progress_bar is not False:  # last: a step's line shows the evaluations made at that step
        chosen += bars or [GanProgressBar()]
    if fitting and not any(isinstance(callback, RunSummaryCallback) for callback in chosen):
        chosen.append(RunSummaryCallback())
    return chosen


def build_cli(args: list[str] | None = None, run: bool = True) -> GanForgeCLI:
    silence_irrelevant_output()
    # Any LightningModule: the GAN variants (modules.gan.GAN and subclasses) and IcGAN's encoder fitting.
    return GanForgeCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=RunRecordCallback,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )
