"""A run's record: its resolved config plus what the config does not say (code version, packages, the
distributed layout, the SLURM job, the data's shards), logged when training starts so that every run can be
reproduced from its record alone. Secrets are redacted before anything leaves the process."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger

from pipeline.tracking.redact import redact, redact_argv

CHECKPOINT_KEY = "run_record"  # a checkpoint's copy of its run's record, with its W&B run id and best values
_PACKAGES = ("torch", "pytorch-lightning", "lightning", "wandb", "numpy", "jsonargparse", "webdataset", "deepspeed",
             "ganforge")
_SLURM_VARIABLES = {"job_id": "SLURM_JOB_ID", "array_job_id": "SLURM_ARRAY_JOB_ID",
                    "array_task_id": "SLURM_ARRAY_TASK_ID", "node_list": "SLURM_JOB_NODELIST",
                    "job_name": "SLURM_JOB_NAME", "cluster": "SLURM_CLUSTER_NAME",
                    "restart_count": "SLURM_RESTART_COUNT"}
_MAX_SHARD_URLS = 256  # beyond this the record keeps the count and the first URLs (W&B config stays small)


def run_record(trainer: pl.Trainer) -> dict[str, Any]:
    """Everything about a run that its config does not hold (not yet redacted)."""
    record = {
        "git": git_state(Path(__file__).resolve().parents[2]),
        "packages": package_versions(),
        "command": sys.argv,
        "distributed": {
            "world_size": trainer.world_size, "num_nodes": trainer.num_nodes, "devices": trainer.num_devices,
            "accelerator": type(trainer.accelerator).__name__, "strategy": type(trainer.strategy).__name__,
            "precision": str(trainer.precision),
        },
    }
    slurm = {key: os.environ[name] for key, name in _SLURM_VARIABLES.items() if name in os.environ}
    if slurm:
        record["slurm"] = slurm
    shards = shard_index(trainer.datamodule)
    if shards:
        record["data"] = shards
    return record


def git_state(root: Path) -> dict[str, Any]:
    """The commit of the code that ran and whether it had uncommitted changes (None outside a git checkout)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit, status = git("rev-parse", "HEAD"), git("status", "--porcelain")
    return {"commit": None if commit is None else commit.strip(), "dirty": None if status is None else bool(status)}


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def shard_index(datamodule: Any) -> dict[str, Any] | None:
    """The shards a sharded datamodule reads (``shard_urls``, ``shard_counts`` after setup) and their size."""
    urls = list(getattr(datamodule, "shard_urls", None) or [])
    if not urls:
        return None
    counts = getattr(datamodule, "shard_counts", None)
    return {"num_shards": len(urls), "samples": None if counts is None else int(sum(counts)),
            "urls": urls[:_MAX_SHARD_URLS], "shard_samples": None if counts is None else list(counts)[:_MAX_SHARD_URLS]}


class RunRecordCallback(SaveConfigCallback):
    """The CLI's config callback: logs the redacted resolved config (what ``--print_config`` prints) and the run
    record (under ``run``) to every logger as hyper-parameters, writes the redacted ``config.yaml`` to the log
    dir and as ``ganforge-config.yaml`` into the W&B run's files (W&B writes its own config.yaml), and stamps
    the record and the W&B run id into every checkpoint, so that a resumed fit continues the same W&B run.
    The hyper-parameters a checkpoint carries are redacted as well.

    Lightning's own hyper-parameter logging is turned off for the trainer: the resolved config already holds
    the module's and datamodule's arguments, and a second copy under other names would clutter comparisons.
    """

    def __init__(self, parser, config, config_filename: str = "config.yaml", overwrite: bool = False,
                 multifile: bool = False, save_to_log_dir: bool = True):
        super().__init__(parser, config, config_filename, overwrite, multifile, save_to_log_dir=False)
        self.write_to_log_dir = save_to_log_dir
        self.record: dict[str, Any] | None = None
        self._config_path: Path | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        trainer.enable_autolog_hparams = False
        if self.write_to_log_dir and not self.already_saved:
            self._config_path = Path(trainer.log_dir) / self.config_filename  # trainer.log_dir is collective
            exists = trainer.strategy.broadcast(trainer.is_global_zero and self._config_path.exists())
            if exists and not self.overwrite:
                raise RuntimeError(f"{self._config_path} exists: refusing to overwrite a previous run's config "
                                   "(give another trainer.default_root_dir or logger save_dir)")
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Rank zero only (SaveConfigCallback.setup)."""
        config = redact(yaml.safe_load(self.parser.dump(self.config, skip_none=False)))
        record = run_record(trainer)
        record["command"] = redact_argv(record["command"])
        self.record = redact(record)
        text = yaml.safe_dump(config, sort_keys=False)
        if self._config_path is not None:
            self._config_path.parent.mkdir(parents=True, exist_ok=True)
            self._config_path.write_text(text)
        for logger in trainer.loggers:
            logger.log_hyperparams({**config, "run": self.record})
            if isinstance(logger, WandbLogger):
                Path(logger.experiment.dir, f"ganforge-{self.config_filename}").write_text(text)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        for key in (pl.LightningModule.CHECKPOINT_HYPER_PARAMS_KEY, pl.LightningDataModule.CHECKPOINT_HYPER_PARAMS_KEY):
            if key in checkpoint:  # checkpoints get shared too (W&B artifacts): no storage credentials in them
                checkpoint[key] = redact(checkpoint[key])
        if self.record is None:  # ranks other than zero: their checkpoint copy is never written
            return
        checkpoint[CHECKPOINT_KEY] = dict(self.record)
        wandb_loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if wandb_loggers:  # what a resumed fit needs to continue the run (GanForgeWandbLogger.resume_from)
            logger = wandb_loggers[0]
            checkpoint[CHECKPOINT_KEY]["wandb"] = {"run_id": logger.version, "best": getattr(logger, "best", {})}
