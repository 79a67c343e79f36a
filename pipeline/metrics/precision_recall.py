"""Fidelity and diversity as separate numbers, from k-nearest-neighbour balls around feature vectors.

Improved precision and recall (Kynkaanniemi et al., 2019, Eq. 1-3): the real (fake) manifold is the union of
balls around each real (fake) feature vector with radius the distance to its k-th nearest neighbour in the same
set; precision is the share of fakes inside the real manifold, recall the share of reals inside the fake one.
Density and coverage (Naeem et al., 2020, Eq. 5-6) use only the real balls, which outliers among the fakes
cannot inflate: density = (1 / kM) sum_j sum_i 1[Y_j in B(X_i, NND_k(X_i))], which counts how many real balls
hold each fake (about 1 when the sets match, above 1 where fakes crowd dense real regions); coverage = the share
of real balls holding at least one fake.

Balls are closed (distance <= radius), as in the papers' set definitions and StyleGAN2-ADA's code; prdc uses
open ones, which differs only where a distance equals a radius exactly (tied or duplicate points). k = 3, the
papers' choice (ADA uses 3; Naeem et al. 5). Distances are computed in chunks of reals, so memory grows with
the set size, not its square.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

_CHUNK = 1024  # rows of the distance matrix held at once


@dataclass(frozen=True)
class PrecisionRecall:
    precision: float
    recall: float
    density: float
    coverage: float

    def as_dict(self, prefix: str = "metrics/") -> dict[str, float]:
        return {f"{prefix}{name}": getattr(self, name) for name in ("precision", "recall", "density", "coverage")}


def knn_radii(features: Tensor, k: int) -> Tensor:
    """Distance from each row to its k-th nearest other row (the row itself, at distance 0, not counted)."""
    if not 1 <= k < len(features):
        raise ValueError(f"k-NN radii need 1 <= k < the number of feature vectors, got k={k} for {len(features)}")
    return torch.cat([torch.cdist(chunk, features).kthvalue(k + 1, dim=1).values
                      for chunk in features.split(_CHUNK)])


def precision_recall(real: Tensor, fake: Tensor, k: int = 3, device: torch.device | str | None = None
                     ) -> PrecisionRecall:
    """All four metrics of fake features (M, d) against real features (N, d), in float64 on ``device`` (default:
    where the features are), from one pass over the real-fake distances."""
    real = real.detach().to(device=device, dtype=torch.float64).flatten(1)
    fake = fake.detach().to(device=real.device, dtype=torch.float64).flatten(1)
    real_radii, fake_radii = knn_radii(real, k), knn_radii(fake, k)
    in_real_balls = torch.zeros(len(fake), dtype=torch.bool, device=real.device)  # per fake: inside any real ball
    real_balls_held = torch.zeros((), dtype=torch.long, device=real.device)  # (fake, real ball) pairs, fake inside
    in_fake_balls = covered = 0  # reals inside any fake ball; real balls holding a fake
    for chunk, radii in zip(real.split(_CHUNK), real_radii.split(_CHUNK), strict=True):
        distances = torch.cdist(chunk, fake)  # (chunk of reals, all fakes)
        inside = distances <= radii[:, None]
        in_real_balls |= inside.any(dim=0)
        real_balls_held += inside.sum()
        in_fake_balls += int((distances <= fake_radii[None, :]).any(dim=1).sum())
        covered += int(inside.any(dim=1).sum())
    n, m = len(real), len(fake)
    return PrecisionRecall(precision=int(in_real_balls.sum()) / m, recall=in_fake_balls / n,
                           density=int(real_balls_held) / (k * m), coverage=covered / n)
