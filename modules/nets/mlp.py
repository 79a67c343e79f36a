"""Multilayer perceptrons: the players of Goodfellow et al. (2014), used on low-dimensional data."""

from __future__ import annotations

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


class MLPDiscriminator(nn.Module):
    """x (N, in_dim) -> one raw score per sample (N,)."""

    def __init__(self, in_dim: int = 2, hidden: int = 128, layers: int = 3, negative_slope: float = 0.2):
        super().__init__()
        self.net = _mlp(in_dim, hidden, layers, 1, negative_slope, False)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(x.flatten(1)).squeeze(1)
