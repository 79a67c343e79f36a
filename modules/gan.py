"""The two-player game as a LightningModule with manual optimization (Goodfellow et al., 2014, Algorithm 1).

Each training step is one discriminator (critic) step on its own real batch; after every ``n_critic``-th
discriminator step the generator takes one step. Only the generator's optimizer step is counted by
Lightning, so ``trainer.global_step`` (and with it ``max_steps``, checkpoint intervals and schedules)
counts generator iterations. Images shown to D are counted in ``images_seen`` (reported as kimg).

Randomness inside the game (z, interpolation weights) is drawn from generators seeded by
(seed, rank, discriminator step), so a resumed run draws exactly what an uninterrupted run would.

Besides training: ``validate`` / ``test`` score the discriminator on real batches against samples of the
EMA generator (D's view of a trained checkpoint), and ``predict`` generates sample i from z_i seeded by
(seed, i) alone, so a sample does not depend on the batch or rank that made it (beyond the last bits a
generator's kernels may round differently for another batch size).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.core.mixins.hparams_mixin import _given_hyperparameters
from torch import Tensor, nn

from modules.augment import DiffAugment
from modules.compile import Compiler
from modules.ema import ema_beta, make_ema_copy, update_ema
from modules.host_metrics import host_scalars
from modules.losses import GANLoss, NonSaturatingLoss
from modules.regularizers import apply_spectral_norm, clip_weights_, gradient_penalty, r1_penalty

_RNG_TAGS = {"z_d": 0, "z_g": 1, "gp": 2, "aug_real": 3, "aug_fake": 4, "aug_g": 5, "z_val": 6, "z_test": 7,
             "z_predict": 8}
_PROGRESS_BAR = {"loss/d", "loss/g", "kimg"}


def _do_nothing() -> None:
    return None


class GAN(pl.LightningModule):
    """Generator vs discriminator; the loss, regularizers and optimizers make the variant.

    Args:
        generator: maps z (N, generator.latent_dim) [and labels] to samples.
        discriminator: maps samples [and labels] to one raw score per sample.
        loss: the adversarial objective (see modules.losses).
        n_critic: discriminator steps per generator step, each on its own real batch.
        optimizer: "adam" (lr, betas) or "rmsprop" (lr; WGAN's choice).
        lr_g, lr_d, betas_g, betas_d: per-player hyper-parameters (two time-scale update rule).
        lr_schedule: "constant", or "linear" decay to zero at ``trainer.max_steps`` generator steps.
        weight_clip: WGAN clipping bound c for every critic weight (None: off).
        gp_weight: WGAN-GP gradient-penalty weight lambda (0: off).
        r1_gamma, r1_every: R1 penalty gamma on reals, applied lazily every k-th D step (0: off).
        spectral_norm: spectral normalisation on every weight layer of the discriminator.
        grad_clip_g, grad_clip_d: per-player max gradient norm (None: off).
        ema_kimg: half-life of the generator's EMA in thousands of images (None: no EMA).
        ema_rampup: caps the EMA half-life at this fraction of images seen (None: no ramp-up).
        augment: DiffAugment applied to everything D sees, in both players' steps (None: off).
        channels_last: NHWC memory format for image networks and batches (faster convolutions on GPUs).
        compile, compile_mode, compile_backend: torch.compile G's and D's forwards for fit, in place (checkpoints
            stay the eager networks'); where compilation fails, one warning and eager (modules.compile).
        noise_seed: seed of the game's random streams (None: the process's torch seed at construction).
    """

    # Constructor arguments that are objects rather than settings: kept out of hparams when built in Python.
    object_arguments: tuple[str, ...] = ("generator", "discriminator", "loss", "augment")
    _compiler: Compiler | None = None  # set by compile_players

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: GANLoss | None = None,
        n_critic: int = 1,
        optimizer: Literal["adam", "rmsprop"] = "adam",
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        betas_g: tuple[float, float] = (0.5, 0.999),
        betas_d: tuple[float, float] = (0.5, 0.999),
        lr_schedule: Literal["constant", "linear"] = "constant",
        weight_clip: float | None = None,
        gp_weight: float = 0.0,
        r1_gamma: float = 0.0,
        r1_every: int = 1,
        spectral_norm: bool = False,
        grad_clip_g: float | None = None,
        grad_clip_d: float | None = None,
        ema_kimg: float | None = 10.0,
        ema_rampup: float | None = 0.05,
        augment: DiffAugment | None = None,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] | None = None,
        compile_backend: str = "inductor",
        noise_seed: int | None = None,
    ):
        super().__init__()
        if n_critic < 1:
            raise ValueError(f"model.n_critic must be >= 1, got {n_critic}")
        if not hasattr(generator, "latent_dim"):
            raise ValueError(f"model.generator ({type(generator).__name__}) must define `latent_dim`")
        # Under ganforge's CLI the hyper-parameters are the config itself (networks as class paths), so
        # load_from_checkpoint rebuilds the module; built in Python, the networks are left out of them.
        from_config = _given_hyperparameters.get() is not None
        self.save_hyperparameters(ignore=None if from_config else list(self.object_arguments))
        self.automatic_optimization = False
        self.generator = generator
        self.discriminator = apply_spectral_norm(discriminator) if spectral_norm else discriminator
        self.generator_ema = make_ema_copy(generator) if ema_kimg is not None else None
        self.loss = loss if loss is not None else NonSaturatingLoss()
        self.augment = augment
        self.seed = int(torch.initial_seed() if noise_seed is None else noise_seed) % (2**62)
        self.d_steps = 0
        self.images_seen = 0

    def on_fit_start(self) -> None:
        if self.hparams.channels_last:
            self.to(memory_format=torch.channels_last)
        if self.hparams.compile:
            self.compile_players()

    def compile_players(self) -> None:
        """model.compile: G's and D's forwards run torch.compile'd (gradient penalties' passes stay eager: critic)."""
        self._compiler = Compiler(self.hparams.compile_mode, self.hparams.compile_backend)
        for net in (self.generator, self.discriminator):
            self._compiler.compile(net)

    # ---- the game -------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> None:
        real, labels = split_batch(batch)
        if self.hparams.channels_last and real.dim() == 4:
            real = real.contiguous(memory_format=torch.channels_last)
        opt_g, opt_d = self.optimizers()
        metrics = self.discriminator_step(opt_d, real, labels)
        self.d_steps += 1
        self.images_seen += real.shape[0] * self.trainer.world_size
        if self.d_steps % self.hparams.n_critic == 0:
            metrics.update(self.generator_step(opt_g, real.shape[0], labels))
            self.update_generator_ema(real.shape[0] * self.trainer.world_size)
            for scheduler in self.lr_schedulers() or []:
                scheduler.step()
        metrics["kimg"] = self.images_seen / 1000.0
        if self._is_logging_step():
            self.log_step_metrics(metrics)

    def log_step_metrics(self, metrics: dict[str, Tensor | float]) -> None:
        """Logs the step's metrics as host scalars, copied in one transfer: Lightning converts progress-bar values
        with .item() on every batch until they are logged again, which for device tensors would be a host sync
        per value per batch."""
        for name, value in host_scalars(metrics).items():
            self.log(name, value, prog_bar=name in _PROGRESS_BAR)

    def _is_logging_step(self) -> bool:
        """Lightning writes logged values every ``log_every_n_steps`` batches; computing them on the other
        batches would only cost time (each .log of a tensor is a device sync)."""
        trainer = self.trainer
        return (trainer.fit_loop.total_batch_idx + 1) % max(1, trainer.log_every_n_steps) == 0

    def critic(self, x: Tensor, labels: Tensor | None, aug_tag: str) -> Tensor:
        """D's scores for x, seen through DiffAugment (drawn from stream ``aug_tag``) when it is on. A gradient
        penalty's input (a leaf that requires grad) is scored by the eager D: the penalty is differentiated twice,
        which a compiled graph does not support (modules.compile)."""
        if self._compiler is not None and x.is_leaf and x.requires_grad:
            with self._compiler.eager():
                return self.critic(x.view_as(x), labels, aug_tag)  # a view: no longer a leaf
        if self.augment is not None:
            x = self.augment(x, self._rng(aug_tag))
        return self.discriminator(x, labels)

    def discriminator_step(self, opt, real: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
        """One step of D: ascend on reals, descend on detached fakes, plus its regularizers."""
        n = real.shape[0]
        with torch.no_grad():
            fake = self.generator(self.sample_z(n, "z_d"), labels)
        real_scores = self.critic(real, labels, "aug_real")
        fake_scores = self.critic(fake, labels, "aug_fake")
        loss = self.loss.discriminator(real_scores, fake_scores)
        metrics = {"loss/d_adv": loss.detach()}
        hp = self.hparams
        if hp.gp_weight > 0:
            gp = gradient_penalty(lambda x: self.critic(x, labels, "aug_fake"), real, fake, self._rng("gp"))
            loss = loss + hp.gp_weight * gp
            metrics["reg/gp"] = gp.detach()
        if hp.r1_gamma > 0 and self.d_steps % hp.r1_every == 0:
            r1 = r1_penalty(lambda x: self.critic(x, labels, "aug_real"), real)
            loss = loss + 0.5 * hp.r1_gamma * hp.r1_every * r1
            metrics["reg/r1"] = r1.detach()
        self._step_player(opt, loss, counted=False)
        if hp.weight_clip is not None:
            clip_weights_(self.discriminator, hp.weight_clip)
        metrics.update(self._score_metrics(real_scores, fake_scores))
        metrics["loss/d"] = loss.detach()
        return metrics

    def generator_step(self, opt, n: int, labels: Tensor | None) -> dict[str, Tensor]:
        """One step of G against a frozen D: only G's parameters receive gradients."""
        self.discriminator.requires_grad_(False)
        try:
            fake_scores = self.critic(self.generator(self.sample_z(n, "z_g"), labels), labels, "aug_g")
            loss = self.loss.generator(fake_scores)
            self._step_player(opt, loss, counted=True)
        finally:
            self.discriminator.requires_grad_(True)
        return {"loss/g": loss.detach()}

    # ---- plumbing -------------------------------------------------------------------------------
    def _step_player(self, opt, loss: Tensor, counted: bool) -> None:
        """zero_grad -> backward -> step for one player's optimizer.

        The generator's step goes through Lightning's optimizer wrapper, which advances global_step;
        the discriminator's goes straight to the strategy (same precision and distribution handling),
        which does not. The backward is manual_backward's, plus the optimizer, so that a strategy with one
        engine per player (DeepSpeed) can route it.
        """
        opt.zero_grad(set_to_none=True)
        self._verify_is_manual_optimization("manual_backward")
        self.trainer.strategy.backward(loss, opt.optimizer)
        if counted:
            opt.step()
        else:
            self.trainer.strategy.optimizer_step(opt.optimizer, _do_nothing)
        opt.zero_grad(set_to_none=True)  # no gradient outlives its step

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Per-player gradient clipping and gradient-norm logging (grads are final here)."""
        player = self._player(optimizer)
        limit = self.hparams.grad_clip_g if player == "g" else self.hparams.grad_clip_d
        logging = self._is_logging_step()
        if limit is None and not logging:
            return
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return
        if limit is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, limit)
        elif logging:
            norm = global_norm(p.grad for p in params)
        if logging:
            self.log_optimizer_step(player, norm, optimizer)

    def on_engine_step(self, optimizer, grad_norm: Callable[[], float | Tensor | None]) -> None:
        """Called by a strategy whose engines step the players (deepspeed_gan), with a reader of the global
        gradient norm before clipping (the gradients may live in the engine's partitions), read only on
        logging steps."""
        if not self._is_logging_step():
            return
        norm = grad_norm()
        if norm is not None:
            self.log_optimizer_step(self._player(optimizer), torch.as_tensor(norm, dtype=torch.float32), optimizer)

    def log_optimizer_step(self, player: str, grad_norm: Tensor, optimizer: torch.optim.Optimizer) -> None:
        """A player's gradient norm (before clipping) and learning rate, as ``gradnorm/<player>``, ``lr/<player>``."""
        self.log(f"gradnorm/{player}", grad_norm)
        self.log(f"lr/{player}", optimizer.param_groups[0]["lr"])

    def _player(self, optimizer: torch.optim.Optimizer) -> str:
        """"g" for the generator's optimizer (configure_optimizers' first), "d" for the discriminator's."""
        return "g" if optimizer is self.trainer.optimizers[0] else "d"

    def update_generator_ema(self, batch_images: int) -> None:
        if self.generator_ema is None:
            return
        beta = ema_beta(self.hparams.ema_kimg, batch_images, self.images_seen, self.hparams.ema_rampup)
        update_ema(self.generator_ema, self.generator, beta)

    def _score_metrics(self, real_scores: Tensor, fake_scores: Tensor) -> dict[str, Tensor]:
        """Mean D(x) and D(G(z)) (raw scores for non-probabilistic losses), on logging steps only (device work)."""
        if not self._is_logging_step():
            return {}
        if self.loss.probabilistic:
            return {"D(x)": torch.sigmoid(real_scores).mean().detach(),
                    "D(G(z))": torch.sigmoid(fake_scores).mean().detach()}
        return {"score/real": real_scores.mean().detach(), "score/fake": fake_scores.mean().detach()}

    def _rng(self, tag: str, counter: int | None = None, rank: int | None = None,
             device: torch.device | None = None) -> torch.Generator:
        """A generator seeded by (seed, rank, counter, purpose): reproducible across resumes and ranks. The
        counter is the D step unless given; the rank is this process's unless given."""
        if rank is None:
            rank = self.trainer.global_rank if self._trainer is not None else 0
        counter = self.d_steps if counter is None else counter
        key = ((self.seed * 1_000_003 + rank) * 1_000_033 + counter) * 16 + _RNG_TAGS[tag]
        gen = torch.Generator(device=self.device if device is None else device)
        gen.manual_seed(key % (2**63 - 1))
        return gen

    def sample_z(self, n: int, tag: str) -> Tensor:
        return torch.randn(n, self.generator.latent_dim, device=self.device, generator=self._rng(tag))

    # ---- inference ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, z: Tensor, labels: Tensor | None = None, use_ema: bool = True) -> Tensor:
        """G(z) from the EMA generator (the raw one without EMA or with ``use_ema=False``) in eval mode."""
        net = self.generator_ema if (use_ema and self.generator_ema is not None) else self.generator
        was_training = net.training
        net.eval()
        try:
            return net(z, labels)
        finally:
            net.train(was_training)

    def sample(self, n: int, labels: Tensor | None = None, seed: int = 0, use_ema: bool = True) -> Tensor:
        """n samples from the (EMA) generator in eval mode, for a fixed ``seed``."""
        gen = torch.Generator(device=self.device).manual_seed(seed)
        z = torch.randn(n, self.generator.latent_dim, device=self.device, generator=gen)
        return self.generate(z, labels, use_ema)

    # ---- validate / test: the discriminator's view of a trained generator -----------------------
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._score_held_out(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._score_held_out(batch, batch_idx, "test")

    def _score_held_out(self, batch: Any, batch_idx: int, stage: str) -> None:
        """D's adversarial loss on a real batch against as many EMA samples, averaged over the batches.

        ``loss_d`` estimates minus the game's value (-V(D, G) for the minimax loss); probabilistic losses add
        the mean D(x) and D(G(z)), the others ``critic_gap`` = E[D(x)] - E[D(G(z))] (with a Lipschitz critic, a
        Wasserstein estimate). z comes from stream (seed, rank, batch_idx, stage), so the numbers are reproducible.
        D is in eval mode (no dropout; BatchNorm on its running statistics) and sees no DiffAugment.
        """
        real, labels = split_batch(batch)
        gen = self._rng(f"z_{stage}", counter=batch_idx)
        z = torch.randn(real.shape[0], self.generator.latent_dim, device=self.device, generator=gen)
        real_scores, fake_scores = self.held_out_scores(real, labels, z)
        metrics = {"loss_d": self.loss.discriminator(real_scores, fake_scores)}
        if self.loss.probabilistic:
            metrics["D(x)"] = torch.sigmoid(real_scores).mean()
            metrics["D(G(z))"] = torch.sigmoid(fake_scores).mean()
        else:
            metrics["critic_gap"] = real_scores.mean() - fake_scores.mean()
        self.log_dict({f"{stage}/{name}": value for name, value in metrics.items()}, on_step=False, on_epoch=True,
                      sync_dist=True, batch_size=real.shape[0])

    def held_out_scores(self, real: Tensor, labels: Tensor | None, z: Tensor) -> tuple[Tensor, Tensor]:
        """D's raw scores of real samples and of the EMA generator's samples of z."""
        return self.discriminator(real, labels), self.discriminator(self.generate(z, labels), labels)

    # ---- predict: samples by index ----------------------------------------------------------------
    def predict_step(self, indices: Tensor, batch_idx: int) -> dict[str, Tensor | None]:
        """Sample i of the EMA generator for each index i (labels i % num_classes if conditional)."""
        labels = indices % self.num_classes if self.num_classes else None
        samples = self.generate(self.indexed_z(indices).to(self.device), labels)
        return {"index": indices, "samples": samples, "labels": labels}

    def indexed_z(self, indices: Tensor) -> Tensor:
        """z_i from stream (seed, i) for each index i, drawn on the CPU: sample i's code depends on nothing
        else (batch, rank, device)."""
        cpu, dim = torch.device("cpu"), self.generator.latent_dim
        codes = [torch.randn(dim, generator=self._rng("z_predict", counter=i, rank=0, device=cpu))
                 for i in indices.tolist()]
        return torch.stack(codes)

    # ---- optimizers and checkpoints -------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        opt_g = self._make_optimizer(self.generator_parameters(), hp.lr_g, hp.betas_g)
        opt_d = self._make_optimizer(self.discriminator.parameters(), hp.lr_d, hp.betas_d)
        if hp.lr_schedule == "constant":
            return [opt_g, opt_d]
        total = self.trainer.max_steps
        if total is None or total <= 0:
            raise ValueError("model.lr_schedule=linear needs trainer.max_steps (generator steps) to be set")

        def linear(step: int) -> float:
            return max(0.0, 1.0 - step / total)

        schedulers = [torch.optim.lr_scheduler.LambdaLR(o, linear) for o in (opt_g, opt_d)]
        return [opt_g, opt_d], schedulers

    def generator_parameters(self):
        """Everything the generator's optimizer owns (subclasses add encoders)."""
        return self.generator.parameters()

    def _make_optimizer(self, params, lr: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
        if self.hparams.optimizer == "rmsprop":
            return torch.optim.RMSprop(params, lr=lr)
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ganforge"] = {"variant": self.variant_name(), "d_steps": self.d_steps,
                                  "images_seen": self.images_seen, "seed": self.seed}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("ganforge")
        if state is None:
            raise ValueError("checkpoint has no ganforge state: it was not written by ganforge")
        if state["variant"] != self.variant_name():
            raise ValueError(f"checkpoint is for variant {state['variant']!r} but the config builds "
                             f"{self.variant_name()!r}: resume with the config the checkpoint was trained with")
        self.d_steps, self.images_seen, self.seed = state["d_steps"], state["images_seen"], state["seed"]

    @property
    def num_classes(self) -> int:
        """Classes the generator is conditioned on (0: unconditional)."""
        return getattr(self.generator, "num_classes", 0)

    def variant_name(self) -> str:
        """The module class and its networks: what a checkpoint must match to be loaded."""
        return f"{type(self).__name__}({type(self.generator).__name__}, {type(self.discriminator).__name__})"


# Lightning inspects training_step's signature on every batch (to pass batch_idx); a precomputed __signature__
# turns that into an attribute read (~0.1 ms less per batch here), the same answer.
GAN.training_step.__signature__ = inspect.signature(GAN.training_step)


def global_norm(tensors: Iterable[Tensor]) -> Tensor:
    """The 2-norm of all the tensors together (what gradient clipping measures)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def split_batch(batch: Any) -> tuple[Tensor, Tensor | None]:
    """A batch is a tensor of samples, or (samples, labels)."""
    if isinstance(batch, (list, tuple)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None
