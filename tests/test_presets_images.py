"""Every image preset trains from the bundled digit shards; every 64-256 px template builds its networks."""

from pathlib import Path

import pytest
import torch

from modules.gan import GAN
from pipeline.commands.cli import run_cli
from pipeline.commands.shards import main as write_shards

PRESETS = ["dcgan", "dcgan_ada", "dcgan_cond", "wgan_gp_resnet", "sngan_hinge_resnet", "sngan_projection", "bigan",
           "stylegan2", "stylegan2_fmnist"]
# No output tanh (NVlabs' StyleGAN2; R3GAN's G ends in a linear layer): samples may leave [-1, 1].
LINEAR_OUTPUT = ["stylegan2", "stylegan2_fmnist", "r3gan", "r3gan_fmnist"]
TEMPLATES = sorted(p.stem for p in Path("configs/templates").glob("*.yaml"))


@pytest.fixture(scope="module")
def digits_index(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("digits32")
    write_shards(["--source", "sklearn-digits", "--resolution", "32", "--out", str(out)])
    return str(out / "shards.json")


def quick(config: str, index: str, root: Path, *extra: str) -> list[str]:
    return ["--config", config, "--data.init_args.index", index, "--data.init_args.num_workers", "0",
            "--data.init_args.batch_size", "16", "--trainer.default_root_dir", str(root),
            "--trainer.logger", "false", "--trainer.callbacks", "[]", "--trainer.enable_checkpointing", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.log_every_n_steps", "1", "--trainer.accelerator", "cpu", *extra]


def flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()


@pytest.mark.parametrize("preset", PRESETS + ["r3gan", "r3gan_fmnist"])
def test_preset_trains_on_the_bundled_shards(preset, digits_index, tmp_path):
    cli = run_cli(quick(f"configs/{preset}.yaml", digits_index, tmp_path, "--trainer.max_steps", "2"), run=False)
    model = cli.model
    g_player = [model.generator] + ([model.encoder] if hasattr(model, "encoder") else [])
    before = [flat(m) for m in (*g_player, model.discriminator)]
    cli.trainer.fit(model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 2 and model.d_steps == 2 * model.hparams.n_critic
    after = [flat(m) for m in (*g_player, model.discriminator)]
    assert all(not torch.equal(b, a) for b, a in zip(before, after, strict=True)), "a player did not move"
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["loss/d"]) and torch.isfinite(metrics["loss/g"])
    k = model.num_classes
    labels = torch.arange(4) % k if k else None
    samples = model.sample(4, labels)
    assert samples.shape == (4, 1, 32, 32) and torch.isfinite(samples).all()
    assert preset in LINEAR_OUTPUT or samples.abs().max() <= 1
    assert (k == 10) == (preset in ("dcgan_cond", "sngan_projection"))


def test_icgan_preset_fits_encoders_to_a_frozen_conditional_generator(digits_index, tmp_path):
    cond = run_cli(quick("configs/dcgan_cond.yaml", digits_index, tmp_path / "cond", "--trainer.max_steps", "1"),
                   run=False)
    cond.trainer.fit(cond.model, datamodule=cond.datamodule)
    ckpt = tmp_path / "cond.ckpt"
    cond.trainer.save_checkpoint(ckpt)
    cli = run_cli(quick("configs/icgan.yaml", digits_index, tmp_path / "icgan", "--trainer.max_steps", "3",
                        "--model.init_args.generator_checkpoint", str(ckpt)), run=False)
    model = cli.model
    torch.testing.assert_close(flat(model.generator), flat(cond.model.generator_ema))
    before = flat(model.encoder_z), flat(model.encoder_y)
    cli.trainer.fit(model, datamodule=cli.datamodule)
    assert not torch.equal(before[0], flat(model.encoder_z)) and not torch.equal(before[1], flat(model.encoder_y))
    torch.testing.assert_close(flat(model.generator), flat(cond.model.generator_ema))  # G stays frozen
    x = torch.zeros(2, 1, 32, 32)
    assert model.edit(x, torch.tensor([3, 7])).shape == (2, 1, 32, 32)


@pytest.mark.parametrize("template", TEMPLATES)
def test_template_builds_its_networks(template, digits_index, tmp_path):
    cli = run_cli(quick(f"configs/templates/{template}.yaml", digits_index, tmp_path,
                        "--trainer.devices", "1", "--trainer.strategy", "auto", "--trainer.precision", "32-true"),
                  run=False)
    model, data = cli.model, cli.datamodule
    assert isinstance(model, GAN)
    resolution = int(template.rsplit("_", 1)[1])
    assert data.hparams.resolution == resolution and data.hparams.channels == 3
    k = model.num_classes
    device = "meta" if resolution >= 512 else "cpu"  # 1024 px: shapes without the minute of CPU compute
    model.to(device)
    with torch.no_grad():
        model.eval()
        labels = torch.tensor([0, 1], device=device) if k else None
        images = model.generator(torch.randn(2, model.generator.latent_dim, device=device), labels)
        assert images.shape == (2, 3, resolution, resolution)
        if hasattr(model, "encoder"):
            assert model.discriminator(images, model.encoder(images)).shape == (2,)
        else:
            assert model.discriminator(images, labels).shape == (2,)


@pytest.mark.parametrize("preset", ["r3gan", "r3gan_fmnist"])
def test_r3gan_presets_anneal_over_their_whole_run(preset, digits_index, tmp_path):
    """R3GAN's cosine schedules are compressed to the CPU run: each ends at the kimg the last step reaches."""
    cli = run_cli(["--config", f"configs/{preset}.yaml", "--data.init_args.index", digits_index,
                   "--trainer.logger", "false", "--trainer.callbacks", "[]",
                   "--trainer.default_root_dir", str(tmp_path)], run=False)
    model, trainer = cli.model, cli.trainer
    run_kimg = trainer.max_steps * cli.datamodule.hparams.batch_size / 1000
    assert set(model.schedules) == {"r1_gamma", "r2_gamma", "lr_g", "lr_d", "beta2_g", "beta2_d", "ema_kimg"}
    assert all(s.kimg == run_kimg for s in model.schedules.values())
    gamma = model.schedules["r1_gamma"]
    assert model.schedules["r2_gamma"](0) == gamma(0) == model.r1_gamma == model.r2_gamma  # R1 and R2 at one gamma
    assert gamma(run_kimg) == pytest.approx(gamma(0) / 10)  # the paper's gamma / 10 at the end
    assert model.schedules["beta2_d"](run_kimg) == pytest.approx(0.99)
