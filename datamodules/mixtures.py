"""2-D Gaussian mixtures of the mode-collapse literature, as defined in the PacGAN reference code.

ring8:  8 Gaussians, means (cos 2*pi*i/8, sin 2*pi*i/8), i = 0..7, std 0.01.
grid25: 25 Gaussians, means {-4, -2, 0, 2, 4}^2, std 0.05.
(The often copied ``linspace(0, 2*pi, 8)`` puts the last mean on the first: only 7 distinct modes.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class GaussianMixture:
    """Equally weighted isotropic Gaussians: ``means`` (K, 2) and one ``std``."""

    means: Tensor
    std: float

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n points and the index of the component each was drawn from."""
        component = torch.randint(len(self.means), (n,), generator=generator)
        noise = torch.randn(n, self.means.shape[1], generator=generator)
        return self.means[component] + self.std * noise, component


def ring8() -> GaussianMixture:
    angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    means = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1).float()
    return GaussianMixture(means, 0.01)


def grid25() -> GaussianMixture:
    axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    means = torch.cartesian_prod(axis, axis)
    return GaussianMixture(means, 0.05)


MIXTURES = {"ring8": ring8, "grid25": grid25}


def mixture(name: str) -> GaussianMixture:
    if name not in MIXTURES:
        raise ValueError(f"unknown mixture {name!r}; choose one of {sorted(MIXTURES)}")
    return MIXTURES[name]()
