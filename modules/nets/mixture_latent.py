"""A learned Gaussian-mixture latent in front of any generator (DeLiGAN; Gurumurthy et al., 2017)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class MixtureLatentGenerator(nn.Module):
    """z (N, 1 + generator.latent_dim) -> generator(mu_k + sigma_k * z[:, 1:]), k uniform over ``components``.

    A continuous generator fed one Gaussian must put mass between the modes of a disconnected target: it
    maps a connected latent space onto it, so the transitions between modes are sampled too (Khayatkhoei
    et al., 2018; Tanielian et al., 2020). On grid25 that is ~20% of the samples of a well-trained MLP. Here
    z's first coordinate picks one of ``components`` latent Gaussians (k = floor(Phi(z_0) * K), so every
    component has mass 1/K and the module's own z ~ N(0, I) sampling, seeds and resume stay as they are);
    each has a learned mean and scale. Narrow, well-separated components (``sigma`` << ``spread``) leave
    the generator empty latent space to place its transitions in.
    """

    def __init__(self, generator: nn.Module, components: int = 100, spread: float = 3.0, sigma: float = 0.01):
        super().__init__()
        if components < 1 or spread <= 0 or sigma <= 0:
            raise ValueError(f"MixtureLatentGenerator needs components >= 1, spread > 0, sigma > 0; got "
                             f"{components}, {spread}, {sigma}")
        if not hasattr(generator, "latent_dim"):
            raise ValueError(f"MixtureLatentGenerator: generator ({type(generator).__name__}) must define "
                             "`latent_dim`")
        self.generator = generator
        self.latent_dim = generator.latent_dim + 1
        self.means = nn.Parameter((2 * torch.rand(components, generator.latent_dim) - 1) * spread)
        self.log_scales = nn.Parameter(torch.full((components, generator.latent_dim), math.log(sigma)))

    def component(self, z0: Tensor) -> Tensor:
        """Index of the mixture component of each latent code, from its first coordinate (N,)."""
        uniform = 0.5 * (1 + torch.erf(z0 / math.sqrt(2)))
        return (uniform * len(self.means)).long().clamp_(0, len(self.means) - 1)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        k = self.component(z[:, 0])
        latent = self.means[k] + self.log_scales[k].exp() * z[:, 1:]
        return self.generator(latent, y)
