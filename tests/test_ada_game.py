"""ADA inside the game: D's real scores drive p, R1 is taken through the augmentation, p resumes exactly."""

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from modules.augment import AdaptiveAugment
from modules.gan import GAN
from modules.nets.dcgan import DCGANDiscriminator, DCGANGenerator

BATCH = 8


def make_gan(**augment) -> GAN:
    torch.manual_seed(0)
    settings = dict(preset="bgc", p=0.5, ada_kimg=0.1, interval=2) | augment
    return GAN(DCGANGenerator(latent_dim=8, resolution=16, channels=1, base_width=8),
               DCGANDiscriminator(resolution=16, channels=1, base_width=8), r1_gamma=1.0, noise_seed=3,
               ema_kimg=None, augment=AdaptiveAugment(**settings))


def digits_like() -> torch.utils.data.TensorDataset:
    """3 batches of smooth blobs in [-1, 1] (no shuffling: a resumed epoch sees the same batches)."""
    gen = torch.Generator().manual_seed(0)
    coarse = torch.rand(3 * BATCH, 1, 4, 4, generator=gen)
    return torch.utils.data.TensorDataset(torch.nn.functional.interpolate(coarse, size=16, mode="bilinear") * 2 - 1)


def fit(model: GAN, steps: int, root, every: int = 0, ckpt_path=None) -> tuple[GAN, pl.Trainer]:
    callbacks = [ModelCheckpoint(dirpath=root, every_n_train_steps=every, save_top_k=-1)] if every else []
    trainer = pl.Trainer(accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0, max_steps=steps,
                         logger=False, callbacks=callbacks, enable_checkpointing=bool(every),
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                         default_root_dir=root)
    trainer.fit(model, torch.utils.data.DataLoader(digits_like(), batch_size=BATCH), ckpt_path=ckpt_path)
    return model, trainer


def test_p_moves_by_whole_steps_and_is_logged_with_r1_through_the_augmentation(tmp_path):
    model, trainer = fit(make_gan(), steps=6, root=tmp_path)  # 6 D steps: 3 updates of the controller
    step = BATCH * 2 / (0.1 * 1000)
    moves = (model.augment.p - 0.5) / step
    assert abs(moves - round(moves)) < 1e-4 and round(abs(moves)) in (1, 3)  # three +-1 moves
    metrics = trainer.callback_metrics
    assert float(metrics["augment/p"]) == pytest.approx(model.augment.p)
    assert -1 <= float(metrics["augment/rt"]) <= 1 and float(metrics["augment/rate_geometric"]) > 0
    assert torch.isfinite(metrics["reg/r1"]) and float(metrics["reg/r1"]) > 0


def test_fixed_p_stays_and_an_identity_augment_trains_like_none(tmp_path):
    fixed, _ = fit(make_gan(adaptive=False, p=0.3), steps=4, root=tmp_path / "fixed")
    assert fixed.augment.p == pytest.approx(0.3)
    idle, _ = fit(make_gan(adaptive=False, p=0.0), steps=3, root=tmp_path / "idle")
    plain = make_gan()
    plain.augment = None
    fit(plain, steps=3, root=tmp_path / "plain")
    for name, value in plain.discriminator.state_dict().items():
        assert torch.equal(value, idle.discriminator.state_dict()[name]), name  # p = 0: D saw the exact images


def test_resumed_run_continues_with_the_same_p(tmp_path):
    full, full_trainer = fit(make_gan(), steps=6, root=tmp_path / "full", every=3)
    ckpt = next((tmp_path / "full").glob("*step=3.ckpt"))  # D step 3: one step into an interval
    saved = torch.load(ckpt, weights_only=False)["state_dict"]
    assert float(saved["augment.controller.running"][3]) == 1.0 and float(saved["augment.controller.p"]) != 0.5
    resumed, resumed_trainer = fit(make_gan(), steps=6, root=tmp_path / "resumed", ckpt_path=str(ckpt))
    assert resumed_trainer.global_step == full_trainer.global_step == 6
    assert full.augment.p != 0.5
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name  # G, D and the controller's p, r_t and running sums
