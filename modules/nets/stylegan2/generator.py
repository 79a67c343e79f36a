"""The StyleGAN2 generator: mapping network, style mixing, truncation, synthesis network.

Style mixing regularization (Karras et al., 2019, Sec. 3.1): while training, with probability
``mixing_prob`` the ws from w_i..w_{num_ws-1} are replaced by those of a second z, at a cutoff drawn
uniformly from 1..num_ws-1 (one cutoff per batch, as NVlabs' loss does). The draws come from torch's global
RNG, which the game seeds per step (so training resumes bit-exactly); the cutoff is applied as a mask
(torch.where), so there is no data-dependent Python control flow for torch.compile to break on.
Truncation (Sec. 3.3 ibid.): w' = w_avg + psi * (w - w_avg) on the first ``truncation_cutoff`` ws.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from modules.nets.stylegan2.mapping import MappingNetwork
from modules.nets.stylegan2.synthesis import SynthesisNetwork, check_resolution


class StyleGAN2Generator(nn.Module):
    """z (N, latent_dim) [, labels (N,)] -> images (N, channels, R, R); ``styles`` and ``synthesis`` apart."""

    def __init__(self, latent_dim: int = 512, w_dim: int = 512, resolution: int = 1024, channels: int = 3,
                 num_classes: int = 0, mapping_layers: int = 8, mapping_lr_mul: float = 0.01,
                 channel_base: int = 32768, channel_max: int = 512, mixing_prob: float = 0.9,
                 w_avg_beta: float = 0.995):
        super().__init__()
        check_resolution(resolution, type(self).__name__)
        if not 0.0 <= mixing_prob <= 1.0:
            raise ValueError(f"StyleGAN2Generator: mixing_prob must be in [0, 1], got {mixing_prob}")
        if latent_dim < 1:
            raise ValueError(f"StyleGAN2Generator: latent_dim must be >= 1, got {latent_dim}")
        self.latent_dim, self.w_dim, self.num_classes = latent_dim, w_dim, num_classes
        self.resolution, self.channels, self.mixing_prob = resolution, channels, mixing_prob
        self.synthesis = SynthesisNetwork(w_dim, resolution, channels, channel_base, channel_max)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(latent_dim, w_dim, self.num_ws, num_classes, mapping_layers,
                                      mapping_lr_mul, w_avg_beta)

    def styles(self, z: Tensor, labels: Tensor | None = None, truncation_psi: float = 1.0,
               truncation_cutoff: int | None = None) -> Tensor:
        """ws (N, num_ws, w_dim): mapping, style mixing (training mode only), truncation toward w_avg."""
        ws = self.mapping(z, labels)
        if self.training and self.mixing_prob > 0:
            ws = self.mix_styles(ws, self.mapping(torch.randn_like(z), labels, update_w_avg=False))
        return self.mapping.truncate(ws, truncation_psi, truncation_cutoff)

    def mix_styles(self, ws: Tensor, other: Tensor) -> Tensor:
        """ws with rows >= cutoff from ``other``; cutoff ~ U{1..num_ws-1} with prob. mixing_prob, else num_ws."""
        cutoff = torch.randint(1, self.num_ws, (), device=ws.device)
        cutoff = torch.where(torch.rand((), device=ws.device) < self.mixing_prob, cutoff,
                             torch.full_like(cutoff, self.num_ws))
        layer = torch.arange(self.num_ws, device=ws.device)[None, :, None]
        return torch.where(layer < cutoff, ws, other)

    def forward(self, z: Tensor, labels: Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: str = "random") -> Tensor:
        return self.synthesis(self.styles(z, labels, truncation_psi, truncation_cutoff), noise_mode)
