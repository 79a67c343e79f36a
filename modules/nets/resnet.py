"""ResNet players in the style of SNGAN (Miyato et al., 2018) and BigGAN (Brock et al., 2019).

G: z -> 4x4 by a linear layer, then residual up-blocks (conditional BatchNorm, ReLU, nearest 2x, 3x3
convolutions) to the output resolution, BatchNorm-ReLU-conv-tanh at the end. D: residual down-blocks
(ReLU, 3x3 convolutions, average pooling; the first without pre-activation) to 4x4, one more block at
4x4, ReLU, sum over positions, then a projection head (Miyato & Koyama, 2018). Either may carry one
self-attention layer (SAGAN, Zhang et al., 2019) after the block that outputs ``attention_resolution``.

Widths halve as resolution doubles, capped at ``max_width``: G's map at resolution r has
min(max_width, base_width * resolution / r) channels; D's block output at r has half of that.
D carries no spectral norm of its own: SNGAN is this D with the GAN module's ``spectral_norm: true``
(modules.regularizers.apply_spectral_norm normalises every convolution, linear layer and embedding).
Weights start Xavier-uniform (SNGAN's choice).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.nets.conditional import ConditionalBatchNorm2d, ProjectionHead


def _check_resolution(resolution: int) -> None:
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")


def _widths(resolution: int, base_width: int, max_width: int) -> dict[int, int]:
    """Channels at resolutions 4, 8, ..., resolution: min(max_width, base_width * resolution / r)."""
    widths, r = {}, 4
    while r <= resolution:
        widths[r] = min(max_width, base_width * resolution // r)
        r *= 2
    return widths


def _check_attention(attention_resolution: int | None, allowed: list[int], owner: str) -> None:
    if attention_resolution is not None and attention_resolution not in allowed:
        raise ValueError(f"{owner}: attention_resolution must be one of {allowed} (a block's output), "
                         f"got {attention_resolution}")


def _xavier_init_(module: nn.Module) -> nn.Module:
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, ProjectionHead) and layer.embed is not None:
            nn.init.xavier_uniform_(layer.embed.weight)
    return module


class SelfAttention2d(nn.Module):
    """SAGAN self-attention: x + gamma * attention over all positions (gamma starts at 0: identity)."""

    def __init__(self, channels: int):
        super().__init__()
        inner = max(1, channels // 8)
        self.query = nn.Conv2d(channels, inner, 1, bias=False)
        self.key = nn.Conv2d(channels, inner, 1, bias=False)
        self.value = nn.Conv2d(channels, max(1, channels // 2), 1, bias=False)
        self.out = nn.Conv2d(max(1, channels // 2), channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # (N, HW, C/8)
        k = self.key(x).flatten(2)  # (N, C/8, HW)
        v = self.value(x).flatten(2)  # (N, C/2, HW)
        attention = torch.softmax(q @ k, dim=-1)  # (N, HW query, HW key)
        o = (v @ attention.transpose(1, 2)).reshape(n, -1, h, w)
        return x + self.gamma * self.out(o)


class GeneratorBlock(nn.Module):
    """(c)BN-ReLU-up-conv-(c)BN-ReLU-conv, plus an upsampled 1x1-convolved shortcut: doubles resolution."""

    def __init__(self, in_channels: int, out_channels: int, num_classes: int = 0):
        super().__init__()
        self.norm1 = ConditionalBatchNorm2d(in_channels, num_classes)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = ConditionalBatchNorm2d(out_channels, num_classes)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = F.interpolate(self.norm1(x, y).relu(), scale_factor=2.0, mode="nearest")
        h = self.conv2(self.norm2(self.conv1(h), y).relu())
        return h + self.shortcut(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DiscriminatorBlock(nn.Module):
    """ReLU-conv-ReLU-conv[-avgpool] plus a shortcut (1x1 conv where shapes change); the first block
    skips the leading ReLU."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool = True,
                 preactivation: bool = True):
        super().__init__()
        self.downsample = downsample
        self.preactivation = preactivation
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        learned = in_channels != out_channels or downsample
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if learned else nn.Identity()

    def _pool(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, 2) if self.downsample else x

    def forward(self, x: Tensor) -> Tensor:
        h = x.relu() if self.preactivation else x
        h = self._pool(self.conv2(self.conv1(h).relu()))
        # SNGAN: conv-then-pool on the shortcut, except the first block (on images), which pools first
        shortcut = self._pool(self.shortcut(x)) if self.preactivation else self.shortcut(self._pool(x))
        return h + shortcut


class ResNetGenerator(nn.Module):
    """z (N, latent_dim) [, y (N,)] -> images (N, channels, resolution, resolution) in [-1, 1].

    Args:
        latent_dim: size of z.
        resolution: output side, a power of two >= 8.
        channels: output channels.
        base_width, max_width: channels at the output resolution, and the cap deeper in.
        num_classes: > 0 gives every block class-conditional BatchNorm; G then needs one label per z.
        attention_resolution: self-attention after the block that outputs this resolution (None: none).
    """

    def __init__(self, latent_dim: int = 128, resolution: int = 32, channels: int = 3, base_width: int = 64,
                 max_width: int = 512, num_classes: int = 0, attention_resolution: int | None = None):
        super().__init__()
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        _check_resolution(resolution)
        widths = _widths(resolution, base_width, max_width)
        resolutions = sorted(widths)[1:]
        _check_attention(attention_resolution, resolutions, type(self).__name__)
        self.bottom_width = widths[4]
        self.to_map = nn.Linear(latent_dim, widths[4] * 16)
        self.blocks = nn.ModuleList(GeneratorBlock(widths[r // 2], widths[r], num_classes)
                                    for r in resolutions)
        self.attention_index = resolutions.index(attention_resolution) if attention_resolution else None
        self.attention = SelfAttention2d(widths[attention_resolution]) if attention_resolution else None
        self.to_image = nn.Sequential(nn.BatchNorm2d(widths[resolution]), nn.ReLU(),
                                      nn.Conv2d(widths[resolution], channels, 3, 1, 1), nn.Tanh())
        _xavier_init_(self)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.to_map(z).view(z.shape[0], self.bottom_width, 4, 4)
        for i, block in enumerate(self.blocks):
            h = block(h, y)
            if i == self.attention_index:
                h = self.attention(h)
        return self.to_image(h)


class ResNetDiscriminator(nn.Module):
    """images (N, channels, resolution, resolution) [, y (N,)] -> one raw score per image (N,).

    Args:
        resolution, channels, base_width, max_width: as for ResNetGenerator.
        num_classes: > 0 makes the head a projection on the label (D then needs one label per image).
        attention_resolution: self-attention after the block that outputs this resolution (None: none).
    """

    def __init__(self, resolution: int = 32, channels: int = 3, base_width: int = 64, max_width: int = 512,
                 num_classes: int = 0, attention_resolution: int | None = None):
        super().__init__()
        _check_resolution(resolution)
        widths = _widths(resolution // 2, base_width, max_width)  # block outputs at resolution/2 ... 4
        resolutions = sorted(widths, reverse=True)
        _check_attention(attention_resolution, resolutions, type(self).__name__)
        blocks: list[nn.Module] = []
        width = channels
        for i, r in enumerate(resolutions):
            blocks.append(DiscriminatorBlock(width, widths[r], downsample=True, preactivation=i > 0))
            if r == attention_resolution:
                blocks.append(SelfAttention2d(widths[r]))
            width = widths[r]
        blocks.append(DiscriminatorBlock(width, width, downsample=False))
        self.blocks = nn.Sequential(*blocks)
        self.head = ProjectionHead(width, num_classes)
        _xavier_init_(self)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        features = self.blocks(x).relu().sum(dim=(2, 3))
        return self.head(features, y)
