"""The ``ganforge`` command: LightningCLI for fit, plus ganforge's own subcommands."""

from __future__ import annotations

import importlib
import sys
import warnings

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI

import pipeline.strategies  # noqa: F401  registers the ddp_gan and deepspeed_gan strategies
from pipeline.run_record import RunRecordCallback
from pipeline.wandb_logger import GanForgeWandbLogger


class GanForgeCLI(LightningCLI):
    """Every module, datamodule, trainer, logger and callback option is a config key (jsonargparse)."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # GANs have no validation/test targets of their own: evaluation runs in callbacks during fit.
        return {"fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"}}

    def before_fit(self) -> None:
        # W&B starts its run before any callback or checkpoint hook: only here is the resumed checkpoint known.
        for logger in self.trainer.loggers:
            if isinstance(logger, GanForgeWandbLogger):
                logger.resume_from(self.config.fit.ckpt_path)


# Deliberate, so not worth a warning on every run: the EMA generator lives in eval mode, and a shard
# stream's __len__ is the per-rank epoch length that every worker shares (see datamodules/).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")


def run_cli(args: list[str] | None = None, run: bool = True) -> GanForgeCLI:
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


# ganforge's own subcommands: name -> module with a ``main(argv)``.
SUBCOMMANDS = {
    "sample": "pipeline.sample_command",
    "shards": "pipeline.shards_command",
    "launch": "pipeline.launch_command",
    "compare": "pipeline.compare_command",
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        command = importlib.import_module(SUBCOMMANDS[argv[0]])
        try:
            command.main(argv[1:])
        except (FileNotFoundError, ValueError) as err:  # bad input: one line that names it, no traceback
            raise SystemExit(f"ganforge {argv[0]}: error: {err}") from None
        return
    run_cli(argv)


if __name__ == "__main__":
    main()
