"""R3GAN's players (Huang et al., NeurIPS 2024, "The GAN is dead; long live the GAN! A Modern Baseline GAN").

The paper's config E modernises StyleGAN2 into a plain ConvNet (Sec. 4): stages of ResNeXt-style inverted-bottleneck
residual blocks (1x1 expand -> grouped kxk -> 1x1 project, leaky ReLU 0.2 with a bias before each inner
convolution), no normalisation layers of any kind, and bilinear resampling between stages (the [1, 2, 1] filter
convolved with a box: the FIR kernel [1, 3, 3, 1]). Stability without normalisation comes from a fix-up style
initialisation (Zhang et al., 2019): every residual branch ends in a zero-initialised convolution, so every block is
the identity at init, and the branch's other convolutions are drawn MSR-style with their gain scaled by
L^(-1/(2m-2)), L the number of residual blocks in the network and m = 3 the convolutions per branch.

G: [z, embed(y)] -> linear -> per-channel gains of a learned 4x4 basis -> stages (1x1 channel change, 2x upsample,
blocks) -> 1x1 convolution to the image (linear output, no tanh, as in the paper). D mirrors it: 1x1 convolution from
the image -> stages (blocks, 2x downsample, 1x1 channel change) -> a depthwise 4x4 convolution that collapses the 4x4
map (the discriminative basis) -> linear to the score, or for class-conditional D to an embedding projected on the
class embedding, <phi(x), embed(y)> (the paper's conditional D, a projection discriminator without the
unconditional term).

Stage widths are given low to high resolution for both players (``widths[i]`` is the width at 4 * 2**i px), so
one list configures both. By default they follow the paper's CIFAR-10 / FFHQ configs: min(768, 768 * 32 / r)
channels at r px (768 everywhere at 32 px; 768, 768, 768, 768, 384, 192, 96 at 4..256 px), two blocks per stage,
expansion 2, and 16 channels per group (cardinality = widths * expansion / 16: 96 at width 768).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.nets.conditional import check_labels
from modules.nets.fir import downsample2d, fir_kernel, upsample2d

LEAKY_SLOPE = 0.2
LEAKY_GAIN = math.sqrt(2 / (1 + LEAKY_SLOPE**2))  # He et al. (2015): keeps the variance through leaky ReLU 0.2
CONVS_PER_BRANCH = 3  # m in the fix-up scaling L^(-1/(2m-2))
PAPER_MAX_WIDTH = 768
PAPER_CHANNEL_BASE = 768 * 32
PAPER_GROUP_CHANNELS = 16


def msr_init_(layer: nn.Module, gain: float = 1.0) -> nn.Module:
    """Weights ~ N(0, (gain / sqrt(fan_in))^2) (MSR/He init; fan_in counts one group's inputs), no bias."""
    fan_in = layer.weight[0].numel()
    with torch.no_grad():
        layer.weight.normal_(0.0, gain / math.sqrt(fan_in))
    return layer


def conv2d(in_channels: int, out_channels: int, kernel_size: int = 1, groups: int = 1, gain: float = 1.0) -> nn.Conv2d:
    """A bias-free 'same' convolution with MSR init (R3GAN puts the biases in the activations)."""
    return msr_init_(nn.Conv2d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2,
                               groups=groups, bias=False), gain)


def fixup_gain(num_blocks: int) -> float:
    """The gain of a residual branch's inner convolutions in a network of ``num_blocks`` blocks (fix-up init)."""
    return LEAKY_GAIN * num_blocks ** (-1 / (2 * CONVS_PER_BRANCH - 2))


class BiasedLeakyReLU(nn.Module):
    """leaky_relu(x + b, 0.2) with a per-channel bias starting at zero."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x + self.bias.to(x.dtype).view(1, -1, 1, 1), LEAKY_SLOPE)


class InvertedBottleneck(nn.Module):
    """x + project(act(grouped_conv(act(expand(x))))): the paper's residual block (Fig. 4, config E).

    expand: 1x1, channels -> channels * expansion; grouped: kxk with ``cardinality`` groups; project: 1x1 back,
    zero at init (the block starts as the identity). ``num_blocks`` is L, the blocks in the whole network.
    """

    def __init__(self, channels: int, cardinality: int, expansion: int, kernel_size: int, num_blocks: int):
        super().__init__()
        inner = channels * expansion
        gain = fixup_gain(num_blocks)
        self.expand = conv2d(channels, inner, 1, gain=gain)
        self.act1 = BiasedLeakyReLU(inner)
        self.grouped = conv2d(inner, inner, kernel_size, groups=cardinality, gain=gain)
        self.act2 = BiasedLeakyReLU(inner)
        self.project = conv2d(inner, channels, 1, gain=0.0)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.project(self.act2(self.grouped(self.act1(self.expand(x)))))


class FIRResample(nn.Module):
    """2x up- or downsampling with the FIR kernel ``taps`` (depthwise; a constant image stays constant inside)."""

    def __init__(self, taps: Sequence[int], up: bool):
        super().__init__()
        self.up = up
        self.register_buffer("kernel", fir_kernel(tuple(taps)), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        kernel = self.kernel.to(x.dtype)
        return upsample2d(x, kernel) if self.up else downsample2d(x, kernel)


class UpTransition(nn.Module):
    """G between stages: 1x1 convolution to the next width (if it changes), then 2x upsampling."""

    def __init__(self, in_channels: int, out_channels: int, taps: Sequence[int]):
        super().__init__()
        self.conv = conv2d(in_channels, out_channels) if in_channels != out_channels else nn.Identity()
        self.resample = FIRResample(taps, up=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.resample(self.conv(x))


class DownTransition(nn.Module):
    """D between stages: 2x downsampling, then 1x1 convolution to the next width (if it changes)."""

    def __init__(self, in_channels: int, out_channels: int, taps: Sequence[int]):
        super().__init__()
        self.resample = FIRResample(taps, up=False)
        self.conv = conv2d(in_channels, out_channels) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.resample(x))


class GenerativeBasis(nn.Module):
    """(N, in_features) -> (N, C, 4, 4): a learned 4x4 basis per channel (N(0, 1)) times a linear gain of the input."""

    def __init__(self, in_features: int, channels: int):
        super().__init__()
        self.basis = nn.Parameter(torch.randn(channels, 4, 4))
        self.linear = msr_init_(nn.Linear(in_features, channels, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.basis.unsqueeze(0) * self.linear(x)[:, :, None, None]


class DiscriminativeBasis(nn.Module):
    """(N, C, 4, 4) -> (N, out_features): a depthwise 4x4 convolution (one learned basis per channel), then linear."""

    def __init__(self, channels: int, out_features: int):
        super().__init__()
        self.basis = msr_init_(nn.Conv2d(channels, channels, 4, groups=channels, bias=False))
        self.linear = msr_init_(nn.Linear(channels, out_features, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.basis(x).flatten(1))


def class_embedding(num_classes: int, dim: int, gain: float = 1.0) -> nn.Embedding:
    """Labels -> vectors, drawn as the paper's bias-free linear layer on one-hot labels (MSR, fan_in = classes)."""
    embed = nn.Embedding(num_classes, dim)
    with torch.no_grad():
        embed.weight.normal_(0.0, gain / math.sqrt(num_classes))
    return embed


def stage_config(owner: str, resolution: int, widths: Sequence[int] | None, cardinalities: Sequence[int] | None,
                 blocks_per_stage: int | Sequence[int], expansion: int) -> tuple[list[int], list[int], list[int]]:
    """Per-stage widths, cardinalities and block counts at 4, 8, ..., resolution px (low to high), checked."""
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"{owner}: resolution must be a power of two >= 8, got {resolution}")
    stages = int(math.log2(resolution)) - 1
    if widths is None:
        widths = [min(PAPER_MAX_WIDTH, PAPER_CHANNEL_BASE // (4 * 2**i)) for i in range(stages)]
    if cardinalities is None:
        cardinalities = [max(1, w * expansion // PAPER_GROUP_CHANNELS) for w in widths]
    if isinstance(blocks_per_stage, int):
        blocks_per_stage = [blocks_per_stage] * stages
    widths, cardinalities, blocks = list(widths), list(cardinalities), list(blocks_per_stage)
    for name, values in (("widths", widths), ("cardinalities", cardinalities), ("blocks_per_stage", blocks)):
        if len(values) != stages:
            raise ValueError(f"{owner}: {name} needs one entry per stage at 4..{resolution} px ({stages}), "
                             f"got {len(values)}: {values}")
    if expansion < 1 or min(widths) < 1 or min(cardinalities) < 1 or min(blocks) < 0:
        raise ValueError(f"{owner}: expansion, widths and cardinalities must be >= 1 and blocks_per_stage >= 0, "
                         f"got expansion={expansion}, widths={widths}, cardinalities={cardinalities}, "
                         f"blocks_per_stage={blocks}")
    for i, (w, c) in enumerate(zip(widths, cardinalities, strict=True)):
        if (w * expansion) % c:
            raise ValueError(f"{owner}: cardinalities[{i}]={c} must divide widths[{i}] * expansion = "
                             f"{w * expansion}; pass cardinalities that do")
    if sum(blocks) == 0:
        raise ValueError(f"{owner}: blocks_per_stage must give at least one residual block, got {blocks}")
    return widths, cardinalities, blocks


class R3GANGenerator(nn.Module):
    """z (N, latent_dim) [, y (N,)] -> images (N, channels, resolution, resolution), a linear output.

    Args:
        latent_dim: size of z (the paper: 64).
        resolution: output side, a power of two >= 8.
        channels: output channels.
        widths: channels of the stages at 4, 8, ..., resolution px (None: the paper's, see the module docstring).
        cardinalities: groups of each stage's grouped convolution (None: 16 channels per group).
        blocks_per_stage: residual blocks per stage, one number for all or one per stage (the paper: 2).
        expansion: inverted-bottleneck expansion factor (the paper: 2).
        num_classes: > 0 makes G class-conditional: z is concatenated with a learned class embedding.
        class_embed_dim: size of that embedding (None: latent_dim, the paper's choice).
        kernel_size: the grouped convolutions' kernel.
        resample_taps: the 1-D FIR kernel of the 2x upsampling ([1, 2, 1] * [1, 1]: bilinear).
    """

    def __init__(self, latent_dim: int = 64, resolution: int = 32, channels: int = 3,
                 widths: list[int] | None = None, cardinalities: list[int] | None = None,
                 blocks_per_stage: int | list[int] = 2, expansion: int = 2, num_classes: int = 0,
                 class_embed_dim: int | None = None, kernel_size: int = 3,
                 resample_taps: tuple[int, ...] = (1, 3, 3, 1)):
        super().__init__()
        owner = type(self).__name__
        widths, cardinalities, blocks = stage_config(owner, resolution, widths, cardinalities, blocks_per_stage,
                                                     expansion)
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        embed_dim = (class_embed_dim or latent_dim) if num_classes > 0 else 0
        self.embed = class_embedding(num_classes, embed_dim) if num_classes > 0 else None
        num_blocks = sum(blocks)
        layers: list[nn.Module] = [GenerativeBasis(latent_dim + embed_dim, widths[0])]
        for i, (w, c, b) in enumerate(zip(widths, cardinalities, blocks, strict=True)):
            if i > 0:
                layers.append(UpTransition(widths[i - 1], w, resample_taps))
            layers.extend(InvertedBottleneck(w, c, expansion, kernel_size, num_blocks) for _ in range(b))
        self.layers = nn.Sequential(*layers)
        self.to_image = conv2d(widths[-1], channels)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            check_labels(y, self.num_classes, type(self).__name__)
            z = torch.cat([z, self.embed(y).to(z.dtype)], dim=1)
        return self.to_image(self.layers(z))


class R3GANDiscriminator(nn.Module):
    """images (N, channels, resolution, resolution) [, y (N,)] -> one raw score per image (N,).

    Args:
        resolution, channels, widths, cardinalities, blocks_per_stage, expansion, kernel_size: as for
            R3GANGenerator; ``widths`` is ordered low to high resolution here too (D runs it backwards).
        num_classes: > 0 makes D a projection discriminator: score = <phi(x), embed(y)>.
        class_embed_dim: size of phi(x) and embed(y) (None: widths[0], the paper's choice).
        resample_taps: the 1-D FIR kernel of the 2x downsampling.
    """

    def __init__(self, resolution: int = 32, channels: int = 3, widths: list[int] | None = None,
                 cardinalities: list[int] | None = None, blocks_per_stage: int | list[int] = 2, expansion: int = 2,
                 num_classes: int = 0, class_embed_dim: int | None = None, kernel_size: int = 3,
                 resample_taps: tuple[int, ...] = (1, 3, 3, 1)):
        super().__init__()
        owner = type(self).__name__
        widths, cardinalities, blocks = stage_config(owner, resolution, widths, cardinalities, blocks_per_stage,
                                                     expansion)
        self.num_classes = num_classes
        embed_dim = (class_embed_dim or widths[0]) if num_classes > 0 else 0
        num_blocks = sum(blocks)
        self.from_image = conv2d(channels, widths[-1])
        layers: list[nn.Module] = []
        for i in reversed(range(len(widths))):
            layers.extend(InvertedBottleneck(widths[i], cardinalities[i], expansion, kernel_size, num_blocks)
                          for _ in range(blocks[i]))
            if i > 0:
                layers.append(DownTransition(widths[i], widths[i - 1], resample_taps))
        layers.append(DiscriminativeBasis(widths[0], embed_dim or 1))
        self.layers = nn.Sequential(*layers)
        # the paper's gain 1/sqrt(dim) keeps the projected score at unit scale
        self.embed = class_embedding(num_classes, embed_dim, 1 / math.sqrt(embed_dim)) if num_classes > 0 else None

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        features = self.layers(self.from_image(x))
        if self.embed is None:
            return features.squeeze(1)
        check_labels(y, self.num_classes, type(self).__name__)
        return (features * self.embed(y).to(features.dtype)).sum(dim=1)
