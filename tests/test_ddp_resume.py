"""A 2-rank ddp_gan run stopped at step k and resumed ends bit-identical to a 2-rank run never stopped.

The variant has everything that carries state across a resume: BatchNorm in G, WGAN-GP with its per-rank
random interpolation, n_critic=2, a linear LR schedule, EMA, and a rank-seeded data stream stopped mid-epoch.
BatchNorm running statistics stay per rank (ddp_gan's documented choice) and checkpoints hold rank 0's, so
rank 1's statistics are the one thing a resume does not restore; every weight and optimizer state is.

Run as a script, this file is the 2-rank worker: python tests/test_ddp_resume.py OUT MAX_STEPS EVERY [CKPT]
"""

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from ddp_launch import run_ranks
from pytorch_lightning.callbacks import ModelCheckpoint

import pipeline.strategies  # noqa: F401  registers ddp_gan
from datamodules.mixture_datamodule import MixtureDataModule
from modules.gan import GAN
from modules.losses import WassersteinLoss
from modules.nets.mlp import MLPDiscriminator, MLPGenerator

MAX_STEPS, STOP_AT = 20, 7  # batch 14 of 10-batch epochs: mid-epoch


def worker(out: Path, max_steps: int, every: int, ckpt: str | None) -> None:
    torch.manual_seed(0)
    model = GAN(MLPGenerator(latent_dim=2, hidden=32, layers=2, batch_norm=True),
                MLPDiscriminator(hidden=32, layers=2), loss=WassersteinLoss(), n_critic=2, gp_weight=10.0,
                lr_schedule="linear", betas_g=(0.0, 0.9), betas_d=(0.0, 0.9), ema_kimg=0.5, noise_seed=3)
    callbacks = [ModelCheckpoint(dirpath=out / "ckpt", every_n_train_steps=every, save_top_k=-1)] if every else []
    trainer = pl.Trainer(accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0,
                         devices=2, strategy="ddp_gan", max_steps=max_steps, logger=False,
                         callbacks=callbacks, enable_checkpointing=bool(every), enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, MixtureDataModule(batch_size=32, batches_per_epoch=10, seed=5), ckpt_path=ckpt)
    torch.save({"state": model.state_dict(), "optimizers": [o.state_dict() for o in trainer.optimizers],
                "counters": (trainer.global_step, model.d_steps, model.images_seen)},
               out / f"rank{trainer.global_rank}.pt")


def test_resumed_two_rank_run_is_bit_identical(tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    full.mkdir()
    resumed.mkdir()
    run_ranks([__file__, str(full), str(MAX_STEPS), str(STOP_AT)])
    ckpt = next((full / "ckpt").glob(f"*step={STOP_AT}.ckpt"))
    run_ranks([__file__, str(resumed), str(MAX_STEPS), "0", str(ckpt)])

    for rank in (0, 1):
        a, b = torch.load(full / f"rank{rank}.pt"), torch.load(resumed / f"rank{rank}.pt")
        assert a["counters"] == b["counters"] == (MAX_STEPS, 2 * MAX_STEPS, 2 * MAX_STEPS * 32 * 2)
        for name, tensor in a["state"].items():
            if rank == 0 or not name.endswith(("running_mean", "running_var")):
                assert torch.equal(tensor, b["state"][name]), f"rank {rank}: {name}"
        for opt_a, opt_b in zip(a["optimizers"], b["optimizers"], strict=True):
            for state_a, state_b in zip(opt_a["state"].values(), opt_b["state"].values(), strict=True):
                assert all(torch.equal(state_a[k], state_b[k]) for k in state_a), f"rank {rank} optimizer"
    rank0, rank1 = torch.load(full / "rank0.pt")["state"], torch.load(full / "rank1.pt")["state"]
    assert torch.equal(rank0["generator.net.0.weight"], rank1["generator.net.0.weight"])
    assert not torch.equal(rank0["generator.net.1.running_mean"], rank1["generator.net.1.running_mean"])


if __name__ == "__main__":
    out, max_steps, every, *ckpt = sys.argv[1:]
    worker(Path(out), int(max_steps), int(every), ckpt[0] if ckpt else None)
