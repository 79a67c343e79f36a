"""PreemptionCheckpoint: a signal mid-run yields a checkpoint at the step boundary that resumes bit-identically,
and the requeue guard refuses the requeues that could loop forever.

No scheduler here (tests/test_slurm_jobs.py runs the real one): outside SLURM the run checkpoints and stops
with the reason it was not requeued.
"""

import csv
import os
import re
import signal

import pytest
import pytorch_lightning as pl
import torch

from datamodules.mixture_datamodule import MixtureDataModule
from modules.gan import GAN
from modules.losses import WassersteinLoss
from modules.nets.mlp import MLPDiscriminator, MLPGenerator
from pipeline.callbacks.preemption import PreemptionCheckpoint

MAX_STEPS = 8
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT")


class SignalAt(pl.Callback):
    """Sends this process ``signum`` as the batch after discriminator step ``d_step`` starts (mid-step)."""

    def __init__(self, signum: int, d_step: int):
        self.signum, self.d_step = signum, d_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.d_steps == self.d_step:
            os.kill(os.getpid(), self.signum)


def fit(root, callbacks, ckpt_path=None, **trainer_kwargs):
    torch.manual_seed(0)
    model = GAN(MLPGenerator(latent_dim=2, hidden=32, layers=2, batch_norm=True),
                MLPDiscriminator(hidden=32, layers=2), loss=WassersteinLoss(), n_critic=2, gp_weight=10.0,
                lr_schedule="linear", betas_g=(0.0, 0.9), betas_d=(0.0, 0.9), ema_kimg=0.5, noise_seed=3)
    trainer = pl.Trainer(accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0,
                         max_steps=MAX_STEPS, default_root_dir=root, callbacks=callbacks,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         **{"logger": False, **trainer_kwargs})
    trainer.fit(model, MixtureDataModule(batch_size=32, batches_per_epoch=10, seed=5), ckpt_path=ckpt_path)
    return model


@pytest.fixture(autouse=True)
def no_slurm(monkeypatch):
    for name in SLURM_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("signum", "d_step"), [(signal.SIGUSR1, 12), (signal.SIGTERM, 5)],
                         ids=["SIGUSR1-before-a-D-only-batch", "SIGTERM-before-a-G-batch"])
def test_signal_checkpoints_at_the_step_boundary_and_resumes_exactly(tmp_path, signum, d_step):
    """After d_step 12 comes a discriminator-only batch (n_critic=2) in the middle of the second epoch; after
    5, a batch that ends with a generator step."""
    handler_before = signal.getsignal(signum)
    with pytest.raises(SystemExit, match=f"stopped by {signum.name} at generator step {(d_step + 1) // 2}; "
                                         r".*not requeued: not a SLURM job"):
        fit(tmp_path, [PreemptionCheckpoint(), SignalAt(signum, d_step)])
    assert signal.getsignal(signum) == handler_before
    assert [p.name for p in tmp_path.iterdir()] == ["hpc_ckpt_1.ckpt"]  # no partial file left
    ckpt = torch.load(tmp_path / "hpc_ckpt_1.ckpt", weights_only=False)
    assert ckpt["ganforge"]["d_steps"] == d_step + 1  # the signalled step completed, nothing after it

    resumed = fit(tmp_path / "resumed", [], ckpt_path=tmp_path / "hpc_ckpt_1.ckpt")
    never_stopped = fit(tmp_path / "full", [])
    for (name, a), (_, b) in zip(never_stopped.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert resumed.d_steps == never_stopped.d_steps == 2 * MAX_STEPS


def test_the_signalled_batchs_logged_metrics_are_written_before_the_exit(tmp_path):
    """Lightning hands a batch's logged values to the loggers after on_train_batch_end, where the callback
    exits: batch 5 is a logging batch (every 2nd), signalled; its row must be in metrics.csv."""
    logger = pl.loggers.CSVLogger(tmp_path / "logs")
    with pytest.raises(SystemExit, match="stopped by SIGUSR1 at generator step 3"):
        fit(tmp_path, [PreemptionCheckpoint(), SignalAt(signal.SIGUSR1, 5)], logger=logger, log_every_n_steps=2)
    with open(f"{logger.log_dir}/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["step"]) for row in rows] == [1, 3, 5] and rows[-1]["loss/g"]


@pytest.mark.parametrize(("env", "start_step", "step", "reason"), [
    ({}, 0, 5, "not a SLURM job"),
    ({"SLURM_JOB_ID": "7"}, 40, 40, "no generator step completed since this run started at step 40"),
    ({"SLURM_JOB_ID": "7", "SLURM_RESTART_COUNT": "3"}, 0, 5, r"requeued 3 times already \(max_requeues=3\)"),
    ({"SLURM_JOB_ID": "7", "SLURM_RESTART_COUNT": "2"}, 40, 41, None),
])
def test_requeue_guard(monkeypatch, env, start_step, step, reason):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    callback = PreemptionCheckpoint(max_requeues=3)
    callback.start_step = start_step
    refusal = callback.requeue_refusal(step)
    if reason is None:
        assert refusal is None
    else:
        assert refusal is not None and re.search(reason, refusal)
