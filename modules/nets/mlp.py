"""Multilayer perceptrons: the players of Goodfellow et al. (2014), used on low-dimensional data."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _mlp(in_dim: int, hidden: int, layers: int, out_dim: int, negative_slope: float, batch_norm: bool):
    blocks: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        blocks.append(nn.Linear(width, hidden))
        if batch_norm:
            blocks.append(nn.BatchNorm1d(hidden))
        blocks.append(nn.LeakyReLU(negative_slope) if negative_slope > 0 else nn.ReLU())
        width = hidden
    blocks.append(nn.Linear(width, out_dim))
    return nn.Sequential(*blocks)


class MLPGenerator(nn.Module):
    """z (N, latent_dim) -> x (N, out_dim). ``latent_dim`` is read by the GAN module to sample z."""

    def __init__(self, latent_dim: int = 2, out_dim: int = 2, hidden: int = 128, layers: int = 3,
                 batch_norm: bool = False):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = _mlp(latent_dim, hidden, layers, out_dim, 0.0, batch_norm)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(z)


class FourierFeatures(nn.Module):
    """x (N, in_dim) -> [x, sin 2*pi*xB, cos 2*pi*xB] (N, in_dim + 2 * features), B ~ N(0, scale^2) fixed.

    Plain MLPs learn high frequencies last (spectral bias; Tancik et al., 2020): a ReLU discriminator on raw
    2-D coordinates cannot tell a mode of std 0.05 from one of std 0.1 after thousands of steps, so the
    generator is never pushed to sharpen its modes. x itself is kept: periodic features alone give D no
    sense of direction far from the data. B is a buffer: saved in checkpoints, never trained.
    """

    def __init__(self, in_dim: int, features: int, scale: float):
        super().__init__()
        self.register_buffer("projection", torch.randn(in_dim, features) * scale)

    def forward(self, x: Tensor) -> Tensor:
        angles = 2 * math.pi * x @ self.projection
        return torch.cat([x, angles.sin(), angles.cos()], dim=1)


class MLPDiscriminator(nn.Module):
    """x (N, in_dim) -> one raw score per pack of ``pack`` consecutive samples (N / pack,).

    ``fourier_features`` > 0 feeds the MLP random Fourier features of x (see FourierFeatures) instead of x.
    Packing (PacGAN, Lin et al., 2018): D judges ``pack`` independent samples at once, concatenated along
    features, so a generator that drops modes yields packs unlike real ones. ganforge's losses are means,
    so they apply per pack unchanged; pack=1 is the ordinary per-sample discriminator. (A gradient penalty
    still takes per-sample gradient norms, so combine packing with unregularised or hinge/SN games.)
    """

    def __init__(self, in_dim: int = 2, hidden: int = 128, layers: int = 3, negative_slope: float = 0.2,
                 pack: int = 1, fourier_features: int = 0, fourier_scale: float = 1.0):
        super().__init__()
        if pack < 1:
            raise ValueError(f"pack must be >= 1, got {pack}")
        self.pack = pack
        self.features = FourierFeatures(in_dim, fourier_features, fourier_scale) if fourier_features else None
        width = in_dim + 2 * fourier_features
        self.net = _mlp(width * pack, hidden, layers, 1, negative_slope, False)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        x = x.flatten(1)
        if x.shape[0] % self.pack:
            raise ValueError(f"batch of {x.shape[0]} samples does not split into packs of {self.pack}")
        if self.features is not None:
            x = self.features(x)
        return self.net(x.reshape(x.shape[0] // self.pack, -1)).squeeze(1)
