"""A StyleGAN2 run stopped at step k and resumed ends bit-identical to one never stopped: the noise inputs and
style-mixing draws inside G, lazy R1 and path length, the path-length mean and w_avg all resume exactly."""

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from datamodules.mixture_datamodule import MixtureDataModule
from modules.gan import GAN
from modules.nets.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

SIDE = 16
NET = {"resolution": SIDE, "channels": 1, "channel_base": 128, "channel_max": 8}


class BlobImages(MixtureDataModule):
    """The resumable ring8 stream, each point drawn as a Gaussian blob at its place in a 16x16 image."""

    def on_before_batch_transfer(self, batch, dataloader_idx):
        points = super().on_before_batch_transfer(batch, dataloader_idx)
        grid = torch.linspace(-2.5, 2.5, SIDE)
        dy = (grid[None, :, None] - points[:, 1, None, None]) ** 2
        dx = (grid[None, None, :] - points[:, 0, None, None]) ** 2
        return (2 * torch.exp(-(dx + dy) / 0.5) - 1)[:, None]


def make_stylegan2() -> GAN:
    torch.manual_seed(0)
    generator = StyleGAN2Generator(latent_dim=8, w_dim=8, mapping_layers=2, mixing_prob=0.9, **NET)
    discriminator = StyleGAN2Discriminator(mbstd_group_size=4, **NET)
    return GAN(generator, discriminator, r1_gamma="auto", r1_every=4, pl_weight=2.0, pl_every=2, lr_g=0.0025,
               lr_d=0.0025, betas_g=(0.0, 0.99), betas_d=(0.0, 0.99), ema_kimg=0.1, noise_seed=3)


def run(root, max_steps: int, ckpt_path=None, every: int = 0):
    callbacks = [ModelCheckpoint(dirpath=root, every_n_train_steps=every, save_top_k=-1)] if every else []
    model = make_stylegan2()
    trainer = pl.Trainer(accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0, max_steps=max_steps,
                         logger=False, callbacks=callbacks, enable_checkpointing=bool(every),
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, BlobImages(batch_size=8, batches_per_epoch=5, seed=5), ckpt_path=ckpt_path)
    return model, trainer


def test_stylegan2_resumes_bit_identically(tmp_path):
    torch.set_num_threads(1)
    full, full_trainer = run(tmp_path / "full", max_steps=10, every=7)
    ckpt = next((tmp_path / "full").glob("*step=7.ckpt"))
    resumed, resumed_trainer = run(tmp_path / "resumed", max_steps=10, ckpt_path=str(ckpt))
    assert resumed_trainer.global_step == full_trainer.global_step == 10
    state, resumed_state = full.state_dict(), resumed.state_dict()
    assert state.keys() == resumed_state.keys()
    for name, tensor in state.items():
        assert torch.equal(tensor, resumed_state[name]), name
    for opt_a, opt_b in zip(full_trainer.optimizers, resumed_trainer.optimizers, strict=True):
        for state_a, state_b in zip(opt_a.state.values(), opt_b.state.values(), strict=True):
            assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert float(full.path_length.pl_mean) > 0 and float(full.generator.mapping.w_avg.abs().sum()) > 0
    noise = [m.noise_strength for m in full.generator.modules() if hasattr(m, "noise_strength")]
    assert all(float(s.detach().abs()) > 0 for s in noise)  # the noise inputs were in play
