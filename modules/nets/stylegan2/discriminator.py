"""StyleGAN2's residual discriminator (Karras et al., 2020, Fig. 7c) with NVlabs' conditional projection.

fromRGB (1x1) at the input resolution, then per resolution R..8 a residual block: two 3x3 convolutions
(the second FIR-downsampling) plus a FIR-downsampled 1x1 skip, summed with gain sqrt(1/2) each. At 4x4:
the minibatch standard deviation layer (Karras et al., 2018, Sec. 3; StyleGAN2's grouped version), a 3x3
convolution, a fully connected layer and the output layer. Conditional (StyleGAN2-ADA, after Miyato &
Koyama, 2018): the output layer gives a cmap_dim vector, scored against a mapping network's embedding of the
label: <out, cmap> / sqrt(cmap_dim). Widths: min(channel_base // r, channel_max).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from modules.nets.equalized import EqualizedConv2d, EqualizedLinear
from modules.nets.stylegan2.mapping import MappingNetwork
from modules.nets.stylegan2.synthesis import check_resolution, stylegan_widths


class MinibatchStdDev(nn.Module):
    """Appends ``num_channels`` feature maps: the stddev over groups of ``group_size`` samples, averaged.

    Sample i belongs to group i mod (N / G) (NVlabs' reshape (G, -1, ...)); channels split into
    ``num_channels`` parts, each giving mean over its channels and pixels of sqrt(var_group + 1e-8).
    G = the largest divisor of N that is <= group_size (NVlabs requires N divisible by it).
    """

    def __init__(self, group_size: int, num_channels: int = 1):
        super().__init__()
        if group_size < 1 or num_channels < 1:
            raise ValueError(f"MinibatchStdDev: group_size and num_channels must be >= 1, got "
                             f"{group_size} and {num_channels}")
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        while n % g:
            g -= 1
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)  # variance over the group: (N/G, F, C/F, H, W)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # (N/G, F)
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # back to sample i -> group i mod (N/G)
        return torch.cat([x, y.to(x.dtype)], dim=1)


class DiscriminatorBlock(nn.Module):
    """(N, C, R, R) -> (N, C', R/2, R/2): sqrt(1/2) * (conv3x3-down(conv3x3(x)) + skip1x1-down(x))."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3, activation="lrelu")
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3, activation="lrelu", down=2)
        self.skip = EqualizedConv2d(in_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: Tensor) -> Tensor:
        return (self.skip(x) + self.conv1(self.conv0(x))) * math.sqrt(0.5)


class StyleGAN2Discriminator(nn.Module):
    """images (N, channels, R, R) [, labels (N,)] -> scores (N,)."""

    def __init__(self, resolution: int = 1024, channels: int = 3, num_classes: int = 0,
                 channel_base: int = 32768, channel_max: int = 512, mbstd_group_size: int | None = 4,
                 mbstd_channels: int = 1, cmap_dim: int | None = None, mapping_layers: int = 8):
        super().__init__()
        check_resolution(resolution, type(self).__name__)
        widths = stylegan_widths(resolution, channel_base, channel_max)
        self.num_classes = num_classes
        self.fromrgb = EqualizedConv2d(channels, widths[resolution], 1, activation="lrelu")
        self.blocks = nn.Sequential(*[DiscriminatorBlock(widths[r], widths[r // 2])
                                      for r in sorted(widths, reverse=True) if r > 4])
        width = widths[4]
        if mbstd_group_size and widths[4] % mbstd_channels:
            raise ValueError(f"StyleGAN2Discriminator: mbstd_channels ({mbstd_channels}) must divide the 4x4 "
                             f"width ({width})")
        self.mbstd = MinibatchStdDev(mbstd_group_size, mbstd_channels) if mbstd_group_size else None
        self.conv = EqualizedConv2d(width + (mbstd_channels if self.mbstd is not None else 0), width, 3,
                                    activation="lrelu")
        self.fc = EqualizedLinear(width * 16, width, activation="lrelu")
        self.cmap_dim = (cmap_dim or width) if num_classes > 0 else 0
        self.out = EqualizedLinear(width, self.cmap_dim or 1)
        self.mapping = (MappingNetwork(0, self.cmap_dim, num_classes=num_classes, num_layers=mapping_layers,
                                       w_avg_beta=None) if num_classes > 0 else None)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        x = self.blocks(self.fromrgb(x))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.out(self.fc(self.conv(x).flatten(1)))
        if self.mapping is None:
            return x.squeeze(1)
        cmap = self.mapping(None, labels)
        return (x * cmap).sum(dim=1) / math.sqrt(self.cmap_dim)
