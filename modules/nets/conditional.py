"""Class conditioning for image networks: conditional BatchNorm in G, projection or one-hot input in D.

Conditional BatchNorm (de Vries et al., 2017; Miyato & Koyama, 2018) gives every class its own gain and
bias after a shared normalisation; the projection discriminator (Miyato & Koyama, 2018) scores
psi(phi(x)) + <embed(y), phi(x)>; the one-hot inputs are the plain cGAN of Mirza & Osindero (2014).
With ``num_classes=0`` every layer here is unconditional and ignores ``y``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def check_labels(y: Tensor | None, num_classes: int, owner: str) -> None:
    """A conditional network needs one integer label per sample: say so instead of failing deep inside."""
    if num_classes > 0 and y is None:
        raise ValueError(f"{owner} is conditional (num_classes={num_classes}) but got no labels: "
                         f"feed (x, y) batches or pass labels to sample()")


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm2d whose affine gain and bias are looked up per class (one shared pair if unconditional)."""

    def __init__(self, num_features: int, num_classes: int = 0):
        super().__init__()
        self.num_classes = num_classes
        self.norm = nn.BatchNorm2d(num_features, affine=False)
        self.gain = nn.Embedding(max(num_classes, 1), num_features)
        self.bias = nn.Embedding(max(num_classes, 1), num_features)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        check_labels(y, self.num_classes, type(self).__name__)
        index = y if self.num_classes > 0 else torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        gain = self.gain(index)[:, :, None, None]
        bias = self.bias(index)[:, :, None, None]
        return self.norm(x) * gain + bias


class ProjectionHead(nn.Module):
    """Score from features phi(x) (N, F): psi(phi) + <embed(y), phi> (the second term only if conditional)."""

    def __init__(self, num_features: int, num_classes: int = 0):
        super().__init__()
        self.num_classes = num_classes
        self.psi = nn.Linear(num_features, 1)
        self.embed = nn.Embedding(num_classes, num_features) if num_classes > 0 else None

    def forward(self, features: Tensor, y: Tensor | None = None) -> Tensor:
        score = self.psi(features).squeeze(1)
        if self.embed is None:
            return score
        check_labels(y, self.num_classes, type(self).__name__)
        return score + (self.embed(y) * features).sum(dim=1)


def concat_one_hot(z: Tensor, y: Tensor | None, num_classes: int) -> Tensor:
    """cGAN generator input: [z, one_hot(y)] (N, latent_dim + num_classes); z itself if unconditional."""
    if num_classes == 0:
        return z
    check_labels(y, num_classes, "the generator")
    return torch.cat([z, F.one_hot(y, num_classes).to(z.dtype)], dim=1)


def concat_one_hot_planes(x: Tensor, y: Tensor | None, num_classes: int) -> Tensor:
    """cGAN discriminator input: the image with one constant plane per class appended (N, C + K, H, W)."""
    if num_classes == 0:
        return x
    check_labels(y, num_classes, "the discriminator")
    planes = F.one_hot(y, num_classes).to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])
    return torch.cat([x, planes], dim=1)


def per_class_labels(num_classes: int, per_class: int, device: torch.device | str = "cpu") -> Tensor:
    """Labels 0,0,..,1,1,..: ``per_class`` of each class, for ``GAN.sample(n, labels=...)`` grids by class."""
    return torch.arange(num_classes, device=device).repeat_interleave(per_class)
