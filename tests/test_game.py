"""The two-player alternation: who moves when, and what each player's step may touch."""

import copy

import pytest
import pytorch_lightning as pl
import torch

from datamodules.mixture_datamodule import MixtureDataModule
from modules.gan import GAN
from modules.losses import NonSaturatingLoss, RelativisticPairingLoss, WassersteinLoss
from modules.nets.mlp import MLPDiscriminator, MLPGenerator
from modules.regularizers import gradient_penalty, r1_penalty, r2_penalty


def make_gan(**kwargs) -> GAN:
    torch.manual_seed(0)
    return GAN(MLPGenerator(latent_dim=2, hidden=32, layers=2), MLPDiscriminator(hidden=32, layers=2), **kwargs)


def fit(model: GAN, max_steps: int, callbacks=(), **trainer_kwargs) -> pl.Trainer:
    trainer = pl.Trainer(accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0,
                         max_steps=max_steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks),
                         **trainer_kwargs)
    trainer.fit(model, MixtureDataModule(batch_size=64, batches_per_epoch=100))
    return trainer


def flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()


class StepRecorder(pl.Callback):
    """Snapshots both players around every optimizer step and at every batch end."""

    def __init__(self):
        self.events = []  # (what, G weights, D weights, G grads present, D grads present)

    def _record(self, what, pl_module):
        g, d = pl_module.generator, pl_module.discriminator
        self.events.append((what, flat(g), flat(d),
                            any(p.grad is not None for p in g.parameters()),
                            any(p.grad is not None for p in d.parameters())))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self._record("g" if optimizer is trainer.optimizers[0] else "d", pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._record("end", pl_module)


def test_each_step_moves_only_its_player_and_n_critic_is_honoured():
    recorder = StepRecorder()
    trainer = fit(make_gan(n_critic=3), max_steps=4, callbacks=[recorder])
    kinds = [e[0] for e in recorder.events]
    # 3 D steps per G step; global_step counts generator steps only.
    assert kinds[:8] == ["d", "end", "d", "end", "d", "g", "end", "d"]
    assert kinds.count("g") == 4 and kinds.count("d") == 12
    assert trainer.global_step == 4
    for (what, g0, d0, g_grad, d_grad), (_, g1, d1, _, _) in zip(recorder.events, recorder.events[1:], strict=False):
        if what == "d":  # between D's step and the next event only D moved; G holds no gradient
            assert torch.equal(g0, g1) and not torch.equal(d0, d1)
            assert not g_grad and d_grad
        if what == "g":  # G's step leaves D untouched; D holds no gradient
            assert torch.equal(d0, d1) and not torch.equal(g0, g1)
            assert g_grad and not d_grad


def test_images_seen_counts_real_images_shown_to_d():
    model = make_gan(n_critic=2)
    fit(model, max_steps=5)
    assert model.d_steps == 10
    assert model.images_seen == 10 * 64


def test_weight_clipping_keeps_every_critic_weight_in_bounds():
    model = make_gan(loss=WassersteinLoss(), n_critic=5, optimizer="rmsprop", lr_d=5e-2, weight_clip=0.01)
    before = flat(model.discriminator)
    assert before.abs().max() > 0.01  # the initial weights exceed the bound: clipping must act
    fit(model, max_steps=3)
    after = flat(model.discriminator)
    assert after.abs().max().item() <= 0.01
    assert (after.abs() > 0.01 - 1e-6).float().mean() > 0.3  # a large learning rate pins many weights at +-c


def linear_critic(w):
    return lambda x: x @ w


def test_gradient_penalty_is_zero_for_unit_gradient_linear_critic():
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(128, 3, generator=gen), torch.randn(128, 3, generator=gen)
    w = torch.tensor([0.6, 0.0, 0.8])  # ||grad|| = 1 everywhere
    assert gradient_penalty(linear_critic(w), real, fake, gen).item() < 1e-12
    # ||grad|| = 2 everywhere -> (2 - 1)^2 = 1
    assert abs(gradient_penalty(linear_critic(2 * w), real, fake, gen).item() - 1.0) < 1e-6


def test_r1_is_squared_gradient_norm_on_reals():
    w = torch.tensor([1.0, 2.0, 2.0])
    assert abs(r1_penalty(linear_critic(w), torch.randn(16, 3)).item() - 9.0) < 1e-5


def test_r2_is_zero_for_a_critic_constant_in_x_and_the_squared_gradient_norm_on_fakes():
    weights = torch.nn.Parameter(torch.randn(3))
    fake = torch.randn(16, 3) * weights  # fakes that depend on G's weights
    assert r2_penalty(lambda x: (0 * x).sum(dim=1) + 3.0, fake).item() == 0.0
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0, 2.0]))  # D's weights
    r2 = r2_penalty(linear_critic(w), fake)
    assert r2.item() == pytest.approx(9.0, rel=1e-6)  # ||w||^2 at every sample
    r2.backward()
    assert torch.allclose(w.grad, 2 * w.detach())  # the penalty trains D ...
    assert weights.grad is None  # ... and, taken w.r.t. the fakes themselves, nothing reaches G


def test_r1_and_r2_weights_in_the_game_are_gamma_over_two_times_the_lazy_interval():
    model = make_gan(r1_gamma=2.0, r2_gamma=0.5, r1_every=4)
    w_real, w_fake = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 3.0])
    metrics = {}
    total = model.zero_centered_penalties(linear_critic(w_real), torch.randn(8, 2), linear_critic(w_fake),
                                          torch.randn(8, 2), metrics)
    assert metrics["reg/r1"].item() == pytest.approx(5.0) and metrics["reg/r2"].item() == pytest.approx(9.0)
    assert total.item() == pytest.approx(0.5 * 4 * (2.0 * 5.0 + 0.5 * 9.0))


class ScoresSeenByLoss(RelativisticPairingLoss):
    """RpGAN that keeps the real scores its generator loss was given."""

    def __init__(self):
        self.real_scores = []

    def generator(self, fake_scores, real_scores=None):
        self.real_scores.append(real_scores)
        return super().generator(fake_scores, real_scores)


class LastBatch(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batch = batch


def test_relativistic_generator_step_scores_the_d_steps_reals_with_d_frozen():
    loss, last = ScoresSeenByLoss(), LastBatch()
    model = make_gan(loss=loss, n_critic=2)
    fit(model, max_steps=3, callbacks=[last])
    assert len(loss.real_scores) == 3
    seen = loss.real_scores[-1]
    assert not seen.requires_grad  # D frozen, reals detached: no gradient through D(x)
    with torch.no_grad():  # D did not move in G's step: its scores of the last real batch are the ones G saw
        assert torch.equal(seen, model.discriminator(last.batch))


def test_non_relativistic_generator_step_scores_no_reals():
    calls = []
    model = make_gan(loss=NonSaturatingLoss())
    model.discriminator.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    fit(model, max_steps=2)
    assert len(calls) == 2 * 3  # per batch: D step on reals and fakes, G step on fakes only


def test_spectral_norm_bounds_every_discriminator_layer():
    model = make_gan(spectral_norm=True)
    fit(model, max_steps=20)
    for layer in model.discriminator.modules():
        if isinstance(layer, torch.nn.Linear):
            sigma = torch.linalg.matrix_norm(layer.weight.detach(), ord=2).item()
            assert sigma < 1.05  # power iteration: one step per forward, so close to (not exactly) 1


def test_ema_generator_trails_the_generator():
    model = make_gan(ema_kimg=1.0, ema_rampup=None)
    initial = flat(model.generator_ema)
    fit(model, max_steps=30)
    g, ema = flat(model.generator), flat(model.generator_ema)
    assert not torch.equal(ema, initial) and not torch.equal(ema, g)
    # the average lies between the start and the current weights
    assert (ema - g).norm() < (initial - g).norm()


def test_rng_streams_are_reproducible_and_distinct():
    a, b = make_gan(noise_seed=7), make_gan(noise_seed=7)
    assert torch.equal(a.sample_z(4, "z_d"), b.sample_z(4, "z_d"))
    assert not torch.equal(a.sample_z(4, "z_d"), a.sample_z(4, "z_g"))
    c = copy.deepcopy(a)
    c.d_steps = 1
    assert not torch.equal(a.sample_z(4, "z_d"), c.sample_z(4, "z_d"))
