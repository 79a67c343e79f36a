"""Under ddp_gan every rank takes the same skip decision: rank 0's loss alone is NaN (its gradients stay finite,
so the all-reduced gradients give no hint), and both ranks skip that step, count it, and stay equal.

Run as a script, this file is the 2-rank worker: python tests/test_step_health_ddp.py OUT_DIR
"""

import math
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from ddp_launch import run_ranks

import pipeline.strategies  # noqa: F401  registers ddp_gan
from datamodules.mixture_datamodule import MixtureDataModule
from modules.gan import GAN
from modules.nets.mlp import MLPDiscriminator, MLPGenerator

NAN_D_STEPS, STEPS = {2, 3}, 6


class RankZeroNaNLoss(GAN):
    """Rank 0's discriminator loss is NaN on NAN_D_STEPS: a constant NaN added, so no gradient changes."""

    def discriminator_step(self, opt, real, labels):
        self.snapshots.append([p.detach().clone() for p in self.discriminator.parameters()])
        return super().discriminator_step(opt, real, labels)

    def _step_player(self, opt, loss, counted):
        if not counted and self.trainer.global_rank == 0 and self.d_steps in NAN_D_STEPS:
            loss = loss + math.nan
        super()._step_player(opt, loss, counted)


def worker(out: Path) -> None:
    torch.manual_seed(0)
    model = RankZeroNaNLoss(MLPGenerator(latent_dim=2, hidden=16, layers=2), MLPDiscriminator(hidden=16, layers=2),
                            noise_seed=1, ema_kimg=None)
    model.snapshots = []
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_gan", max_steps=STEPS, limit_val_batches=0,
                         num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, use_distributed_sampler=False)
    trainer.fit(model, MixtureDataModule(batch_size=16, batches_per_epoch=20, seed=2))
    torch.save({"skipped": model.step_health.skipped, "state": model.state_dict(), "snapshots": model.snapshots,
                "global_step": trainer.global_step}, out / f"rank{trainer.global_rank}.pt")


def test_a_nan_loss_on_one_rank_makes_every_rank_skip(tmp_path):
    run_ranks([__file__, str(tmp_path)], timeout=120)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [r["skipped"] for r in ranks] == [{"g": 0, "d": 2}] * 2
    assert [r["global_step"] for r in ranks] == [STEPS] * 2
    for name, tensor in ranks[0]["state"].items():
        assert torch.equal(tensor, ranks[1]["state"][name]), f"ranks differ in {name}"
    snapshots = ranks[1]["snapshots"]  # rank 1's own loss was finite: it skipped because rank 0's was not
    for step in range(STEPS - 1):
        kept = all(torch.equal(a, b) for a, b in zip(snapshots[step], snapshots[step + 1], strict=True))
        assert kept == (step in NAN_D_STEPS), step


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
