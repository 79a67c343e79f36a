"""FIR resampling (upfirdn2d) written with ordinary convolutions, so it needs no compiled extension.

StyleGAN2 (Karras et al., 2020, Sec. 2 and Appendix B, after Zhang 2019 "Making convolutional networks
shift-invariant again") low-pass filters every up- and downsampling with the separable binomial [1, 3, 3, 1]
kernel. The semantics follow NVlabs' upfirdn2d: a true convolution with the kernel, padded so that
upsample2d maps H -> factor*H and downsample2d maps H -> H/factor; upsample2d multiplies by factor**2 so
that a constant image stays that constant (zero insertion keeps only 1/factor**2 of the samples).
Every operation is depthwise (one kernel per channel) and works for any channel count and dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def fir_kernel(taps: Sequence[float] = (1, 3, 3, 1)) -> Tensor:
    """The separable 2-D kernel outer(taps, taps), normalised to sum 1 (unit DC gain), shape (k, k)."""
    t = torch.as_tensor(taps, dtype=torch.float32)
    if t.ndim != 1 or t.numel() == 0 or float(t.sum()) == 0.0:
        raise ValueError(f"taps must be a non-empty 1-D sequence with a non-zero sum, got {list(taps)}")
    kernel = torch.outer(t, t)
    return kernel / kernel.sum()


def _depthwise(kernel: Tensor, x: Tensor) -> Tensor:
    """The kernel as a depthwise conv weight (C, 1, k, k) in x's dtype and device."""
    return kernel.to(device=x.device, dtype=x.dtype)[None, None].expand(x.shape[1], 1, *kernel.shape)


def _pads(pad: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(pad, int):
        return pad, pad
    before, after = pad
    return int(before), int(after)


def blur2d(x: Tensor, kernel: Tensor, pad: int | Sequence[int]) -> Tensor:
    """Convolve each channel with ``kernel`` after zero-padding ``pad`` = p or (before, after) on both axes.

    Output size H + before + after - k + 1 (upfirdn2d with up = down = 1): e.g. pad = ((k - 1) // 2, k // 2)
    keeps the size. Padding may be negative (a crop).
    """
    before, after = _pads(pad)
    x = F.pad(x, [before, after, before, after])
    return F.conv2d(x, _depthwise(kernel.flip([0, 1]), x), groups=x.shape[1])  # flip: convolution, not correlation


def upsample2d(x: Tensor, kernel: Tensor, factor: int = 2) -> Tensor:
    """(N, C, H, W) -> (N, C, factor*H, factor*W): zero insertion, then the kernel times factor**2.

    NVlabs' padding (before (k + factor - 1) // 2, after (k - factor) // 2 around the zero-inserted image)
    is computed as one transposed convolution with stride ``factor`` (a true convolution of the
    zero-inserted image) whose full output is cropped to that window.
    """
    k = kernel.shape[-1]
    before, after = (k + factor - 1) // 2, (k - factor) // 2
    y = F.conv_transpose2d(x, _depthwise(kernel * factor**2, x), stride=factor, groups=x.shape[1])
    start = k - 1 - before  # the full transposed convolution pads k - 1 in front; keep `before` of it
    h, w = factor * x.shape[2] + before + after - k + 1, factor * x.shape[3] + before + after - k + 1
    return y[:, :, start:start + h, start:start + w]


def downsample2d(x: Tensor, kernel: Tensor, factor: int = 2) -> Tensor:
    """(N, C, H, W) -> (N, C, H/factor, W/factor): the kernel with padding ((k - factor + 1) // 2,
    (k - factor) // 2), then every factor-th sample (a strided depthwise convolution)."""
    k = kernel.shape[-1]
    before, after = (k - factor + 1) // 2, (k - factor) // 2
    x = F.pad(x, [before, after, before, after])
    return F.conv2d(x, _depthwise(kernel.flip([0, 1]), x), stride=factor, groups=x.shape[1])
