"""DeLiGAN's mixture latent: uniform components, an exact Gaussian mixture through an identity generator."""

import math

import pytest
import torch
from torch import nn

from datamodules.mixtures import grid25
from modules.nets.mixture_latent import MixtureLatentGenerator
from modules.nets.mlp import MLPGenerator
from pipeline.metrics.mode_coverage import mode_coverage


class Identity2d(nn.Module):
    latent_dim = 2

    def forward(self, z, y=None):
        return z


def test_every_component_gets_mass_one_over_k():
    mixture = MixtureLatentGenerator(Identity2d(), components=10)
    z0 = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    share = torch.bincount(mixture.component(z0), minlength=10).double() / len(z0)
    assert share.sub(0.1).abs().max() < 0.003  # binomial std ~0.0007


def test_components_at_the_modes_sample_the_mixture_itself():
    """Means on grid25's modes, scales its std: the samples are grid25, with no mass between the modes."""
    dist = grid25()
    mixture = MixtureLatentGenerator(Identity2d(), components=25)
    with torch.no_grad():
        mixture.means.copy_(dist.means)
        mixture.log_scales.fill_(math.log(dist.std))
    samples = mixture(torch.randn(20_000, 3, generator=torch.Generator().manual_seed(1)))
    result = mode_coverage(samples, dist.means, dist.std)
    assert result.modes == 25
    assert abs(result.high_quality - (1 - math.exp(-4.5))) < 0.004  # P(|x - mu| < 3 std) in 2-D: 0.9889
    assert result.reverse_kl < 0.005


def test_gradients_reach_only_the_drawn_components_and_the_generator():
    mixture = MixtureLatentGenerator(MLPGenerator(latent_dim=2, hidden=8, layers=1), components=4)
    z = torch.randn(5, 3)
    z[:, 0] = -3.0  # Phi(-3) * 4 < 1: every code in component 0
    mixture(z).sum().backward()
    assert mixture.means.grad[0].abs().sum() > 0 and mixture.log_scales.grad[0].abs().sum() > 0
    assert mixture.means.grad[1:].abs().sum() == 0 and mixture.log_scales.grad[1:].abs().sum() == 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mixture.generator.parameters())
    assert mixture.latent_dim == 3


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="components >= 1, spread > 0, sigma > 0; got 0"):
        MixtureLatentGenerator(Identity2d(), components=0)
    with pytest.raises(ValueError, match="must define `latent_dim`"):
        MixtureLatentGenerator(nn.Linear(2, 2))
