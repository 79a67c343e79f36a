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
    """The two players' objectives. ``probabilistic`` says whether sigmoid(score) is a probability;
    ``relativistic`` whether the generator's loss also reads D's scores of reals (the game then scores a real
    batch in G's step, with D frozen)."""

    probabilistic: bool = True
    relativistic: bool = False

    def discriminator(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        raise NotImplementedError

    def generator(self, fake_scores: Tensor, real_scores: Tensor | None = None) -> Tensor:
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

    def generator(self, fake_scores: Tensor, real_scores: Tensor | None = None) -> Tensor:
        return -F.softplus(fake_scores).mean()


class NonSaturatingLoss(MinimaxLoss):
    """The heuristic of Goodfellow et al. (2014): G maximises log D(G(z)) instead.

    L_D as in the minimax game;  L_G = -E[log D(G(z))]   (strong gradients early in training)
    """

    def generator(self, fake_scores: Tensor, real_scores: Tensor | None = None) -> Tensor:
        return F.softplus(-fake_scores).mean()


class LeastSquaresLoss(GANLoss):
    """Mao et al. (2017), LSGAN with targets a=0 (fake), b=1 (real), c=1 (G's target).

    L_D = 1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2];   L_G = 1/2 E[(D(G(z)) - 1)^2]
    """

    probabilistic = False

    def discriminator(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        return 0.5 * ((real_scores - 1) ** 2).mean() + 0.5 * (fake_scores**2).mean()

    def generator(self, fake_scores: Tensor, real_scores: Tensor | None = None) -> Tensor:
        return 0.5 * ((fake_scores - 1) ** 2).mean()


class HingeLoss(GANLoss):
    """Lim & Ye (2017) / Miyato et al. (2018), the SNGAN hinge loss.

    L_D = E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))];   L_G = -E[D(G(z))]
    """

    probabilistic = False

    def discriminator(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        return torch.relu(1 - real_scores).mean() + torch.relu(1 + fake_scores).mean()

    def generator(self, fake_scores: Tensor, real_scores: Tensor | None = None) -> Tensor:
        return -fake_scores.mean()


class WassersteinLoss(GANLoss):
    """Arjovsky et al. (2017): the critic estimates W1 = E[D(x)] - E[D(G(z))] under a Lipschitz bound.

    L_D = E[D(G(z))] - E[D(x)];   L_G = -E[D(G(z))]
    The bound comes from a regularizer: weight clipping (WGAN) or a gradient penalty (WGAN-GP).
    """

    probabilistic = False

    def discriminator(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        return fake_scores.mean() - real_scores.mean()

    def generator(self, fake_scores: Tensor, real_scores: Tensor | None = None) -> Tensor:
        return -fake_scores.mean()


class RelativisticPairingLoss(GANLoss):
    """Huang et al. (2024), R3GAN's RpGAN (Jolicoeur-Martineau, 2019): each player scores a real against a paired fake.

    L_D = E[softplus(-(D(x_i) - D(G(z_i))))];   L_G = E[softplus(-(D(G(z_i)) - D(x_i)))]
    Pairs are the i-th real and the i-th fake of a batch (equal sizes). With R1 and R2 penalties it converges
    locally where the classic loss may not (R3GAN, Sec. 2); D(x) in G's loss carries no gradient to G.
    """

    probabilistic = False
    relativistic = True

    def discriminator(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        return F.softplus(fake_scores - real_scores).mean()

    def generator(self, fake_scores: Tensor, real_scores: Tensor | None = None) -> Tensor:
        if real_scores is None:
            raise ValueError("RelativisticPairingLoss.generator needs real_scores: D's scores of the reals paired "
                             "with the fakes")
        return F.softplus(real_scores - fake_scores).mean()
