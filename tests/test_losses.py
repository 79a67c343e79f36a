"""Each loss equals its formula on hand-computed inputs."""

import math

import pytest
import torch

from modules.losses import (
    HingeLoss,
    LeastSquaresLoss,
    MinimaxLoss,
    NonSaturatingLoss,
    RelativisticPairingLoss,
    WassersteinLoss,
)

REAL = torch.tensor([0.0, 2.0])
FAKE = torch.tensor([-1.0, 1.0])


def sig(s):
    return 1 / (1 + math.exp(-s))


def test_minimax_is_the_value_function():
    # L_D = -mean log D(x) - mean log(1 - D(G(z))), D = sigmoid(score)
    expected_d = -(math.log(sig(0)) + math.log(sig(2))) / 2 - (math.log(1 - sig(-1)) + math.log(1 - sig(1))) / 2
    expected_g = (math.log(1 - sig(-1)) + math.log(1 - sig(1))) / 2
    loss = MinimaxLoss()
    assert loss.discriminator(REAL, FAKE).item() == pytest.approx(expected_d, rel=1e-6)
    assert loss.generator(FAKE).item() == pytest.approx(expected_g, rel=1e-6)


def test_non_saturating_generator_maximises_log_d():
    expected_g = -(math.log(sig(-1)) + math.log(sig(1))) / 2
    loss = NonSaturatingLoss()
    assert loss.generator(FAKE).item() == pytest.approx(expected_g, rel=1e-6)
    assert loss.discriminator(REAL, FAKE).item() == pytest.approx(MinimaxLoss().discriminator(REAL, FAKE).item())


def test_non_saturating_gradient_does_not_vanish_where_minimax_saturates():
    # A confident D rejects the fake (score -10): minimax G's gradient ~ sigmoid(-10), NS's ~ 1.
    s = torch.tensor([-10.0], requires_grad=True)
    (g_mm,) = torch.autograd.grad(MinimaxLoss().generator(s), s)
    (g_ns,) = torch.autograd.grad(NonSaturatingLoss().generator(s), s)
    assert abs(g_mm.item()) < 1e-4
    assert abs(g_ns.item()) > 0.99


def test_least_squares():
    loss = LeastSquaresLoss()
    assert loss.discriminator(REAL, FAKE).item() == pytest.approx(0.5 * (1 + 1) / 2 + 0.5 * (1 + 1) / 2)
    assert loss.generator(FAKE).item() == pytest.approx(0.5 * (4 + 0) / 2)


def test_hinge():
    loss = HingeLoss()
    # relu(1 - [0, 2]) = [1, 0]; relu(1 + [-1, 1]) = [0, 2]
    assert loss.discriminator(REAL, FAKE).item() == pytest.approx(0.5 + 1.0)
    assert loss.generator(FAKE).item() == pytest.approx(0.0)


def test_wasserstein():
    loss = WassersteinLoss()
    assert loss.discriminator(REAL, FAKE).item() == pytest.approx(0.0 - 1.0)
    assert loss.generator(FAKE).item() == pytest.approx(0.0)


def test_relativistic_pairing_scores_each_real_against_its_fake():
    real, fake = torch.tensor([0.0, 2.0]), torch.tensor([1.0, -1.0])  # differences D(x) - D(G(z)) = [-1, 3]
    loss = RelativisticPairingLoss()
    assert loss.relativistic and not loss.probabilistic
    # L_D = mean softplus(-(D(x) - D(G(z)))), L_G = mean softplus(-(D(G(z)) - D(x))), softplus(t) = log(1 + e^t)
    expected_d = (math.log(1 + math.e**1) + math.log(1 + math.e**-3)) / 2
    expected_g = (math.log(1 + math.e**-1) + math.log(1 + math.e**3)) / 2
    assert loss.discriminator(real, fake).item() == pytest.approx(expected_d, rel=1e-6)
    assert loss.generator(fake, real).item() == pytest.approx(expected_g, rel=1e-6)
    # pairs, not all real x fake combinations: the order of the fakes matters
    assert loss.discriminator(real, fake.flip(0)).item() != pytest.approx(expected_d)
    with pytest.raises(ValueError, match="needs real_scores"):
        loss.generator(fake)
