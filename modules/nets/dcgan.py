"""DCGAN players (Radford et al., 2016) for any power-of-two resolution, and the matching image encoder.

G: z -> 4x4 by a transposed convolution, then stride-2 transposed convolutions (BatchNorm, ReLU) doubling
the resolution, tanh at the output. D: stride-2 convolutions (LeakyReLU; BatchNorm after the first)
halving it down to 4x4, then a linear score over the 4x4 map (the DCGAN's final 4x4 convolution, written
as a projection head so class labels can enter). Widths halve as resolution doubles: the feature map at
resolution r has min(max_width, base_width * resolution / (2r)) channels, the DCGAN's 64/128/256/512 at
64 px. Weights start from N(0, 0.02), BatchNorm gains from N(1, 0.02).
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from modules.nets.conditional import (
    ConditionalBatchNorm2d,
    ProjectionHead,
    concat_one_hot,
    concat_one_hot_planes,
)


def feature_widths(resolution: int, base_width: int, max_width: int) -> dict[int, int]:
    """Channels of the feature map at each inner resolution 4, 8, ..., resolution / 2."""
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
    widths, r = {}, 4
    while r < resolution:
        widths[r] = min(max_width, base_width * resolution // (2 * r))
        r *= 2
    return widths


def dcgan_init_(module: nn.Module) -> nn.Module:
    """Radford et al. (2016): every weight from N(0, 0.02), every normalisation gain from N(1, 0.02)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            if getattr(layer, "bias", None) is not None:
                nn.init.zeros_(layer.bias)
    for layer in module.modules():  # after the loop above: a conditional gain is an Embedding too
        if isinstance(layer, ConditionalBatchNorm2d):
            nn.init.normal_(layer.gain.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias.weight)
        elif isinstance(layer, nn.BatchNorm2d) and layer.affine:
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)
    return module


def dcgan_trunk(resolution: int, in_channels: int, base_width: int, max_width: int, batch_norm: bool,
                negative_slope: float) -> nn.Sequential:
    """The discriminator's convolutions: (N, in_channels, R, R) -> (N, widths[4], 4, 4)."""
    widths = feature_widths(resolution, base_width, max_width)
    layers: list[nn.Module] = []
    width = in_channels
    for i, r in enumerate(sorted(widths, reverse=True)):
        norm = batch_norm and i > 0  # DCGAN: no BatchNorm on the first layer, which sees the images
        layers.append(nn.Conv2d(width, widths[r], 4, 2, 1, bias=not norm))
        if norm:
            layers.append(nn.BatchNorm2d(widths[r]))
        layers.append(nn.LeakyReLU(negative_slope))
        width = widths[r]
    return nn.Sequential(*layers)


class _UpLayer(nn.Module):
    """Transposed convolution -> (conditional) BatchNorm -> ReLU."""

    def __init__(self, conv: nn.ConvTranspose2d, num_classes: int):
        super().__init__()
        self.conv = conv
        self.norm = ConditionalBatchNorm2d(conv.out_channels, num_classes)

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        return self.norm(self.conv(x), y).relu()


class DCGANGenerator(nn.Module):
    """z (N, latent_dim) [, y (N,)] -> images (N, channels, resolution, resolution) in [-1, 1].

    Args:
        latent_dim: size of z.
        resolution: output side, a power of two >= 8.
        channels: output channels (3 for RGB, 1 for grey).
        base_width, max_width: channels next to the output, and the cap deeper in (see module doc).
        num_classes: > 0 makes G class-conditional: it then needs one label per z.
        conditioning: "batchnorm" (per-class BatchNorm gain and bias) or "concat" (one-hot appended to z).
    """

    def __init__(self, latent_dim: int = 100, resolution: int = 64, channels: int = 3, base_width: int = 64,
                 max_width: int = 512, num_classes: int = 0,
                 conditioning: Literal["batchnorm", "concat"] = "batchnorm"):
        super().__init__()
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.conditioning = conditioning
        widths = feature_widths(resolution, base_width, max_width)
        norm_classes = num_classes if conditioning == "batchnorm" else 0
        in_dim = latent_dim + (num_classes if conditioning == "concat" else 0)
        rs = sorted(widths)
        self.layers = nn.ModuleList([_UpLayer(nn.ConvTranspose2d(in_dim, widths[4], 4, 1, 0, bias=False),
                                              norm_classes)])
        for r in rs[1:]:
            self.layers.append(_UpLayer(nn.ConvTranspose2d(widths[r // 2], widths[r], 4, 2, 1, bias=False),
                                        norm_classes))
        self.to_image = nn.ConvTranspose2d(widths[rs[-1]], channels, 4, 2, 1)
        dcgan_init_(self)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        h = concat_one_hot(z, y, self.num_classes if self.conditioning == "concat" else 0)[:, :, None, None]
        for layer in self.layers:
            h = layer(h, y)
        return self.to_image(h).tanh()


class DCGANDiscriminator(nn.Module):
    """images (N, channels, resolution, resolution) [, y (N,)] -> one raw score per image (N,).

    Args:
        resolution, channels, base_width, max_width: as for DCGANGenerator.
        num_classes: > 0 makes D class-conditional: it then needs one label per image.
        conditioning: "projection" (Miyato & Koyama, 2018) or "concat" (one-hot planes appended to x).
        batch_norm: BatchNorm after every convolution but the first (turn off for WGAN-GP).
        negative_slope: of the LeakyReLUs.
    """

    def __init__(self, resolution: int = 64, channels: int = 3, base_width: int = 64, max_width: int = 512,
                 num_classes: int = 0, conditioning: Literal["projection", "concat"] = "projection",
                 batch_norm: bool = True, negative_slope: float = 0.2):
        super().__init__()
        self.num_classes = num_classes
        self.conditioning = conditioning
        concat_classes = num_classes if conditioning == "concat" else 0
        self.trunk = dcgan_trunk(resolution, channels + concat_classes, base_width, max_width, batch_norm,
                                 negative_slope)
        width = feature_widths(resolution, base_width, max_width)[4]
        self.head = ProjectionHead(width * 16, num_classes if conditioning == "projection" else 0)
        dcgan_init_(self)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if self.conditioning == "concat":
            x = concat_one_hot_planes(x, y, self.num_classes)
        return self.head(self.trunk(x).flatten(1), y)


class DCGANEncoder(nn.Module):
    """images -> codes (N, latent_dim): the discriminator's convolutions with a linear output (BiGAN's E)."""

    def __init__(self, latent_dim: int = 100, resolution: int = 64, channels: int = 3, base_width: int = 64,
                 max_width: int = 512, batch_norm: bool = True, negative_slope: float = 0.2):
        super().__init__()
        self.trunk = dcgan_trunk(resolution, channels, base_width, max_width, batch_norm, negative_slope)
        self.to_code = nn.Linear(feature_widths(resolution, base_width, max_width)[4] * 16, latent_dim)
        dcgan_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.to_code(self.trunk(x).flatten(1))
