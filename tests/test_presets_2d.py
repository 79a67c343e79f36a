"""The variant presets on the 2-D mixtures: each parses to its variant, trains, and training finds the modes."""

import json

import pytest
import torch

from modules.gan import GAN
from modules.losses import HingeLoss, NonSaturatingLoss, WassersteinLoss
from pipeline.callbacks.mode_coverage import ModeCoverageCallback
from pipeline.commands.cli import run_cli
from pipeline.metrics.mode_coverage import mode_coverage

QUIET = ["--trainer.logger", "false", "--trainer.log_every_n_steps", "1", "--trainer.enable_checkpointing", "false",
         "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--trainer.callbacks", json.dumps([{"class_path": "pipeline.callbacks.mode_coverage.ModeCoverageCallback",
                                             "init_args": {"every_n_steps": 0, "plot": False}}])]

# preset -> (loss, n_critic, weight clip, gradient-penalty weight, spectral norm, optimizer)
VARIANTS = {
    "gan": (NonSaturatingLoss, 1, None, 0.0, False, "adam"),
    "wgan": (WassersteinLoss, 5, 0.01, 0.0, False, "rmsprop"),
    "wgan_gp": (WassersteinLoss, 5, None, 10.0, False, "adam"),
    "sngan_hinge": (HingeLoss, 1, None, 0.0, True, "adam"),
    "ring8": (NonSaturatingLoss, 1, None, 0.0, False, "adam"),
    "deligan": (NonSaturatingLoss, 1, None, 0.0, False, "adam"),
}
MIXTURE = {"deligan": ("grid25", 25)}  # the others default to ring8


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("preset", sorted(VARIANTS))
def test_preset_builds_its_variant(preset, tmp_path):
    cli = run_cli(["--config", f"configs/{preset}.yaml", "--trainer.default_root_dir", str(tmp_path), *QUIET],
                  run=False)
    loss, n_critic, clip, gp, spectral_norm, optimizer = VARIANTS[preset]
    model, hp = cli.model, cli.model.hparams
    assert isinstance(model, GAN) and type(model.loss) is loss
    assert (hp.n_critic, hp.weight_clip, hp.gp_weight, hp.spectral_norm, hp.optimizer) == (
        n_critic, clip, gp, spectral_norm, optimizer)
    name, modes = MIXTURE.get(preset, ("ring8", 8))
    assert cli.datamodule.hparams.name == name and cli.datamodule.dist.means.shape == (modes, 2)
    assert 0 < cli.trainer.max_steps <= 5000


@pytest.mark.parametrize("mixture", ["ring8", "grid25"])
@pytest.mark.parametrize("preset", ["gan", "wgan", "wgan_gp", "sngan_hinge", "deligan"])
def test_preset_trains_on_both_mixtures(preset, mixture, tmp_path):
    cli = run_cli(["fit", "--config", f"configs/{preset}.yaml", "--data.init_args.name", mixture,
                   "--trainer.max_steps", "24", "--trainer.default_root_dir", str(tmp_path), *QUIET])
    assert cli.trainer.global_step == 24
    assert cli.model.d_steps == 24 * VARIANTS[preset][1]
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["loss/d"]) and torch.isfinite(metrics["loss/g"])
    samples = cli.model.sample(500)
    assert samples.shape == (500, 2) and torch.isfinite(samples).all()


def test_a_short_fit_on_ring8_finds_the_modes(tmp_path):
    args = ["--config", "configs/ring8.yaml", "--trainer.max_steps", "600",
            "--trainer.default_root_dir", str(tmp_path), *QUIET]
    untrained = run_cli(args, run=False)
    dist = untrained.datamodule.dist
    before = mode_coverage(untrained.model.sample(2500, seed=1234), dist.means, dist.std)
    trained = run_cli(["fit", *args])
    after = next(c for c in trained.trainer.callbacks if isinstance(c, ModeCoverageCallback)).history[-1][1]
    assert before.modes <= 2 and before.high_quality < 0.05
    assert after.modes >= 7 and after.high_quality > 0.3
