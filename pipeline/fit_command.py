"""``ganforge fit``: LightningCLI over any LightningModule and LightningDataModule, so that every module,
datamodule, trainer, logger and callback option is a config key (jsonargparse)."""

from __future__ import annotations

import warnings

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI

import pipeline.strategies  # noqa: F401  registers the ddp_gan and deepspeed_gan strategies
from pipeline.run_record import RunRecordCallback
from pipeline.wandb_logger import GanForgeWandbLogger


class GanForgeCLI(LightningCLI):
    """Only `fit`: GANs have no validation targets; evaluation runs in callbacks during training."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"}}

    def before_fit(self) -> None:
        # W&B starts its run before any callback or checkpoint hook: only here is the resumed checkpoint known.
        for logger in self.trainer.loggers:
            if isinstance(logger, GanForgeWandbLogger):
                logger.resume_from(self.config.fit.ckpt_path)


# Deliberate, so not worth a warning on every run: the EMA generator lives in eval mode; a shard stream's
# __len__ is the per-rank epoch length that every worker shares (see datamodules/); runs count steps, so
# logging intervals may span epochs; step checkpoints hold the weights after the step (what exact resume needs).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging")
warnings.filterwarnings("ignore", message=r"Using ModelCheckpoint with manual optimization and every_n_train_steps")


def build_cli(args: list[str] | None = None, run: bool = True) -> GanForgeCLI:
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
