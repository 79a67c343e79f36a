"""Draws inside a generator's forward come from the game's seeded streams; the global RNG outside is untouched."""

import pytorch_lightning as pl
import torch
from style_toys import NoisyStyleGenerator
from torch.utils.data import DataLoader, TensorDataset

from modules.gan import GAN
from modules.nets.mlp import MLPDiscriminator
from modules.seeded_rng import seeded_global_rng


def make_gan() -> GAN:
    torch.manual_seed(0)
    return GAN(NoisyStyleGenerator(), MLPDiscriminator(hidden=16, layers=2), noise_seed=3)


def test_a_seeded_block_draws_its_seeds_numbers_and_restores_the_rng():
    torch.manual_seed(123)
    outside = torch.get_rng_state()
    with seeded_global_rng(7, torch.device("cpu")):
        inside = torch.randn(5)
    assert torch.equal(torch.get_rng_state(), outside)
    assert torch.equal(inside, torch.randn(5, generator=torch.Generator().manual_seed(7)))


def test_the_games_blocks_are_per_stream_and_per_step():
    model = make_gan()
    with model._seeded("g_g"):
        a = torch.randn(5)
    with model._seeded("g_g"):
        assert torch.equal(torch.randn(5), a)  # same stream, same D step: same draws
    with model._seeded("g_d"):
        assert not torch.equal(torch.randn(5), a)  # another purpose
    model.d_steps += 1
    with model._seeded("g_g"):
        assert not torch.equal(torch.randn(5), a)  # another step


def test_samples_of_a_noisy_generator_are_fixed_by_their_seed():
    model = make_gan()
    torch.manual_seed(1)
    outside = torch.get_rng_state()
    first = model.sample(8, seed=5)
    assert torch.equal(torch.get_rng_state(), outside)  # sampling leaves the global RNG alone
    torch.manual_seed(2)  # another global state: the same samples
    assert torch.equal(model.sample(8, seed=5), first)
    assert not torch.equal(model.sample(8, seed=6), first)


EVAL = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False, "enable_model_summary": False}


def test_held_out_scores_of_a_noisy_generator_are_reproducible():
    model = make_gan()
    data = DataLoader(TensorDataset(torch.randn(16, 2, generator=torch.Generator().manual_seed(0))), batch_size=8)
    torch.manual_seed(1)
    first = pl.Trainer(**EVAL).validate(model, data, verbose=False)[0]
    torch.manual_seed(2)
    again = pl.Trainer(**EVAL).validate(model, data, verbose=False)[0]
    assert first["val/loss_d"] == again["val/loss_d"]
    with torch.no_grad():  # and the noise matters: unseeded draws give other scores
        z = torch.randn(8, 2)
        assert not torch.equal(model.generate(z), model.generate(z))
