"""Goodfellow et al. (2014), Proposition 1 and Theorem 1, checked numerically on two 1-D Gaussians.

For a fixed generator, the discriminator that maximises V(D, G) is D*(x) = p_data / (p_data + p_g), and
V(D*, G) = -log 4 + 2 * JSD(p_data || p_g).
"""

import math

import torch

from modules.losses import MinimaxLoss
from modules.nets.mlp import MLPDiscriminator

MU_DATA, MU_G, SIGMA = 0.0, 1.5, 1.0


def normal_pdf(x, mu):
    return torch.exp(-0.5 * ((x - mu) / SIGMA) ** 2) / (SIGMA * math.sqrt(2 * math.pi))


def train_discriminator(steps=1500, batch=1024):
    torch.manual_seed(0)
    d = MLPDiscriminator(in_dim=1, hidden=32, layers=2)
    opt = torch.optim.Adam(d.parameters(), lr=3e-3)
    loss = MinimaxLoss()
    for _ in range(steps):
        real = MU_DATA + SIGMA * torch.randn(batch, 1)
        fake = MU_G + SIGMA * torch.randn(batch, 1)  # the fixed generator: G(z) = mu_g + sigma * z
        opt.zero_grad()
        loss.discriminator(d(real), d(fake)).backward()
        opt.step()
    return d


def test_trained_discriminator_matches_optimum_and_value_matches_jsd():
    d = train_discriminator()
    x = torch.linspace(-10, 11.5, 40001, dtype=torch.float64).unsqueeze(1)
    dx = (x[1] - x[0]).item()
    p_data, p_g = normal_pdf(x, MU_DATA).squeeze(1), normal_pdf(x, MU_G).squeeze(1)
    d_star = p_data / (p_data + p_g)
    with torch.no_grad():
        d_learned = torch.sigmoid(d(x.float())).double().clamp(1e-12, 1 - 1e-12)

    # Where the data live (both densities non-negligible), D matches D* closely.
    inside = (x.squeeze(1) > -2) & (x.squeeze(1) < 3.5)
    assert (d_learned[inside] - d_star[inside]).abs().max().item() < 0.05

    # V(D, G) by quadrature: at D* it is -log 4 + 2 JSD; the learned D gets within 0.01 of it.
    def value(dd):
        return (p_data * torch.log(dd) + p_g * torch.log(1 - dd)).sum().item() * dx

    m = 0.5 * (p_data + p_g)
    jsd = 0.5 * ((p_data * torch.log(p_data / m)).sum() + (p_g * torch.log(p_g / m)).sum()).item() * dx
    assert abs(value(d_star) - (-math.log(4) + 2 * jsd)) < 1e-6
    assert abs(value(d_learned) - value(d_star)) < 0.01
    # and the game's value is above its global minimum -log 4 because p_g != p_data
    assert value(d_star) > -math.log(4) + 0.1
