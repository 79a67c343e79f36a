"""Exponential moving average of the generator's weights, used for sampling and evaluation."""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema_copy(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` that ``update_ema`` keeps as the running average."""
    ema = copy.deepcopy(model)
    ema.requires_grad_(False)
    ema.eval()
    return ema


def ema_beta(half_life_kimg: float, batch_images: int, images_seen: int, rampup: float | None) -> float:
    """Decay per update, StyleGAN2-ADA style: the average's half-life is ``half_life_kimg`` thousand images.

    With ``rampup`` the half-life is capped at ``rampup * images_seen`` early on, so the average does not
    drag the random initial weights along for the first thousands of images.
    """
    half_life = half_life_kimg * 1000.0
    if rampup is not None:
        half_life = min(half_life, images_seen * rampup)
    if half_life <= 0:
        return 0.0
    return 0.5 ** (batch_images / half_life)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * model for parameters; buffers (BatchNorm statistics) are copied. One fused
    (foreach) kernel per tensor list rather than one launch per tensor: on a GPU a small step is launch-bound."""
    params, ema_params = list(model.parameters()), list(ema.parameters())
    buffers, ema_buffers = list(model.buffers()), list(ema.buffers())
    if len(params) != len(ema_params) or len(buffers) != len(ema_buffers):
        raise ValueError("update_ema: the EMA copy and the model have different parameters or buffers")
    if params:
        torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1.0 - beta)
    if buffers:
        torch._foreach_copy_(ema_buffers, buffers)
