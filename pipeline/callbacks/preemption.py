"""Preemption: on SIGUSR1 or SIGTERM, checkpoint at the end of the current step, requeue the job, exit.

Slurm sends SIGUSR1 ahead of the time limit (``sbatch --signal=USR1@<seconds>``) and SIGTERM before it kills
a job (preemption, ``scancel``, the time limit itself). The signal handler only takes note: the checkpoint
is written at the next batch end, where the state is a whole number of steps, after every rank has agreed
on that batch (a signal reaches ranks at different moments; a collective begun by one rank alone would
hang). The checkpoint is ``<default_root_dir>/hpc_ckpt_<n>.ckpt``, the name Lightning resumes from when a
SLURM job starts with no ``ckpt_path``, so the requeued job continues at the same generator step with the
same data-stream position (both are in the checkpoint); it is written under another name and renamed, so a
kill mid-write never leaves a truncated checkpoint to resume from. Loggers are flushed first. A CSVLogger
empties its version folder's metrics.csv when a resumed job reopens it, so its rows are kept aside at the
signal and logged again on resume (W&B's logger continues the same run by itself).

Lightning's own SLURM auto-requeue saves from inside the signal handler, i.e. in the middle of a step and of
whatever collective the rank is in; this callback turns it off and replaces it (and Lightning's SIGTERM
handler, which broadcasts from inside the handler) while training runs. A signal before training starts
finds SIGUSR1's default action (the job ends, not requeued: no step was lost).

Requeue guard (a job whose time left is shorter than the signal lead time is signalled right after each
restart, and Lightning's handler then requeues it forever): no requeue when no generator step was completed
since this run started (nothing was gained, the next run would be signalled the same way), nor after
``max_requeues`` restarts (SLURM_RESTART_COUNT). A SIGTERM is requeued only at the time limit: ``scancel``
sends SIGTERM too (measured: a requeue resurrects the cancelled job), and Slurm requeues preempted jobs
itself under PreemptMode=REQUEUE. Refused, the job stops with its checkpoint and a non-zero exit that says
why; ``ganforge fit --ckpt_path <checkpoint>`` resumes it.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.environments import SLURMEnvironment
from pytorch_lightning.loggers import CSVLogger

_CKPT = re.compile(r"hpc_ckpt_(\d+)\.ckpt$")
_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
_KEPT_METRICS = "metrics-before-requeue.csv"


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes: ARRAYJOB_TASK for array tasks, else the job id."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID")


def csv_loggers(trainer: pl.Trainer) -> list[CSVLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, CSVLogger)]


def keep_csv_metrics(trainer: pl.Trainer) -> None:
    """Copies each CSVLogger's metrics.csv aside: the requeued job's logger empties it when it reopens the
    version folder."""
    for logger in csv_loggers(trainer):
        metrics = Path(logger.log_dir) / "metrics.csv"
        if metrics.is_file():
            shutil.copyfile(metrics, metrics.with_name(_KEPT_METRICS))


def restore_csv_metrics(trainer: pl.Trainer, up_to_step: int) -> None:
    """Logs the rows kept aside again, up to the step the run resumed from (so nothing is doubled)."""
    for logger in csv_loggers(trainer):
        kept = Path(logger.log_dir) / _KEPT_METRICS
        if not kept.is_file():
            continue
        with kept.open(newline="") as f:
            for row in csv.DictReader(f):
                step = int(row.pop("step"))
                if step <= up_to_step:
                    logger.log_metrics({k: float(v) for k, v in row.items() if v != ""}, step=step)
        kept.unlink()


def _hpc_numbers(folder: Path) -> list[int]:
    return [int(m.group(1)) for p in folder.glob("hpc_ckpt_*.ckpt") if (m := _CKPT.search(p.name))]


def next_hpc_checkpoint(folder: Path) -> Path:
    return folder / f"hpc_ckpt_{max(_hpc_numbers(folder), default=0) + 1}.ckpt"


def latest_hpc_checkpoint(folder: Path) -> Path | None:
    """The checkpoint a SLURM job started without ckpt_path resumes from (Lightning's choice: the highest n)."""
    numbers = _hpc_numbers(folder)
    return folder / f"hpc_ckpt_{max(numbers)}.ckpt" if numbers else None


class PreemptionCheckpoint(pl.Callback):
    """Checkpoint-and-requeue on SIGUSR1/SIGTERM (added to every job by ``ganforge launch``).

    Args:
        max_requeues: restarts (SLURM_RESTART_COUNT) after which the job is no longer requeued.
    """

    def __init__(self, max_requeues: int = 20):
        self.max_requeues = max_requeues
        self.received: int | None = None
        self.start_step = 0
        self._previous: dict[int, object] = {}

    # ---- signals ------------------------------------------------------------------------------
    def _note(self, signum: int, _frame) -> None:
        if self.received is None:
            print(f"ganforge: received {signal.Signals(signum).name}; checkpointing at the end of this step",
                  file=sys.stderr, flush=True)
        self.received = signum

    def setup(self, trainer, pl_module, stage: str) -> None:
        environment = getattr(trainer.strategy, "cluster_environment", None)  # single-device strategies have none
        if isinstance(environment, SLURMEnvironment):
            environment.auto_requeue = False  # this callback requeues; Lightning's handler must not as well

    def on_train_start(self, trainer, pl_module) -> None:
        # After Lightning's handlers (which it restores, with the ones before them, at its teardown).
        for signum in _SIGNALS:
            self._previous[signum] = signal.signal(signum, self._note)
        self.start_step = trainer.global_step
        if trainer.is_global_zero:
            restore_csv_metrics(trainer, self.start_step)
            print(f"ganforge: training from generator step {self.start_step} "
                  f"(restart {os.environ.get('SLURM_RESTART_COUNT', '0')})", file=sys.stderr, flush=True)

    def on_train_end(self, trainer, pl_module) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    # ---- the step boundary --------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # One collective per step (the strategy's reduce adds a barrier): did any rank get a signal, and which?
        # SIGTERM outranks SIGUSR1.
        signum = torch.tensor([self.received or 0], device=trainer.strategy.root_device)
        if trainer.world_size > 1:
            torch.distributed.all_reduce(signum, op=torch.distributed.ReduceOp.MAX)
        signum = int(signum)
        if not signum:
            return
        # This batch's logged values reach the loggers only after this hook (Lightning's next two calls, made here
        # since this process exits), then flush: it will not get to its loggers' teardown.
        trainer._logger_connector.on_batch_end()
        trainer._logger_connector.update_train_step_metrics()
        for logger in trainer.loggers:
            logger.save()
        if trainer.is_global_zero:
            keep_csv_metrics(trainer)
        path = self.save(trainer)
        name = signal.Signals(signum).name
        refusal = self.requeue_refusal(trainer.global_step)
        if refusal is None and trainer.is_global_zero:
            refusal = requeue(slurm_job_id(), signum)
        refusal = trainer.strategy.broadcast(refusal)
        if refusal is not None:
            raise SystemExit(f"ganforge: stopped by {name} at generator step {trainer.global_step}; checkpoint "
                             f"{path}; not requeued: {refusal}")
        if trainer.is_global_zero:
            print(f"ganforge: {name} at generator step {trainer.global_step}: saved {path}, job requeued",
                  file=sys.stderr, flush=True)
        # Exit now rather than end the fit: end-of-training hooks would spend the signal's lead time on
        # evaluations and write checkpoints of a state that the requeued job continues from anyway.
        raise SystemExit(0)

    def save(self, trainer: pl.Trainer) -> Path:
        """Writes the next hpc_ckpt_<n>.ckpt via a temporary name, then drops the older ones (rank 0)."""
        folder = Path(trainer.default_root_dir)
        path = trainer.strategy.broadcast(next_hpc_checkpoint(folder))
        partial = folder / f".partial-{path.name}"
        trainer.save_checkpoint(partial)
        if trainer.is_global_zero:
            os.replace(partial, path)
            for old in folder.glob("hpc_ckpt_*.ckpt"):
                if old != path:
                    old.unlink()
        trainer.strategy.barrier("preemption-checkpoint")
        return path

    def requeue_refusal(self, global_step: int) -> str | None:
        """Why this job must not be requeued, or None."""
        if slurm_job_id() is None:
            return "not a SLURM job"
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        if restarts >= self.max_requeues:
            return f"it was requeued {restarts} times already (max_requeues={self.max_requeues})"
        if global_step == self.start_step:
            return (f"no generator step completed since this run started at step {self.start_step}: its time "
                    "left is likely shorter than the signal lead time, and a requeued job would be signalled "
                    "again at once")
        return None


def requeue(job_id: str | None, signum: int) -> str | None:
    """``scontrol requeue``; returns why not, or None.

    A SIGTERM is requeued only when it comes from the job's time limit: ``scancel`` sends SIGTERM too (a
    requeue would resurrect the cancelled job), and a preempted job is requeued by Slurm itself when the
    cluster's PreemptMode says so.
    """
    try:
        if signum == signal.SIGTERM:
            shown = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True,
                                   timeout=60)
            if not re.search(r"\bReason=TimeLimit\b", shown.stdout):
                return "SIGTERM before the time limit: the job is being cancelled or preempted"
        done = subprocess.run(["scontrol", "requeue", str(job_id)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"scontrol failed: {err}"
    return None if done.returncode == 0 else f"scontrol requeue {job_id}: {done.stderr.strip()}"
