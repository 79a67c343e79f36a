"""DiffAugment (Zhao et al., 2020): differentiable augmentation of everything the discriminator sees.

Augmenting only the reals would teach G to produce augmented images; DiffAugment instead applies the same
policy to reals and fakes in D's step and to fakes in G's step, through ops that gradients pass, so D
trains on more varied data while G is still matched to the un-augmented distribution. The ops and their
ranges are those of the paper's code: colour (brightness +-0.5, saturation x[0, 2], contrast
x[0.5, 1.5]), translation by up to 1/8 of the side with zero fill, cutout of a square half the side.
Every random draw comes from the ``torch.Generator`` passed in, so a seeded game stays reproducible.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

_OPS = ("color", "translation", "cutout")


class DiffAugment:
    """Callable ``(x (N, C, H, W), generator) -> augmented x``, one independent draw per image.

    Args:
        policy: comma-separated ops applied in this order, from "color", "translation", "cutout"
            ("" for none: the identity).
        translation_ratio: largest shift as a fraction of the image side.
        cutout_ratio: side of the cut-out square as a fraction of the image side.
    """

    def __init__(self, policy: str = "color,translation,cutout", translation_ratio: float = 0.125,
                 cutout_ratio: float = 0.5):
        self.ops = [op.strip() for op in policy.split(",") if op.strip()]
        unknown = [op for op in self.ops if op not in _OPS]
        if unknown:
            raise ValueError(f"DiffAugment policy: unknown op(s) {unknown}; choose from {list(_OPS)}")
        self.policy = policy
        self.translation_ratio = translation_ratio
        self.cutout_ratio = cutout_ratio

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"DiffAugment works on image batches (N, C, H, W), got shape {tuple(x.shape)}")
        for op in self.ops:
            if op == "color":
                x = _color(x, generator)
            elif op == "translation":
                x = _translation(x, self.translation_ratio, generator)
            else:
                x = _cutout(x, self.cutout_ratio, generator)
        return x

    def __repr__(self) -> str:
        return f"DiffAugment(policy={self.policy!r})"


def _uniform(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """One U[0, 1) per image, shaped to broadcast over (C, H, W)."""
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype, generator=generator)


def _color(x: Tensor, generator: torch.Generator | None) -> Tensor:
    x = x + (_uniform(x, generator) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_uniform(x, generator) * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(x, generator) + 0.5) + mean  # contrast


def _randint(low: int, high: int, n: int, x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randint(low, high, (n, 1, 1), device=x.device, generator=generator)


def _translation(x: Tensor, ratio: float, generator: torch.Generator | None) -> Tensor:
    """Shift each image by integers in [-ratio * side, ratio * side]; vacated pixels become 0."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = _randint(-sh, sh + 1, n, x, generator)
    dx = _randint(-sw, sw + 1, n, x, generator)
    b, i, j = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                             torch.arange(w, device=x.device), indexing="ij")
    # read from a 1-pixel zero border: source indices that fall outside land on it
    i = (i + dy + 1).clamp(0, h + 1)
    j = (j + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    return padded[b, i, j].permute(0, 3, 1, 2)


def _cutout(x: Tensor, ratio: float, generator: torch.Generator | None) -> Tensor:
    """Zero one square of side ratio * side per image, centred anywhere in the image (clipped at edges)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = _randint(0, h + (1 - ch % 2), n, x, generator)
    cx = _randint(0, w + (1 - cw % 2), n, x, generator)
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    inside = ((rows >= cy - ch // 2) & (rows < cy - ch // 2 + ch) & (cols >= cx - cw // 2)
              & (cols < cx - cw // 2 + cw))
    return x * (~inside).to(x.dtype)[:, None]
