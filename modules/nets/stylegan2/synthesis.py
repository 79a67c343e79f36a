"""StyleGAN2's synthesis network (Karras et al., 2020, Sec. 2 and 4; the "skip" generator of Fig. 7a).

A learned 4x4 constant, then one block per resolution 8, 16, ..., R: an upsampling 3x3 modulated
convolution and a 3x3 modulated convolution, each followed by per-pixel noise with a learned strength,
a bias and leaky ReLU. Each block's 1x1 toRGB (modulated, not demodulated) output is added to the
FIR-upsampled image of the blocks before ("skip" architecture). Widths: min(channel_base // r, channel_max)
at resolution r (StyleGAN2-ADA's cbase/cmax). One w per convolution, plus one for the last toRGB:
num_ws = 2 * log2(R) - 2; a block's toRGB shares its w with the next block's first convolution (NVlabs).

Modulated convolution with demodulation (Sec. 2.2, Eq. 1-3): w'_ijk = s_i w_ijk, then
w''_ijk = w'_ijk / sqrt(sum_ik w'_ijk^2 + eps), so unit-variance inputs give unit-variance outputs.
``fused`` computes it as one grouped convolution with a per-sample weight (NVlabs' fused_modconv, used here in
eval on GPUs); otherwise the equal form "scale the input by s, convolve with the shared weight, scale the
output by the demodulation coefficients", a plain batched convolution: faster to train, and on CPUs in eval
too (3.4x faster than the grouped form for 100 samples of the 32 px Fashion-MNIST preset, 1 thread).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.nets.equalized import EqualizedLinear, apply_activation
from modules.nets.fir import blur2d, fir_kernel, upsample2d

NOISE_MODES = ("random", "const", "none")


def check_resolution(resolution: int, owner: str) -> None:
    if not isinstance(resolution, int) or resolution < 16 or resolution > 1024 or resolution & (resolution - 1):
        raise ValueError(f"{owner}: resolution must be a power of two in 16..1024, got {resolution!r}")


def stylegan_widths(resolution: int, channel_base: int, channel_max: int) -> dict[int, int]:
    """Channels at resolutions 4, 8, ..., resolution: min(channel_base // r, channel_max)."""
    return {4 * 2**i: min(channel_base // (4 * 2**i), channel_max) for i in range(int(math.log2(resolution)) - 1)}


def modulated_conv2d(x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool = True, up: int = 1,
                     resample_kernel: Tensor | None = None, fused: bool = False) -> Tensor:
    """Conv of x (N, I, H, W) with weight (O, I, k, k) modulated per sample by styles (N, I) [and demodulated].

    ``up=2`` is a stride-2 transposed convolution followed by the FIR low-pass (gain 4) with NVlabs'
    conv2d_resample padding, giving (N, O, 2H, 2W); ``up=1`` pads k // 2 and keeps the size.
    """
    n, in_channels, h, w_ = x.shape
    out_channels, _, kh, kw = weight.shape
    weight = weight.to(x.dtype)
    styles = styles.to(x.dtype)
    dcoefs = None
    if demodulate:  # 1 / sqrt(sum_ik (s_i w_jik)^2 + eps) = 1 / sqrt(s^2 . sum_k w_ji^2 + eps): (N, O)
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).T + 1e-8).rsqrt()
    if fused:
        w = weight[None] * styles[:, None, :, None, None]
        if dcoefs is not None:
            w = w * dcoefs[:, :, None, None, None]
        x = x.reshape(1, n * in_channels, h, w_)
        y = _resampled_conv(x, w.reshape(n * out_channels, in_channels, kh, kw), up, resample_kernel, groups=n)
        return y.reshape(n, out_channels, *y.shape[2:])
    y = _resampled_conv(x * styles[:, :, None, None], weight, up, resample_kernel, groups=1)
    return y if dcoefs is None else y * dcoefs[:, :, None, None]


def _resampled_conv(x: Tensor, weight: Tensor, up: int, resample_kernel: Tensor | None, groups: int) -> Tensor:
    """A (grouped) same-size convolution, or for up > 1 a transposed one then the FIR filter (conv2d_resample)."""
    kw = weight.shape[-1]
    if up == 1:
        return F.conv2d(x, weight, padding=kw // 2, groups=groups)
    out_per_group, in_per_group = weight.shape[0] // groups, weight.shape[1]
    transposed = weight.reshape(groups, out_per_group, in_per_group, kw, kw).transpose(1, 2)
    y = F.conv_transpose2d(x, transposed.reshape(groups * in_per_group, out_per_group, kw, kw), stride=up,
                           groups=groups)
    f = resample_kernel.shape[-1]
    pad = kw // 2
    return blur2d(y, resample_kernel * up**2, (pad + (f + up - 1) // 2 - (kw - 1), pad + (f - up) // 2 - (kw - up)))


def use_fused(module: nn.Module, x: Tensor) -> bool:
    """The grouped (fused) modulated convolution in eval on GPUs, as NVlabs does; the batched form elsewhere."""
    return not module.training and x.is_cuda


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv [upsampling], + noise * strength, + bias, leaky ReLU (gain sqrt 2)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: int = 1,
                 kernel_size: int = 3, resample_kernel: Tensor | None = None):
        super().__init__()
        self.up = up
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)  # styles start at 1: plain conv
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_kernel", resample_kernel, persistent=False)

    def forward(self, x: Tensor, w: Tensor, noise_mode: str = "random") -> Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w), up=self.up, resample_kernel=self.resample_kernel,
                             fused=use_fused(self, x))
        if noise_mode == "random":
            x = x + torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype) * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const.to(x.dtype) * self.noise_strength
        return apply_activation(x + self.bias.to(x.dtype)[:, None, None], "lrelu")


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation, + bias: features -> image channels."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int):
        super().__init__()
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=use_fused(self, x))
        return x + self.bias.to(x.dtype)[:, None, None]


class SynthesisBlock(nn.Module):
    """One resolution: [const | upsampling conv], conv, toRGB added to the upsampled image so far."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, image_channels: int,
                 resample_kernel: Tensor):
        super().__init__()
        self.register_buffer("resample_kernel", resample_kernel, persistent=False)
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
            self.conv0 = None
        else:
            self.const = None
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2,
                                        resample_kernel=resample_kernel)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGBLayer(out_channels, image_channels, w_dim)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def forward(self, x: Tensor | None, image: Tensor | None, ws: Tensor, noise_mode: str) -> tuple[Tensor, Tensor]:
        if self.conv0 is None:
            x = self.const.to(ws.dtype)[None].expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode)
            x = self.conv1(x, ws[:, 1], noise_mode)
        rgb = self.torgb(x, ws[:, self.num_conv])
        image = rgb if image is None else upsample2d(image, self.resample_kernel) + rgb
        return x, image


class SynthesisNetwork(nn.Module):
    """ws (N, num_ws, w_dim) -> images (N, channels, R, R), roughly in [-1, 1] (no output nonlinearity)."""

    def __init__(self, w_dim: int, resolution: int, channels: int, channel_base: int = 32768,
                 channel_max: int = 512, resample_taps: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        check_resolution(resolution, type(self).__name__)
        self.w_dim, self.resolution, self.channels = w_dim, resolution, channels
        widths = stylegan_widths(resolution, channel_base, channel_max)
        kernel = fir_kernel(resample_taps)
        self.blocks = nn.ModuleList()
        previous = 0
        for r, width in widths.items():
            self.blocks.append(SynthesisBlock(previous, width, w_dim, r, channels, kernel.clone()))
            previous = width
        self.num_ws = sum(block.num_conv for block in self.blocks) + self.blocks[-1].num_torgb

    def forward(self, ws: Tensor, noise_mode: str = "random") -> Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"SynthesisNetwork: ws must be (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        x = image = None
        first = 0
        for block in self.blocks:
            x, image = block(x, image, ws[:, first:first + block.num_conv + block.num_torgb], noise_mode)
            first += block.num_conv
        return image
