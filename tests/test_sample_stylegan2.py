"""`ganforge sample --truncation-psi / --style-mix` and predict's truncation on a tiny StyleGAN2 checkpoint."""

import pytest
import torch

from modules.seeded_rng import next_seed, seeded_global_rng
from pipeline.commands.checkpoint_loading import load_module
from pipeline.commands.cli import main
from tests.test_sample_command import SIZE, fit_checkpoint

LATENT = 8
NET = {"resolution": SIZE, "channels": 1, "channel_base": 256, "channel_max": 16}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("sample_sg2")
    generator = {"class_path": "modules.nets.stylegan2.StyleGAN2Generator",
                 "init_args": {"latent_dim": LATENT, "w_dim": 8, "mapping_layers": 2, **NET}}
    discriminator = {"class_path": "modules.nets.stylegan2.StyleGAN2Discriminator", "init_args": NET}
    config = {"class_path": "modules.gan.GAN",
              "init_args": {"generator": generator, "discriminator": discriminator, "ema_kimg": 1.0,
                            "noise_seed": 0, "lr_g": 0.0025, "lr_d": 0.0025}}
    ckpt = fit_checkpoint(config, tmp / "sg2.ckpt")
    return {"ckpt": ckpt, "tmp": tmp, "model": load_module(ckpt)}


def test_truncation_psi_zero_samples_the_average_w(made):
    """psi = 0: every sample is the image of w_avg (the noise inputs drawn from the RNG that --seed fixes)."""
    net = made["model"].generator_ema.eval()
    assert float(net.mapping.w_avg.abs().sum()) > 0  # tracked while training
    main(["sample", "--ckpt", made["ckpt"], "--num", "4", "--truncation-psi", "0", "--seed", "3", "--out",
          str(made["tmp"] / "psi0.pt")])
    gen = torch.Generator().manual_seed(3)
    torch.randn(4, LATENT, generator=gen)  # the z that psi = 0 discards; then the seed of G's own draws
    with torch.no_grad(), seeded_global_rng(next_seed(gen), torch.device("cpu")):
        expected = net.synthesis(net.mapping.w_avg.expand(4, net.num_ws, -1))
    torch.testing.assert_close(torch.load(made["tmp"] / "psi0.pt"), expected)
    untruncated = made["model"].sample(4, seed=0)
    assert not torch.allclose(untruncated[0], untruncated[1], atol=1e-3)


def test_predict_truncates_with_the_model_setting(made):
    model = made["model"]
    model.hparams.predict_truncation_psi = 0.0
    try:
        torch.manual_seed(5)
        out = model.predict_step(torch.arange(3), 0)["samples"]
    finally:
        model.hparams.predict_truncation_psi = 1.0
    net = model.generator_ema
    torch.manual_seed(5)
    with torch.no_grad():
        torch.testing.assert_close(out, net.synthesis(net.mapping.w_avg.expand(3, net.num_ws, -1)))


def style_mix(made, *extra):
    out = made["tmp"] / "mix.pt"
    main(["sample", "--ckpt", made["ckpt"], "--style-mix", "2", "3", "--seed", "4", "--out", str(out), *extra])
    return torch.load(out).reshape(3, 4, 1, SIZE, SIZE)  # (R + 1) rows of (C + 1) tiles


def test_style_mix_grid_takes_the_chosen_layers_from_the_column(made):
    net = made["model"].generator_ema.eval()
    grid = style_mix(made)
    z = torch.randn(5, LATENT, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ws = net.styles(z)
        half = net.num_ws // 2
        row, col = ws[1], ws[2 + 2]  # row image 1, column image 2
        hand = torch.cat([col[:half], row[half:]])[None]
        torch.testing.assert_close(grid[2, 3], net.synthesis(hand, noise_mode="const")[0])
        torch.testing.assert_close(grid[0, 3], net.synthesis(col[None], noise_mode="const")[0])
        torch.testing.assert_close(grid[2, 0], net.synthesis(row[None], noise_mode="const")[0])
    assert bool((grid[0, 0] == -1).all())  # the blank corner
    every_layer = style_mix(made, "--mix-layers", f"0-{net.num_ws - 1}")
    torch.testing.assert_close(every_layer[1:, 1:], every_layer[:1, 1:].expand(2, -1, -1, -1, -1))


@pytest.mark.parametrize("args, message", [
    (["--style-mix", "2", "2", "--mix-layers", "0-99"], "--mix-layers 0-99: the generator has ws 0..5"),
    (["--style-mix", "2", "2", "--mix-layers", "a"], "expected A-B or A"),
    (["--style-mix", "2", "2", "--num", "3"], "--style-mix draws its own"),
    (["--mix-layers", "0-1"], "--mix-layers is for --style-mix"),
])
def test_misuse_is_one_line(made, args, message):
    with pytest.raises(SystemExit) as stopped:
        main(["sample", "--ckpt", made["ckpt"], *args, "--out", str(made["tmp"] / "never.png")])
    assert message in str(stopped.value) and "\n" not in str(stopped.value)
