"""BiGAN / ALI (Donahue et al., 2017; Dumoulin et al., 2017): a GAN that also learns the inverse map.

An encoder E: x -> z joins the generator as one player. The discriminator judges (x, z) pairs: real
pairs (x, E(x)) against fake pairs (G(z), z); the generator player (G and E together) plays the same
loss with the pairs' roles swapped. At the optimum the two joint distributions match, so E inverts G
and ``reconstruct(x) = G(E(x))`` approximates x. Everything else (n_critic, optimizers, EMA of G,
counters, checkpoints) is the engine's; the joint discriminator comes from modules.nets.joint.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor, nn

from modules.gan import GAN
from modules.regularizers import clip_weights_, gradient_penalty


class BiGAN(GAN):
    """GAN whose discriminator is ``discriminator(x, z, y=None)`` and whose generator player owns E too.

    Args:
        generator: z (N, latent_dim) [, y] -> x.
        discriminator: a joint discriminator (x, z) [, y] -> one raw score per pair.
        encoder: x -> z (N, generator.latent_dim).
        **kwargs: every other option of modules.gan.GAN (loss, n_critic, lrs, regularizers, EMA, ...).
            Penalties (gp_weight, r1_gamma, r2_gamma) act on the pair: gradients with respect to x and z together.
    """

    object_arguments = (*GAN.object_arguments, "encoder")

    def __init__(self, generator: nn.Module, discriminator: nn.Module, encoder: nn.Module, **kwargs: Any):
        if kwargs.get("augment") is not None:
            raise ValueError("model.augment is not supported by BiGAN: augmenting x would break its pairing "
                             "with z; remove model.augment")
        super().__init__(generator, discriminator, **kwargs)
        self.encoder = encoder

    def generator_parameters(self):
        return itertools.chain(self.generator.parameters(), self.encoder.parameters())

    def _pair_critic(self, x_shape: torch.Size, labels: Tensor | None):
        """D on flat pairs [x.flatten(1), z]: the form the penalties differentiate through."""
        split = x_shape[1:].numel()
        return lambda pair: self.discriminator(pair[:, :split].reshape(x_shape), pair[:, split:], labels)

    def discriminator_step(self, opt, real: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
        """D ascends on (x, E(x)) as real and (G(z), z) as fake; G and E are held fixed."""
        n = real.shape[0]
        with torch.no_grad():
            z_fake = self.sample_z(n, "z_d")
            with self._seeded("g_d"):
                fake = self.generator(z_fake, labels)
            z_real = self.encoder(real)
        real_scores = self.discriminator(real, z_real, labels)
        fake_scores = self.discriminator(fake, z_fake, labels)
        loss = self.loss.discriminator(real_scores, fake_scores)
        metrics = {"loss/d_adv": loss.detach()}
        hp = self.hparams
        critic = self._pair_critic(real.shape, labels)
        real_pairs = torch.cat([real.flatten(1), z_real], dim=1)
        fake_pairs = torch.cat([fake.flatten(1), z_fake], dim=1)
        if hp.gp_weight > 0:
            gp = gradient_penalty(critic, real_pairs, fake_pairs, self._rng("gp"))
            loss = loss + hp.gp_weight * gp
            metrics["reg/gp"] = gp.detach()
        penalty = self.due_d_penalty(critic, real_pairs, critic, fake_pairs, metrics)
        metrics["loss/d"] = self._step_regularized(opt, loss, penalty, hp.r1_every, counted=False)
        if hp.weight_clip is not None:
            clip_weights_(self.discriminator, hp.weight_clip)
        metrics.update(self._score_metrics(real_scores, fake_scores))
        return metrics

    def generator_step(self, opt, real: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
        """G and E descend on D's loss with the labels swapped: (G(z), z) as real, (x, E(x)) as fake, on the
        reals of the D step before."""
        n = real.shape[0]
        self.discriminator.requires_grad_(False)
        try:
            z = self.sample_z(n, "z_g")
            with self._seeded("g_g"):
                fake = self.generator(z, labels)
            fake_scores = self.discriminator(fake, z, labels)
            real_scores = self.discriminator(real, self.encoder(real), labels)
            loss = self.loss.discriminator(fake_scores, real_scores)
            metrics = {"loss/g_adv": loss.detach()}
            penalty = self.due_g_penalty(n, labels, metrics)
            metrics["loss/g"] = self._step_regularized(opt, loss, penalty, self.hparams.pl_every, counted=True)
        finally:
            self.discriminator.requires_grad_(True)
        return metrics

    def held_out_scores(self, real: Tensor, labels: Tensor | None, z: Tensor) -> tuple[Tensor, Tensor]:
        """D's raw scores of the pairs it was trained on: (x, E(x)) for reals, (G(z), z) from the EMA G."""
        real_scores = self.discriminator(real, self.encode(real), labels)
        return real_scores, self.discriminator(self.generate(z, labels), z, labels)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """E(x) in eval mode."""
        return _in_eval(self.encoder, lambda: self.encoder(x))

    @torch.no_grad()
    def reconstruct(self, x: Tensor, labels: Tensor | None = None, use_ema: bool = False) -> Tensor:
        """G(E(x)) in eval mode: how well the learned inverse maps x back onto itself.

        ``use_ema`` decodes with the EMA generator; off by default, since E was trained against G itself.
        """
        net = self.generator_ema if (use_ema and self.generator_ema is not None) else self.generator
        z = self.encode(x)
        return _in_eval(net, lambda: net(z, labels))


def _in_eval(net: nn.Module, run):
    was_training = net.training
    net.eval()
    try:
        return run()
    finally:
        net.train(was_training)
