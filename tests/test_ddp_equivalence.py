"""ddp_gan is data parallelism, nothing else: 2 ranks x batch B end where 1 process x batch 2B ends.

Both runs see the same real samples and the same noise (the noise of the global batch is drawn from a
rank-free stream and sliced per rank), without BatchNorm (per-rank statistics are not a global batch's).
Clipping and R1 are on, so the test also pins that gradients are averaged before they are clipped. Each
optimizer step must all-reduce exactly its own player's gradients, once.

The StyleGAN2 case has its batch-coupled parts off: the minibatch-stddev layer (its groups are within a rank's
batch) and the path-length penalty (its running mean is a rank's own); style mixing is off and the noise inputs
fixed, since those draws are per rank. w_avg is tracked per rank from the rank's batch (NVlabs' DDP skips it in
its consistency check too): the ranks' average equals the single process's, as its update is linear.

Run as a script, this file is the 2-rank worker: python tests/test_ddp_equivalence.py OUT_DIR CASE
"""

import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from ddp_launch import run_ranks
from torch.utils.data import DataLoader

import pipeline.strategies  # noqa: F401  registers ddp_gan
from datamodules.mixtures import ring8
from modules.gan import GAN
from modules.nets.mlp import MLPDiscriminator, MLPGenerator
from modules.nets.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

PER_RANK_BATCH, RANKS, STEPS, N_CRITIC = 32, 2, 10, 2
TOLERANCE = 1e-5


class SharedNoiseGAN(GAN):
    """z for the global batch comes from a stream seeded by (D step, purpose) only; a rank keeps its rows."""

    def sample_z(self, n, tag):
        world, rank = self.trainer.world_size, self.trainer.global_rank
        gen = torch.Generator().manual_seed(self.d_steps * 2 + (tag == "z_g"))
        z = torch.randn(n * world, self.generator.latent_dim, generator=gen)
        return z[rank * n:(rank + 1) * n]


class GlobalBatches(pl.LightningDataModule):
    """Global batch k is rows k*G..(k+1)*G of one fixed sample; rank r of W takes its r-th 1/W of it.
    With ``images``, each point is drawn as a Gaussian blob at its place in a 16x16 image."""

    def __init__(self, global_batch: int, batches: int, images: bool = False):
        super().__init__()
        self.global_batch = global_batch
        self.points = ring8().sample(global_batch * batches, torch.Generator().manual_seed(7))[0]
        if images:
            grid = torch.linspace(-2.5, 2.5, SIDE)
            dy = (grid[None, :, None] - self.points[:, 1, None, None]) ** 2
            dx = (grid[None, None, :] - self.points[:, 0, None, None]) ** 2
            self.points = (2 * torch.exp(-(dx + dy) / 0.5) - 1)[:, None]

    def train_dataloader(self):
        world, rank = self.trainer.world_size, self.trainer.global_rank
        per_rank = self.global_batch // world
        batches = self.points.view(-1, self.global_batch, *self.points.shape[1:])
        return DataLoader(list(batches[:, rank * per_rank:(rank + 1) * per_rank]), batch_size=None)


class FixedNoiseStyleGAN2(StyleGAN2Generator):
    """StyleGAN2's G with its fixed noise inputs (the random ones are drawn per rank)."""

    def forward(self, z, labels=None, truncation_psi=1.0, truncation_cutoff=None, noise_mode="const"):
        return super().forward(z, labels, truncation_psi, truncation_cutoff, noise_mode)


SIDE = 16
STYLEGAN2 = {"resolution": SIDE, "channels": 1, "channel_base": 128, "channel_max": 8}


def players(case: str):
    if case == "stylegan2":
        return (FixedNoiseStyleGAN2(latent_dim=8, w_dim=8, mapping_layers=2, mixing_prob=0.0, **STYLEGAN2),
                StyleGAN2Discriminator(mbstd_group_size=0, **STYLEGAN2))
    return MLPGenerator(latent_dim=2, hidden=32, layers=2), MLPDiscriminator(hidden=32, layers=2)


def fit(devices: int, case: str = "mlp"):
    torch.manual_seed(0)
    model = SharedNoiseGAN(*players(case), n_critic=N_CRITIC, r1_gamma=1.0, grad_clip_g=0.05, grad_clip_d=0.05,
                           lr_schedule="linear", ema_kimg=0.5, noise_seed=3)
    trainer = pl.Trainer(accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0,
                         devices=devices, strategy="ddp_gan" if devices > 1 else "auto",
                         max_steps=STEPS, use_distributed_sampler=False, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, GlobalBatches(PER_RANK_BATCH * RANKS, STEPS * N_CRITIC, images=case == "stylegan2"))
    return model, trainer


def worker(out: Path, case: str) -> None:
    reduced: list[int] = []
    all_reduce = torch.distributed.all_reduce

    def recording_all_reduce(tensor, *args, **kwargs):
        if tensor.is_floating_point():  # stop decisions and step-health flags are integer tensors
            reduced.append(tensor.numel())
        return all_reduce(tensor, *args, **kwargs)

    torch.distributed.all_reduce = recording_all_reduce
    model, trainer = fit(RANKS, case)
    torch.distributed.all_reduce = all_reduce
    trainer.strategy.barrier()
    rank_sum = trainer.strategy.reduce(torch.tensor(float(trainer.global_rank)), reduce_op="sum").item()
    torch.save({"state": model.state_dict(), "optimizers": [o.state_dict() for o in trainer.optimizers],
                "reduced": reduced, "world_size": trainer.world_size, "global_step": trainer.global_step,
                "rank_sum": rank_sum, "sampler": trainer.strategy.distributed_sampler_kwargs},
               out / f"rank{trainer.global_rank}.pt")


def optimizer_tensors(state_dicts):
    return [t for sd in state_dicts for s in sd["state"].values() for t in s.values() if torch.is_tensor(t)]


@pytest.mark.parametrize("case", ["mlp", "stylegan2"])
def test_two_ranks_match_one_process_with_twice_the_batch(tmp_path, case):
    run_ranks([__file__, str(tmp_path), case])
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(RANKS)]
    single, single_trainer = fit(1, case)
    per_rank = [name for name in ranks[0]["state"] if name.endswith("w_avg")]  # StyleGAN2's, tracked per rank
    for name in per_rank:
        average = (ranks[0]["state"].pop(name) + ranks[1]["state"].pop(name)) / 2
        torch.testing.assert_close(average, single.state_dict()[name], rtol=0, atol=TOLERANCE)
    assert len(per_rank) == (2 if case == "stylegan2" else 0)  # G's and its EMA copy's

    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["rank_sum"] for r in ranks] == [1.0, 1.0]  # the strategy's reduce still spans both ranks
    assert [r["sampler"] for r in ranks] == [{"num_replicas": 2, "rank": 0}, {"num_replicas": 2, "rank": 1}]
    assert [r["global_step"] for r in ranks] + [single_trainer.global_step] == [STEPS] * 3
    for name, tensor in ranks[0]["state"].items():
        assert torch.equal(tensor, ranks[1]["state"][name]), f"ranks differ in {name}"
    diffs = {name: (tensor - single.state_dict()[name]).abs().max().item() for name, tensor in ranks[0]["state"].items()
             if tensor.is_floating_point()}
    print(f"max |2 ranks x B - 1 x 2B| over weights: {max(diffs.values()):.3g}")
    assert max(diffs.values()) < TOLERANCE, diffs
    optimizer_diff = max((a - b).abs().max().item() for a, b in zip(
        optimizer_tensors(ranks[0]["optimizers"]),
        optimizer_tensors([o.state_dict() for o in single_trainer.optimizers]), strict=True))
    assert optimizer_diff < TOLERANCE

    d_params = sum(p.numel() for p in single.discriminator.parameters())
    g_params = sum(p.numel() for p in single.generator.parameters())
    assert ranks[0]["reduced"] == ([d_params] * N_CRITIC + [g_params]) * STEPS  # one all-reduce per step


if __name__ == "__main__":
    worker(Path(sys.argv[1]), sys.argv[2])
