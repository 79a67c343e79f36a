"""Mode coverage of 2-D mixtures, with the VEEGAN / PacGAN definitions.

A sample is high-quality if it lies within 3 standard deviations of its nearest mode's mean; a mode is
captured if at least one high-quality sample is nearest to it. Reverse KL compares the histogram of
generated samples over their nearest modes (q) with the true, uniform one (p): KL(q || p).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ModeCoverage:
    modes: int
    high_quality: float
    reverse_kl: float

    def as_dict(self, prefix: str = "modes/") -> dict[str, float]:
        return {f"{prefix}captured": float(self.modes), f"{prefix}high_quality": self.high_quality,
                f"{prefix}reverse_kl": self.reverse_kl}


def mode_coverage(samples: Tensor, means: Tensor, std: float, sigmas: float = 3.0) -> ModeCoverage:
    """Modes captured, share of high-quality samples and reverse KL for ``samples`` (N, 2)."""
    samples, means = samples.detach().double().cpu(), means.double().cpu()
    dist = torch.cdist(samples, means)
    nearest_dist, nearest = dist.min(dim=1)
    good = nearest_dist <= sigmas * std
    captured = torch.unique(nearest[good]).numel()
    q = torch.bincount(nearest, minlength=len(means)).double() / len(samples)
    p = 1.0 / len(means)
    support = q > 0
    reverse_kl = float((q[support] * torch.log(q[support] / p)).sum())
    return ModeCoverage(captured, float(good.double().mean()), reverse_kl)
