"""Affine warping of image batches by bilinear sampling with reflection, differentiable twice.

ADA's R1 penalty is the gradient of D(augment(x)) with respect to the un-augmented x (Karras et al., 2020,
App. B), so the penalty's own gradient needs second derivatives through the geometric warp. PyTorch's
``grid_sample`` has no double backward; here the four bilinear neighbours are read with ``gather`` and mixed
with weights that depend only on the (non-differentiated) matrix, so the output is linear in x and autograd
can differentiate it any number of times. Pixels sampled outside the image are mirrored back in (the
paper's reflection padding, which keeps a transform from "leaking" a border into what D sees).
"""

from __future__ import annotations

import torch
from torch import Tensor


def reflect_index(index: Tensor, size: int) -> Tensor:
    """Positions (integer or not) folded into [0, size - 1] by mirroring about the edge pixels (``F.pad``'s
    "reflect" mode: ... c b | a b c d | c b a ...), for any distance outside; all 0 when size is 1."""
    period = max(2 * size - 2, 1)
    index = torch.remainder(index, period)
    return torch.minimum(index, period - index) if size > 1 else torch.zeros_like(index)


def warp(x: Tensor, matrix: Tensor) -> Tensor:
    """Resample each image of x (N, C, H, W) at ``matrix`` (N, 3, 3) times its output pixel positions.

    ``matrix`` maps an output pixel's position to the input position it reads, both in pixel units with the
    origin at the image centre (x to the right, y down): out(q) = x(matrix @ q). Bilinear interpolation of
    the reflection-padded image; as that interpolant is mirror-symmetric about the edge pixels, the position
    is folded into the image first. Integer positions read their pixel exactly (flips, quarter turns and
    integer shifts are lossless). Run it outside autocast (as ADAPipeline does): a bf16 matrix product
    would misplace the positions.
    """
    n, c, h, w = x.shape
    dtype = torch.promote_types(x.dtype, torch.float32)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    rows = torch.arange(h, device=x.device, dtype=dtype) - cy
    cols = torch.arange(w, device=x.device, dtype=dtype) - cx
    grid_y, grid_x = torch.meshgrid(rows, cols, indexing="ij")
    positions = torch.stack([grid_x.flatten(), grid_y.flatten(), torch.ones_like(grid_x.flatten())])  # (3, HW)
    source = matrix.to(dtype) @ positions  # (N, 3, HW)
    src_x, src_y = reflect_index(source[:, 0] + cx, w), reflect_index(source[:, 1] + cy, h)
    x0, y0 = torch.floor(src_x), torch.floor(src_y)
    fx, fy = src_x - x0, src_y - y0
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)  # weight 0 where clamped
    index = torch.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], dim=1)  # (N, 4, HW)
    weight = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], dim=1)
    corners = x.reshape(n, c, h * w).to(dtype).gather(2, index.reshape(n, 1, 4 * h * w).expand(n, c, -1))
    out = (corners.reshape(n, c, 4, h * w) * weight[:, None]).sum(dim=2)
    return out.reshape(n, c, h, w).to(x.dtype)
