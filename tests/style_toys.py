"""Small generators with StyleGAN2's duck type (``styles``, ``synthesis``) for the game's tests."""

import torch
from torch import nn


class NoisyStyleGenerator(nn.Module):
    """StyleGAN2's shape in miniature: z -> ws (N, num_ws, w_dim) with style mixing, and a synthesis with noise
    inputs, both drawing from torch's global RNG inside forward (as StyleGAN2 does)."""

    def __init__(self, latent_dim: int = 2, w_dim: int = 8, num_ws: int = 2, out: int = 2):
        super().__init__()
        self.latent_dim, self.num_classes, self.w_dim, self.num_ws = latent_dim, 0, w_dim, num_ws
        self.mapping = nn.Sequential(nn.Linear(latent_dim, num_ws * w_dim), nn.LeakyReLU(0.2))
        self.net = nn.Sequential(nn.Linear(num_ws * w_dim, 32), nn.LeakyReLU(0.2), nn.Linear(32, out))
        self.noise_strength = nn.Parameter(torch.tensor(0.1))

    def styles(self, z, labels=None):
        ws = self.mapping(z).view(-1, self.num_ws, self.w_dim)
        if self.training:  # style mixing: the last w from another z, for a random half of the samples
            other = self.mapping(torch.randn_like(z)).view_as(ws)
            mix = torch.rand(z.shape[0], 1, 1, device=z.device) < 0.5
            ws = torch.cat([ws[:, :-1], torch.where(mix, other[:, -1:], ws[:, -1:])], dim=1)
        return ws

    def synthesis(self, ws):
        h = ws.flatten(1)
        return self.net(h + self.noise_strength * torch.randn_like(h))

    def forward(self, z, labels=None):
        return self.synthesis(self.styles(z, labels))


class LinearStyleGenerator(nn.Module):
    """styles: a linear mapping z -> ws (N, num_ws, w_dim); synthesis: a fixed linear map A from the flattened ws to
    images (N, C, H, W). Its Jacobian is A, so J^T y = A^T y (the path-length penalty's known case)."""

    def __init__(self, latent_dim: int = 3, w_dim: int = 4, num_ws: int = 2, image_shape=(1, 2, 3)):
        super().__init__()
        self.latent_dim, self.num_classes, self.w_dim, self.num_ws = latent_dim, 0, w_dim, num_ws
        self.image_shape = tuple(image_shape)
        self.mapping = nn.Linear(latent_dim, num_ws * w_dim)
        pixels = int(torch.tensor(image_shape).prod())
        self.A = nn.Parameter(torch.randn(pixels, num_ws * w_dim))

    def styles(self, z, labels=None):
        return self.mapping(z).view(-1, self.num_ws, self.w_dim)

    def synthesis(self, ws):
        return (ws.flatten(1) @ self.A.T).view(-1, *self.image_shape)

    def forward(self, z, labels=None):
        return self.synthesis(self.styles(z, labels))
