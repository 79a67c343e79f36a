"""Kernel distance (KID when the features are Inception's): unbiased MMD^2 with the cubic polynomial kernel.

k(x, y) = (x . y / d + 1)^3 (Binkowski et al., 2018). Averaged over random subsets, as in their code and
in StyleGAN2-ADA's metrics, which bounds memory and gives a standard deviation.
"""

from __future__ import annotations

import torch
from torch import Tensor


def mmd2_polynomial(x: Tensor, y: Tensor) -> Tensor:
    """Unbiased MMD^2 between feature sets x (m, d) and y (n, d)."""
    d = x.shape[1]
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    m, n = x.shape[0], y.shape[0]
    sum_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    sum_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return sum_xx + sum_yy - 2 * k_xy.mean()


def kernel_distance(real: Tensor, fake: Tensor, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation of MMD^2 over ``subsets`` random subsets of both sets (float64)."""
    real, fake = real.detach().double().cpu(), fake.detach().double().cpu()
    size = min(subset_size, real.shape[0], fake.shape[0])
    if size < 2:
        raise ValueError(f"kernel distance needs at least 2 samples per set, got {size}")
    gen = torch.Generator().manual_seed(seed)
    values = torch.stack([
        mmd2_polynomial(real[torch.randperm(real.shape[0], generator=gen)[:size]],
                        fake[torch.randperm(fake.shape[0], generator=gen)[:size]])
        for _ in range(subsets)
    ])
    return float(values.mean()), float(values.std(unbiased=False))
