"""Joint discriminators D(x, z) for ALI/BiGAN (Dumoulin et al., 2017; Donahue et al., 2017).

They score (data, code) pairs: (x, E(x)) from the encoder against (G(z), z) from the generator. Only a
discriminator that sees both halves of the pair can force E and G to invert each other. The last layer is
a projection head, so ``num_classes > 0`` makes either net class-conditional.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from modules.nets.conditional import ProjectionHead
from modules.nets.dcgan import dcgan_init_, dcgan_trunk, feature_widths


def _mlp_features(in_dim: int, hidden: int, layers: int, negative_slope: float,
                  dropout: float) -> nn.Sequential:
    blocks: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), nn.LeakyReLU(negative_slope)]
        if dropout > 0:
            blocks.append(nn.Dropout(dropout))
        width = hidden
    return nn.Sequential(*blocks)


class JointMLPDiscriminator(nn.Module):
    """(x (N, in_dim), z (N, latent_dim)) [, y] -> score (N,): an MLP on the concatenation [x, z].

    Args:
        in_dim, latent_dim: sizes of x (flattened) and z.
        hidden, layers: width and number of hidden layers.
        negative_slope: of the LeakyReLUs.
        dropout: after every hidden layer (ALI's choice; draws from the global torch RNG).
        num_classes: > 0 adds a projection on the label.
    """

    def __init__(self, in_dim: int = 2, latent_dim: int = 2, hidden: int = 128, layers: int = 3,
                 negative_slope: float = 0.2, dropout: float = 0.0, num_classes: int = 0):
        super().__init__()
        self.features = _mlp_features(in_dim + latent_dim, hidden, layers, negative_slope, dropout)
        self.head = ProjectionHead(hidden, num_classes)

    def forward(self, x: Tensor, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.head(self.features(torch.cat([x.flatten(1), z], dim=1)), y)


class JointConvDiscriminator(nn.Module):
    """(images, z) [, y] -> score (N,): DCGAN convolutions on x, an MLP on z, an MLP on both features.

    Args:
        resolution, channels, base_width, max_width: of the image half, as for DCGANDiscriminator.
        latent_dim: size of z.
        hidden: width of the z branch and of the joint layers.
        batch_norm: in the image convolutions (after the first).
        negative_slope: of the LeakyReLUs.
        dropout: in the z branch and the joint layers (ALI's choice; draws from the global torch RNG).
        num_classes: > 0 adds a projection on the label.
    """

    def __init__(self, resolution: int = 32, channels: int = 3, latent_dim: int = 100, base_width: int = 64,
                 max_width: int = 512, hidden: int = 512, batch_norm: bool = False,
                 negative_slope: float = 0.2, dropout: float = 0.0, num_classes: int = 0):
        super().__init__()
        self.image_features = dcgan_trunk(resolution, channels, base_width, max_width, batch_norm,
                                          negative_slope)
        image_dim = feature_widths(resolution, base_width, max_width)[4] * 16
        self.code_features = _mlp_features(latent_dim, hidden, 2, negative_slope, dropout)
        self.joint_features = _mlp_features(image_dim + hidden, hidden, 1, negative_slope, dropout)
        self.head = ProjectionHead(hidden, num_classes)
        dcgan_init_(self)

    def forward(self, x: Tensor, z: Tensor, y: Tensor | None = None) -> Tensor:
        features = torch.cat([self.image_features(x).flatten(1), self.code_features(z)], dim=1)
        return self.head(self.joint_features(features), y)
