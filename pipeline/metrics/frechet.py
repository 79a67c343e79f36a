"""Fréchet distance between Gaussians fitted to features (FID when the features are Inception's).

FD = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)), with Tr (S_1 S_2)^(1/2) computed as the sum of
square roots of the eigenvalues of S_1 S_2 (real and non-negative for covariance matrices), in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class FeatureStats:
    """Running first and second moments of features; sums, so ranks combine by all-reduce (sum)."""

    n: Tensor
    total: Tensor
    outer: Tensor

    @classmethod
    def empty(cls, dim: int, device: torch.device | str = "cpu") -> FeatureStats:
        z = torch.zeros((), dtype=torch.float64, device=device)
        return cls(z.clone(), torch.zeros(dim, dtype=torch.float64, device=device),
                   torch.zeros(dim, dim, dtype=torch.float64, device=device))

    def update(self, features: Tensor) -> None:
        f = features.detach().double().flatten(1)
        self.n += f.shape[0]
        self.total += f.sum(0)
        self.outer += f.T @ f

    def all_reduce(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for t in (self.n, self.total, self.outer):
                torch.distributed.all_reduce(t)

    def mean_cov(self) -> tuple[Tensor, Tensor]:
        """Mean and unbiased covariance (n - 1 in the denominator, as numpy.cov and pytorch-fid)."""
        if self.n < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, got {int(self.n)}")
        mu = self.total / self.n
        cov = (self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return mu, cov

    def state_dict(self) -> dict[str, Tensor]:
        return {"n": self.n.cpu(), "total": self.total.cpu(), "outer": self.outer.cpu()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> FeatureStats:
        return cls(state["n"].double(), state["total"].double(), state["outer"].double())


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    mu1, cov1, mu2, cov2 = (t.double().cpu() for t in (mu1, cov1, mu2, cov2))
    eigenvalues = torch.linalg.eigvals(cov1 @ cov2)
    tr_sqrt = eigenvalues.sqrt().real.sum()
    return float((mu1 - mu2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * tr_sqrt)


def frechet_distance_of(stats_a: FeatureStats, stats_b: FeatureStats) -> float:
    return frechet_distance(*stats_a.mean_cov(), *stats_b.mean_cov())
