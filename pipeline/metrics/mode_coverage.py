"""Mode coverage of 2-D mixtures, with the VEEGAN / PacGAN definitions.

A sample is high-quality if it lies within 3 standard deviations of its nearest mode's mean; a mode is
captured if at least one high-quality sample is nearest to it. Reverse KL compares the histogram of the
high-quality samples over their nearest modes (q) with the true, uniform one (p): KL(q || p). As in the
PacGAN reference code (fjxmlzn/PacGAN, MetricLogger), low-quality samples are left out of q, so q says
how the generator balances the modes it hits, and empty bins contribute 0.
"""

from __future__ import annotations

import math
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
    """Modes captured, share of high-quality samples and reverse KL for ``samples`` (N, 2).

    With no high-quality sample at all, q is undefined and the reverse KL is reported as inf.
    """
    samples, means = samples.detach().double().cpu(), means.double().cpu()
    nearest_dist, nearest = torch.cdist(samples, means).min(dim=1)
    good = nearest_dist < sigmas * std
    counts = torch.bincount(nearest[good], minlength=len(means)).double()
    captured = int((counts > 0).sum())
    if captured == 0:
        return ModeCoverage(0, 0.0, math.inf)
    q = counts[counts > 0] / counts.sum()
    reverse_kl = float((q * torch.log(q * len(means))).sum())
    return ModeCoverage(captured, float(good.double().mean()), reverse_kl)
