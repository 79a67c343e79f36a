"""Regularizers: of the discriminator (weight clipping, gradient penalty, R1, R2, spectral norm) and of the
generator (StyleGAN2's path-length penalty)."""

from __future__ import annotations

import math
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


def r2_penalty(critic: Callable[[Tensor], Tensor], fake: Tensor) -> Tensor:
    """R2 (Mescheder et al., 2018; with R1 in R3GAN, Huang et al., 2024): E[||grad_x D(x)||^2] on generated data,
    with respect to the fakes themselves (no gradient reaches G); multiply by gamma/2 at the call site."""
    return r1_penalty(critic, fake)


def auto_r1_gamma(height: int, width: int, batch: int) -> float:
    """StyleGAN2-ADA's heuristic R1 weight (Karras et al., 2020b; its ``--cfg=auto``): gamma = 0.0002 * res^2 / batch,
    with res^2 = height * width and ``batch`` the global batch (all ranks): stronger for larger images, weaker
    for larger batches."""
    return 0.0002 * height * width / batch


class PathLengthPenalty(nn.Module):
    """StyleGAN2's path-length regularizer (Karras et al., 2020a, eq. 4): E_{w,y}[(||J_w^T y||_2 - a)^2].

    J_w is the Jacobian of ``generator.synthesis`` at w = ``generator.styles(z)``, y ~ N(0, I) / sqrt(H * W) is
    image-shaped noise (the scale keeps the length independent of the resolution), a the running mean of the
    lengths with decay ``decay`` (the ``pl_mean`` buffer: saved in checkpoints). For ws of shape (N, num_ws, w_dim)
    the length is sqrt(mean over the ws of ||J^T y||^2 per w), as the reference implementation; the penalty
    also differentiates through this step's update of the mean, as the reference does. It runs on the first
    N // ``batch_shrink`` samples of z (at least one). y is drawn from torch's global RNG: the game seeds it.
    """

    def __init__(self, decay: float = 0.01, batch_shrink: int = 2):
        super().__init__()
        if not 0 < decay <= 1 or batch_shrink < 1:
            raise ValueError(f"path length: decay must be in (0, 1] and batch_shrink >= 1, got {decay}, {batch_shrink}")
        self.decay, self.batch_shrink = decay, batch_shrink
        self.register_buffer("pl_mean", torch.zeros(()))

    def forward(self, generator: nn.Module, z: Tensor, labels: Tensor | None = None) -> Tensor:
        n = max(1, z.shape[0] // self.batch_shrink)
        ws = generator.styles(z[:n], None if labels is None else labels[:n])
        images = generator.synthesis(ws)
        noise = torch.randn_like(images) / math.sqrt(math.prod(images.shape[2:]))
        (grad,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
        lengths = grad.float().square().sum(dim=-1).reshape(n, -1).mean(dim=1).sqrt()
        mean = self.pl_mean.lerp(lengths.mean(), self.decay)
        self.pl_mean.copy_(mean.detach())
        return (lengths - mean).square().mean()


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
