"""Lazy regularization (StyleGAN2, App. B): regularizer steps of their own, Adam's correction, and auto gamma."""

import logging

import pytest
import pytorch_lightning as pl
import torch
from style_toys import NoisyStyleGenerator

from datamodules.mixture_datamodule import MixtureDataModule
from modules.gan import GAN
from modules.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from modules.nets.mlp import MLPDiscriminator, MLPGenerator
from modules.regularizers import auto_r1_gamma
from pipeline.commands.cli import run_cli


def make_gan(generator=None, **kwargs) -> GAN:
    torch.manual_seed(0)
    generator = generator if generator is not None else MLPGenerator(latent_dim=2, hidden=16, layers=2)
    return GAN(generator, MLPDiscriminator(hidden=16, layers=2), **kwargs)


def fit(model: GAN, max_steps: int, callbacks=(), data=None) -> pl.Trainer:
    trainer = pl.Trainer(accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0, max_steps=max_steps,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=list(callbacks))
    trainer.fit(model, data if data is not None else MixtureDataModule(batch_size=16, batches_per_epoch=50))
    return trainer


def test_adam_is_corrected_by_k_over_k_plus_one_for_each_lazily_regularized_player():
    model = make_gan(NoisyStyleGenerator(), lr_g=2e-3, lr_d=4e-4, betas_g=(0.0, 0.99), betas_d=(0.5, 0.999),
                     r1_gamma=10.0, r1_every=16, pl_weight=2.0, pl_every=4)
    opt_g, opt_d = model.configure_optimizers()
    assert opt_d.param_groups[0]["lr"] == pytest.approx(4e-4 * 16 / 17)
    assert opt_d.param_groups[0]["betas"] == pytest.approx((0.5 ** (16 / 17), 0.999 ** (16 / 17)))
    assert opt_g.param_groups[0]["lr"] == pytest.approx(2e-3 * 4 / 5)
    assert opt_g.param_groups[0]["betas"] == pytest.approx((0.0, 0.99 ** (4 / 5)))


@pytest.mark.parametrize("settings", [
    {"r1_gamma": 10.0, "r1_every": 1},  # regularized in every step: nothing to correct
    {"r1_gamma": 0.0, "r1_every": 16},  # lazy interval, but no regularizer
    {"r1_gamma": 10.0, "r1_every": 16, "lazy_adam_correction": False},
])
def test_no_correction_without_lazy_regularization_or_when_turned_off(settings):
    model = make_gan(lr_d=4e-4, betas_d=(0.5, 0.999), **settings)
    _, opt_d = model.configure_optimizers()
    assert opt_d.param_groups[0]["lr"] == 4e-4 and opt_d.param_groups[0]["betas"] == (0.5, 0.999)


def test_rmsprop_gets_the_learning_rate_correction():
    _, opt_d = make_gan(optimizer="rmsprop", lr_d=1e-3, r2_gamma=1.0, r1_every=4).configure_optimizers()
    assert opt_d.param_groups[0]["lr"] == pytest.approx(1e-3 * 4 / 5)


class StepCounter(pl.Callback):
    def __init__(self):
        self.steps = {"g": 0, "d": 0}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.steps["g" if optimizer is trainer.optimizers[0] else "d"] += 1


def test_a_lazy_regularizer_takes_its_own_optimizer_step_every_k_steps():
    counter = StepCounter()
    model = make_gan(NoisyStyleGenerator(), r1_gamma=1.0, r1_every=3, pl_weight=2.0, pl_every=2, n_critic=2)
    trainer = fit(model, max_steps=6, callbacks=[counter])
    # 12 D steps, R1 on D steps 0, 3, 6, 9; 6 G steps, path length on G steps 0, 2, 4
    assert counter.steps == {"d": 12 + 4, "g": 6 + 3}
    assert trainer.global_step == 6  # only G's main steps are counted


def test_a_regularizer_of_every_step_joins_the_main_step():
    counter = StepCounter()
    fit(make_gan(r1_gamma=1.0, r1_every=1), max_steps=4, callbacks=[counter])
    assert counter.steps == {"d": 4, "g": 4}


def test_auto_gamma_is_stylegan2_adas_heuristic():
    assert auto_r1_gamma(256, 256, 64) == pytest.approx(0.0002 * 256**2 / 64)  # 0.2048
    assert auto_r1_gamma(1024, 1024, 32) == pytest.approx(6.5536)
    assert auto_r1_gamma(32, 64, 8) == pytest.approx(0.0002 * 32 * 64 / 8)


class Images(torch.utils.data.IterableDataset):
    def __iter__(self):
        gen = torch.Generator().manual_seed(0)
        while True:
            yield torch.rand(1, 16, 16, generator=gen) * 2 - 1


def test_auto_gamma_is_resolved_from_the_first_real_batch(caplog):
    torch.manual_seed(0)
    model = GAN(DCGANGenerator(latent_dim=8, resolution=16, channels=1, base_width=8),
                DCGANDiscriminator(resolution=16, channels=1, base_width=8, batch_norm=False), r1_gamma="auto",
                ema_kimg=None)
    assert model.r1_gamma is None
    with caplog.at_level(logging.INFO):
        fit(model, max_steps=2, data=torch.utils.data.DataLoader(Images(), batch_size=8))
    assert model.r1_gamma == pytest.approx(0.0002 * 16 * 16 / 8)  # one rank: the global batch is 8
    assert caplog.text.count("model.r1_gamma='auto': 0.0002 * 16*16 / 8 (global batch) = 0.0064") == 1


def test_auto_gamma_refuses_non_image_data():
    with pytest.raises(ValueError, match="needs image batches"):
        fit(make_gan(r1_gamma="auto"), max_steps=1)


@pytest.mark.parametrize(("value", "resolved"), [("auto", None), ("0.5", 0.5)])
def test_r1_gamma_takes_auto_or_a_number_from_the_config(value, resolved):
    cli = run_cli(["--config", "configs/ring8.yaml", "--model.init_args.r1_gamma", value], run=False)
    assert cli.model.hparams.r1_gamma == (value if resolved is None else resolved)
    assert cli.model.r1_gamma == resolved  # "auto": resolved from the first real batch


def test_r1_gamma_is_a_number_or_auto():
    with pytest.raises(ValueError, match="model.r1_gamma must be a number or 'auto', got 'heuristic'"):
        make_gan(r1_gamma="heuristic")
