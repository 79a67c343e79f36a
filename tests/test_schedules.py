"""Hyper-parameter schedules over kimg: their formulas, what the game sets from them, and their config syntax."""

import json
import math

import pytest
import pytorch_lightning as pl
import torch

from datamodules.mixture_datamodule import MixtureDataModule
from modules.gan import GAN
from modules.nets.mlp import MLPDiscriminator, MLPGenerator
from modules.schedules import Constant, CosineRamp, LinearRamp
from pipeline.commands.checkpoint_loading import load_module
from pipeline.commands.cli import run_cli


def test_constant():
    assert Constant(0.3)(0.0) == Constant(0.3)(1e6) == 0.3


def test_linear_ramp_endpoints_and_midpoint():
    ramp = LinearRamp(start=2e-4, end=5e-5, kimg=100, start_kimg=20)
    assert ramp(0) == ramp(20) == 2e-4  # start until start_kimg
    assert ramp(70) == pytest.approx((2e-4 + 5e-5) / 2)
    assert ramp(45) == pytest.approx(2e-4 + (5e-5 - 2e-4) * 0.25)
    assert ramp(120) == ramp(1e6) == pytest.approx(5e-5)  # end from start_kimg + kimg on


def test_cosine_ramp_is_flat_at_both_ends():
    ramp = CosineRamp(start=0.9, end=0.99, kimg=10)
    assert ramp(0) == 0.9 and ramp(10) == pytest.approx(0.99) and ramp(50) == pytest.approx(0.99)
    assert ramp(5) == pytest.approx((0.9 + 0.99) / 2)
    assert ramp(2.5) == pytest.approx(0.9 + 0.09 * (1 - math.cos(math.pi / 4)) / 2)
    assert ramp(0.1) - ramp(0) < LinearRamp(0.9, 0.99, kimg=10)(0.1) - 0.9  # slower than linear at the start


def test_a_ramp_needs_a_positive_length():
    with pytest.raises(ValueError, match="kimg .* must be > 0"):
        LinearRamp(1.0, 0.0, kimg=0)


def make_gan(schedules, **kwargs) -> GAN:
    torch.manual_seed(0)
    return GAN(MLPGenerator(latent_dim=2, hidden=16, layers=2), MLPDiscriminator(hidden=16, layers=2),
               schedules=schedules, **kwargs)


def test_the_game_sets_each_scheduled_value_from_the_images_seen():
    schedules = {"lr_d": LinearRamp(1e-3, 0.0, kimg=1.0), "lr_g": Constant(3e-4),
                 "beta2_d": LinearRamp(0.9, 0.99, kimg=1.0), "r1_gamma": LinearRamp(1.0, 0.0, kimg=1.0),
                 "r2_gamma": Constant(0.5), "ema_kimg": LinearRamp(0.0, 1.0, kimg=1.0)}
    model = make_gan(schedules, r1_gamma=1.0, r1_every=4, betas_d=(0.5, 0.999))
    trainer = pl.Trainer(accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0, max_steps=10,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, MixtureDataModule(batch_size=64, batches_per_epoch=100))
    # the last step was set from images_seen before it: 9 * 64 = 576 images, kimg 0.576
    t, c = 0.576, 4 / 5  # D is regularized every 4 steps: lr * c, beta2 ** c
    opt_g, opt_d = trainer.optimizers
    assert opt_d.param_groups[0]["lr"] == pytest.approx(1e-3 * (1 - t) * c)
    assert opt_d.param_groups[0]["betas"] == pytest.approx((0.5**c, (0.9 + 0.09 * t) ** c))
    assert opt_g.param_groups[0]["lr"] == pytest.approx(3e-4)  # G is not lazily regularized
    assert model.r1_gamma == pytest.approx(1 - t) and model.r2_gamma == 0.5 and model.ema_kimg == pytest.approx(t)


@pytest.mark.parametrize(("schedules", "settings", "message"), [
    ({"lr_gen": Constant(1.0)}, {}, "unknown key.*lr_gen.*valid keys: lr_g, lr_d, beta2_g"),
    ({"lr_g": Constant(1.0)}, {"lr_schedule": "linear"}, "both set the learning rates"),
    ({"beta2_d": Constant(0.9)}, {"optimizer": "rmsprop"}, "need model.optimizer=adam"),
    ({"ema_kimg": Constant(1.0)}, {"ema_kimg": None}, "needs an EMA generator"),
    ({"augment_p": Constant(0.2)}, {}, "needs an augmentation with a probability p"),
    ({"r1_gamma": Constant(0.2)}, {"r1_gamma": "auto"}, "keep one"),
])
def test_schedules_that_cannot_apply_are_refused_in_one_line(schedules, settings, message):
    with pytest.raises(ValueError, match=message) as error:
        make_gan(schedules, **settings)
    assert "\n" not in str(error.value)


class WithProbability(torch.nn.Module):
    """An augmentation slot holding its probability p as a buffer (as ADA's pipeline does); identity here."""

    def __init__(self):
        super().__init__()
        self.register_buffer("p", torch.tensor(0.0))

    def forward(self, x, generator=None):
        return x


def test_augment_p_sets_the_augmentations_probability_in_place():
    model = make_gan({"augment_p": LinearRamp(0.0, 0.8, kimg=2.0)}, augment=WithProbability())
    model.images_seen = 500
    assert model.apply_schedules() == {"schedule/augment_p": pytest.approx(0.2)}
    assert model.augment.p.item() == pytest.approx(0.2) and "augment.p" in model.state_dict()


SCHEDULES = {"lr_d": {"class_path": "modules.schedules.CosineRamp",
                      "init_args": {"start": 1e-3, "end": 1e-4, "kimg": 50}},
             "r2_gamma": {"class_path": "modules.schedules.Constant", "init_args": {"value": 0.5}}}


def test_schedules_are_config_keys_with_class_paths():
    cli = run_cli(["--config", "configs/ring8.yaml", "--model.init_args.lr_schedule", "constant",
                   "--model.init_args.schedules", json.dumps(SCHEDULES)], run=False)
    schedules = cli.model.schedules
    assert isinstance(schedules["lr_d"], CosineRamp) and isinstance(schedules["r2_gamma"], Constant)
    assert (schedules["lr_d"].start, schedules["lr_d"].end, schedules["lr_d"].kimg) == (1e-3, 1e-4, 50)


def test_a_checkpoint_rebuilds_its_schedules(tmp_path):
    run_cli(["fit", "--config", "configs/ring8.yaml", "--model.init_args.lr_schedule", "constant",
             "--model.init_args.schedules", json.dumps(SCHEDULES), "--trainer.max_steps", "3",
             "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
             "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
             "--data.init_args.batch_size", "32"])
    model = load_module(str(next(tmp_path.rglob("last.ckpt"))))
    assert isinstance(model.schedules["lr_d"], CosineRamp) and model.schedules["r2_gamma"].value == 0.5
