"""Equalized learning rate layers (Karras et al., 2018, ProGAN Sec. 4.1; StyleGAN's learning-rate multiplier).

Weights are stored as w ~ N(0, 1 / lr_mul**2) and scaled at run time by lr_mul / sqrt(fan_in), so the
effective weight lr_mul * w / sqrt(fan_in) starts He-scaled (unit-variance outputs for unit-variance
inputs) whatever the width, and Adam's step on the stored w moves the effective weight lr_mul times as
far: a layer with lr_mul = 0.01 (StyleGAN's mapping network) learns 100x slower. The bias is stored
divided by lr_mul and multiplied back, so it starts at ``bias_init`` and learns lr_mul times slower too.
``activation="lrelu"`` is leaky ReLU (slope 0.2) times sqrt(2), the gain that keeps the second moment
(NVlabs' bias_act def_gain).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.nets.fir import blur2d, fir_kernel

ACTIVATIONS = (None, "linear", "lrelu")


def apply_activation(x: Tensor, activation: str | None) -> Tensor:
    """None/"linear": identity; "lrelu": sqrt(2) * leaky_relu(x, 0.2)."""
    if activation == "lrelu":
        return F.leaky_relu(x, 0.2) * math.sqrt(2.0)
    return x


def _check(activation: str | None, lr_mul: float, owner: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"{owner}: activation must be one of {ACTIVATIONS}, got {activation!r}")
    if lr_mul <= 0:
        raise ValueError(f"{owner}: lr_mul must be > 0, got {lr_mul}")


class EqualizedLinear(nn.Module):
    """y = act(x @ (w * lr_mul / sqrt(in)).T + b * lr_mul)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, lr_mul: float = 1.0,
                 bias_init: float = 0.0, activation: str | None = None):
        super().__init__()
        _check(activation, lr_mul, type(self).__name__)
        self.activation = activation
        self.lr_mul = lr_mul
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias * self.lr_mul
        return apply_activation(F.linear(x, self.weight * self.weight_gain, bias), self.activation)


class EqualizedConv2d(nn.Module):
    """Equalized-lr convolution; ``down=2`` low-pass filters with the FIR kernel before a stride-2 convolution.

    The downsampling path is NVlabs' conv2d_resample: blur with padding (p + (f - 2 + 1) // 2, p + (f - 2) // 2)
    for a size-f filter and the convolution's own padding p, then the convolution with stride 2, unpadded.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 lr_mul: float = 1.0, bias_init: float = 0.0, activation: str | None = None,
                 padding: int | None = None, down: int = 1, resample_taps: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        _check(activation, lr_mul, type(self).__name__)
        if down not in (1, 2):
            raise ValueError(f"{type(self).__name__}: down must be 1 or 2, got {down}")
        self.activation = activation
        self.lr_mul = lr_mul
        self.down = down
        self.padding = kernel_size // 2 if padding is None else padding
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_channels,), float(bias_init) / lr_mul)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_channels * kernel_size * kernel_size)
        self.register_buffer("resample_kernel", fir_kernel(resample_taps) if down > 1 else None, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        weight = (self.weight * self.weight_gain).to(x.dtype)
        bias = None if self.bias is None else (self.bias * self.lr_mul).to(x.dtype)
        if self.down == 1:
            return apply_activation(F.conv2d(x, weight, bias, padding=self.padding), self.activation)
        f = self.resample_kernel.shape[-1]
        x = blur2d(x, self.resample_kernel, (self.padding + (f - self.down + 1) // 2,
                                             self.padding + (f - self.down) // 2))
        return apply_activation(F.conv2d(x, weight, bias, stride=self.down), self.activation)
