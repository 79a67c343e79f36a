"""A run stopped at step k and resumed ends bit-identical to a run never stopped (CPU, fixed seed)."""


import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from style_toys import NoisyStyleGenerator

from datamodules.mixture_datamodule import MixtureDataModule
from modules.gan import GAN
from modules.losses import RelativisticPairingLoss, WassersteinLoss
from modules.nets.mlp import MLPDiscriminator, MLPGenerator
from modules.schedules import CosineRamp, LinearRamp


def make_gan() -> GAN:
    torch.manual_seed(0)
    return GAN(MLPGenerator(latent_dim=2, hidden=32, layers=2, batch_norm=True),
               MLPDiscriminator(hidden=32, layers=2), loss=WassersteinLoss(), n_critic=2, gp_weight=10.0,
               lr_schedule="linear", betas_g=(0.0, 0.9), betas_d=(0.0, 0.9), ema_kimg=0.5, noise_seed=3)


def make_style_gan() -> GAN:
    """Every training-time addition at once: a generator drawing noise and mixing draws inside forward, the
    relativistic loss, lazy R1 + R2 in their own D steps, lazy path length in its own G steps, schedules."""
    torch.manual_seed(0)
    schedules = {"lr_g": LinearRamp(1e-3, 1e-4, kimg=1.0), "beta2_d": CosineRamp(0.9, 0.99, kimg=1.0),
                 "r2_gamma": CosineRamp(1.0, 0.1, kimg=1.5), "ema_kimg": LinearRamp(0.1, 0.5, kimg=1.0)}
    return GAN(NoisyStyleGenerator(), MLPDiscriminator(hidden=32, layers=2), loss=RelativisticPairingLoss(),
               n_critic=2, r1_gamma=0.5, r2_gamma=1.0, r1_every=3, pl_weight=2.0, pl_every=2,
               betas_g=(0.0, 0.99), betas_d=(0.0, 0.99), ema_kimg=0.5, schedules=schedules, noise_seed=3)


def run(tmp_path, max_steps: int, ckpt_path=None, every: int = 0, make=make_gan):
    callbacks = [ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=every, save_top_k=-1)] if every else []
    model = make()
    trainer = pl.Trainer(accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0,
                         max_steps=max_steps, logger=False, callbacks=callbacks,
                         enable_checkpointing=bool(every), enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, MixtureDataModule(batch_size=32, batches_per_epoch=20, seed=5), ckpt_path=ckpt_path)
    return model, trainer


@pytest.mark.parametrize(("stop_at", "make"), [
    (13, make_gan),  # mid-epoch (batch 26 of 20-batch epochs)
    (20, make_gan),  # on an epoch boundary
    (13, make_style_gan),  # randomness inside G's forward, lazy regularizer steps, path-length mean, schedules
])
def test_resumed_run_is_bit_identical(tmp_path, stop_at, make):
    full, full_trainer = run(tmp_path / "full", max_steps=30, every=stop_at, make=make)
    ckpt = next((tmp_path / "full").glob(f"*step={stop_at}.ckpt"))
    resumed, resumed_trainer = run(tmp_path / "resumed", max_steps=30, ckpt_path=str(ckpt), make=make)

    assert resumed_trainer.global_step == full_trainer.global_step == 30
    assert (resumed.d_steps, resumed.images_seen) == (full.d_steps, full.images_seen) == (60, 60 * 32)
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name  # G, D, EMA copy and BatchNorm statistics
    for opt_a, opt_b in zip(full_trainer.optimizers, resumed_trainer.optimizers, strict=True):
        for state_a, state_b in zip(opt_a.state.values(), opt_b.state.values(), strict=True):
            assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
        assert opt_a.param_groups[0]["lr"] == opt_b.param_groups[0]["lr"]
        assert opt_a.param_groups[0].get("betas") == opt_b.param_groups[0].get("betas")
    if make is make_style_gan:  # the path-length running mean moved and is part of what resumed identically
        assert "path_length.pl_mean" in resumed.state_dict() and full.path_length.pl_mean.item() > 0


def test_checkpoint_of_another_variant_is_refused(tmp_path):
    run(tmp_path, max_steps=2, every=2)
    ckpt = next(tmp_path.glob("*.ckpt"))
    other = GAN(MLPGenerator(), MLPDiscriminator(), loss=WassersteinLoss())
    other.generator = torch.nn.Sequential()  # a different network class: a different variant
    with pytest.raises(ValueError, match="checkpoint is for variant"):
        other.on_load_checkpoint(torch.load(ckpt, weights_only=False))
