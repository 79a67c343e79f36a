"""Regularizers that bound or smooth the discriminator: weight clipping, gradient penalty, R1, spectral norm."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def clip_weights_(discriminator: nn.Module, clip: float) -> None:
    """WGAN (Arjovsky et al., 2017): clamp every critic parameter to [-clip, clip] after each critic step."""
    with torch.no_grad():
        for p in discriminator.parameters():
            p.clamp_(-clip, clip)


def gradient_penalty(
    critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """WGAN-GP (Gulrajani et al., 2017): E[(||grad_x D(x_hat)||_2 - 1)^2] on x_hat = eps*x + (1-eps)*G(z).

    ``critic`` maps a batch to scores; eps ~ U[0, 1] is drawn per sample from ``generator``.
    """
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(shape, device=real.device, dtype=real.dtype, generator=generator)
    x_hat = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def r1_penalty(critic: Callable[[Tensor], Tensor], real: Tensor) -> Tensor:
    """R1 (Mescheder et al., 2018): E[||grad_x D(x)||^2] on real data; multiply by gamma/2 at the call site."""
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(real).sum(), real, create_graph=True)
    return grad.flatten(1).pow(2).sum(dim=1).mean()


_SPECTRAL_NORM_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Miyato et al. (2018): divide each weight layer's weight by its largest singular value (power iteration).

    Applies to every Linear/Conv/Embedding layer that is not normalised already; returns ``module``.
    """
    for layer in list(module.modules()):
        if isinstance(layer, _SPECTRAL_NORM_LAYERS) and not _has_spectral_norm(layer):
            nn.utils.parametrizations.spectral_norm(layer)
    return module


def _has_spectral_norm(layer: nn.Module) -> bool:
    parametrizations = getattr(layer, "parametrizations", {})
    return "weight" in parametrizations
