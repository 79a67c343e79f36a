"""Adversarial losses as small objects: each turns discriminator outputs into the two players' losses.

Discriminators return raw scores (logits) of shape (N,) or (N, 1). Probabilistic losses read them as
D(x) = sigmoid(score); Wasserstein and hinge losses use the scores directly. Every loss is a mean over
the batch, so its value does not depend on batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class GANLoss:
    """The two players' objectives. ``probabilistic`` says whether sigmoid(score) is a probability."""

    probabilistic: bool = True

    def discriminator(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        raise NotImplementedError

    def generator(self, fake_scores: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MinimaxLoss(GANLoss):
    """Goodfellow et al. (2014), the value function V(D, G) = E[log D(x)] + E[log(1 - D(G(z)))].

    D maximises V:   L_D = -E[log D(x)] - E[log(1 - D(G(z)))]
    G minimises V:   L_G =  E[log(1 - D(G(z)))]      (saturates: no gradient when D rejects fakes)
    """

    def discriminator(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        # -log sigmoid(s) = softplus(-s);  -log(1 - sigmoid(s)) = softplus(s)
        return F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()

    def generator(self, fake_scores: Tensor) -> Tensor:
        return -F.softplus(fake_scores).mean()


class NonSaturatingLoss(MinimaxLoss):
    """The heuristic of Goodfellow et al. (2014): G maximises log D(G(z)) instead.

    L_D as in the minimax game;  L_G = -E[log D(G(z))]   (strong gradients early in training)
    """

    def generator(self, fake_scores: Tensor) -> Tensor:
        return F.softplus(-fake_scores).mean()


class LeastSquaresLoss(GANLoss):
    """Mao et al. (2017), LSGAN with targets a=0 (fake), b=1 (real), c=1 (G's target).

    L_D = 1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2];   L_G = 1/2 E[(D(G(z)) - 1)^2]
    """

    probabilistic = False

    def discriminator(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        return 0.5 * ((real_scores - 1) ** 2).mean() + 0.5 * (fake_scores**2).mean()

    def generator(self, fake_scores: Tensor) -> Tensor:
        return 0.5 * ((fake_scores - 1) ** 2).mean()


class HingeLoss(GANLoss):
    """Lim & Ye (2017) / Miyato et al. (2018), the SNGAN hinge loss.

    L_D = E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))];   L_G = -E[D(G(z))]
    """

    probabilistic = False

    def discriminator(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        return torch.relu(1 - real_scores).mean() + torch.relu(1 + fake_scores).mean()

    def generator(self, fake_scores: Tensor) -> Tensor:
        return -fake_scores.mean()


class WassersteinLoss(GANLoss):
    """Arjovsky et al. (2017): the critic estimates W1 = E[D(x)] - E[D(G(z))] under a Lipschitz bound.

    L_D = E[D(G(z))] - E[D(x)];   L_G = -E[D(G(z))]
    The bound comes from a regularizer: weight clipping (WGAN) or a gradient penalty (WGAN-GP).
    """

    probabilistic = False

    def discriminator(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        return fake_scores.mean() - real_scores.mean()

    def generator(self, fake_scores: Tensor) -> Tensor:
        return -fake_scores.mean()
