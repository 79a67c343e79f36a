"""StyleGAN's mapping network (Karras et al., 2019, Sec. 2; StyleGAN2-ADA's conditional version).

z -> w through ``num_layers`` fully connected layers (leaky ReLU, equalized lr with lr_mul = 0.01, so the
mapping learns 100x slower than the rest). z is normalised to unit second moment ("pixel norm"); a class
label enters as an embedding of its one-hot code, normalised the same way and concatenated to z
(NVlabs' MappingNetwork). While training, ``w_avg`` tracks the mean w (w_avg <- lerp(mean_w, w_avg,
beta)) for the truncation trick: w' = w_avg + psi * (w - w_avg) (Karras et al., 2019, Sec. 3.3).
With ``latent_dim=0`` it maps labels alone (the projection discriminator's class embedding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.nets.conditional import check_labels
from modules.nets.equalized import EqualizedLinear


def normalize_2nd_moment(x: Tensor, eps: float = 1e-8) -> Tensor:
    """x / sqrt(mean(x^2) + eps) over the feature dimension (StyleGAN's pixel norm of z)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """(z (N, latent_dim), labels (N,) int) -> w (N, w_dim), or (N, num_ws, w_dim) when ``num_ws`` is set."""

    def __init__(self, latent_dim: int, w_dim: int, num_ws: int | None = None, num_classes: int = 0,
                 num_layers: int = 8, lr_mul: float = 0.01, w_avg_beta: float | None = 0.995,
                 embed_dim: int | None = None, hidden_dim: int | None = None):
        super().__init__()
        if latent_dim == 0 and num_classes == 0:
            raise ValueError("MappingNetwork: needs latent_dim > 0 or num_classes > 0 (it would map nothing)")
        if num_layers < 1:
            raise ValueError(f"MappingNetwork: num_layers must be >= 1, got {num_layers}")
        self.latent_dim, self.w_dim, self.num_ws, self.num_classes = latent_dim, w_dim, num_ws, num_classes
        self.w_avg_beta = w_avg_beta
        embed_dim = w_dim if embed_dim is None else embed_dim
        self.embed = EqualizedLinear(num_classes, embed_dim) if num_classes > 0 else None
        hidden_dim = w_dim if hidden_dim is None else hidden_dim
        widths = [latent_dim + (embed_dim if num_classes > 0 else 0)] + [hidden_dim] * (num_layers - 1) + [w_dim]
        self.layers = nn.Sequential(*[EqualizedLinear(a, b, lr_mul=lr_mul, activation="lrelu")
                                      for a, b in zip(widths[:-1], widths[1:], strict=True)])
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: Tensor | None, labels: Tensor | None = None, update_w_avg: bool = True) -> Tensor:
        parts = [normalize_2nd_moment(z)] if self.latent_dim > 0 else []
        if self.embed is not None:
            check_labels(labels, self.num_classes, type(self).__name__)
            one_hot = F.one_hot(labels, self.num_classes).to(self.embed.weight.dtype)
            parts.append(normalize_2nd_moment(self.embed(one_hot)))
        w = self.layers(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0])
        if self.w_avg_beta is not None and self.training and update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        return w if self.num_ws is None else w[:, None].expand(-1, self.num_ws, -1)

    def truncate(self, ws: Tensor, psi: float, cutoff: int | None = None) -> Tensor:
        """w_avg + psi * (ws - w_avg) on the first ``cutoff`` of ws (N, num_ws, w_dim) (all when None)."""
        if psi == 1.0:
            return ws
        truncated = self.w_avg.to(ws.dtype).lerp(ws, psi)
        if cutoff is None:
            return truncated
        layer = torch.arange(ws.shape[1], device=ws.device)[None, :, None]
        return torch.where(layer < cutoff, truncated, ws)
