"""StyleGAN2's path-length penalty equals its formula where the Jacobian is known (a linear synthesis)."""

import copy
import math

import pytest
import torch
from style_toys import LinearStyleGenerator

from modules.gan import GAN
from modules.nets.mlp import MLPDiscriminator, MLPGenerator
from modules.regularizers import PathLengthPenalty


def expected_lengths(generator: LinearStyleGenerator, n: int, seed: int) -> torch.Tensor:
    """||J^T y|| per sample for synthesis = A (J^T y = A^T y), y ~ N(0, I)/sqrt(H*W), averaged over the ws as
    sqrt(mean_i ||(A^T y)_i||^2), with y drawn as the penalty draws it."""
    torch.manual_seed(seed)
    c, h, w = generator.image_shape
    y = torch.randn(n, c, h, w) / math.sqrt(h * w)
    jty = (y.flatten(1) @ generator.A.detach()).view(n, generator.num_ws, generator.w_dim)
    return jty.square().sum(dim=-1).mean(dim=1).sqrt()


def test_penalty_and_running_mean_follow_the_formula_on_a_linear_synthesis():
    torch.manual_seed(0)
    generator = LinearStyleGenerator(latent_dim=3, w_dim=4, num_ws=2, image_shape=(1, 2, 3))
    penalty = PathLengthPenalty(decay=0.01, batch_shrink=2)
    z = torch.randn(8, 3)

    torch.manual_seed(1)
    first = penalty(generator, z)
    lengths = expected_lengths(generator, 4, seed=1)  # batch shrink 2: the first 4 of 8
    mean = 0.01 * lengths.mean()  # a <- a + decay * (mean length - a), from a = 0
    assert penalty.pl_mean.item() == pytest.approx(mean.item(), rel=1e-6)
    assert first.item() == pytest.approx(((lengths - mean) ** 2).mean().item(), rel=1e-5)

    torch.manual_seed(2)
    second = penalty(generator, z)
    lengths = expected_lengths(generator, 4, seed=2)
    mean = mean + 0.01 * (lengths.mean() - mean)
    assert penalty.pl_mean.item() == pytest.approx(mean.item(), rel=1e-6)
    assert second.item() == pytest.approx(((lengths - mean) ** 2).mean().item(), rel=1e-5)

    second.backward()
    assert generator.A.grad.abs().sum() > 0  # the penalty trains the synthesis


def test_pl_mean_is_a_buffer_of_the_game_state():
    model = GAN(LinearStyleGenerator(), MLPDiscriminator(), pl_weight=2.0, pl_every=4)
    assert "path_length.pl_mean" in model.state_dict()
    model.path_length.pl_mean.fill_(0.25)
    fresh = GAN(LinearStyleGenerator(), MLPDiscriminator(), pl_weight=2.0, pl_every=4)
    fresh.load_state_dict(model.state_dict())
    assert fresh.path_length.pl_mean.item() == 0.25


def test_the_games_penalty_is_weighted_by_pl_weight_times_pl_every_and_reproducible():
    torch.manual_seed(0)
    model = GAN(LinearStyleGenerator(), MLPDiscriminator(), pl_weight=2.0, pl_every=4, pl_batch_shrink=1,
                noise_seed=5)
    twin = copy.deepcopy(model)
    metrics = {}
    weighted = model.path_length_penalty(6, None, metrics)
    assert weighted.item() == pytest.approx(2.0 * 4 * metrics["reg/pl"].item())
    assert metrics["reg/pl_mean"] == model.path_length.pl_mean
    assert torch.equal(twin.path_length_penalty(6, None, {}), weighted)  # z and y from the game's streams


def test_path_length_needs_a_generator_with_styles_and_synthesis():
    with pytest.raises(ValueError, match="needs a generator with `styles` and `synthesis`.*MLPGenerator"):
        GAN(MLPGenerator(), MLPDiscriminator(), pl_weight=2.0)
