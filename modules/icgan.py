"""IcGAN, the invertible conditional GAN (Perarnau et al., 2016): encoders that let a cGAN edit real images.

A trained conditional generator G(z, y) is frozen. Two encoders are fitted on its own samples x' = G(z, y)
with (z, y) drawn by us, so the targets are known exactly: E_z(x') regresses z (squared error) and E_y(x')
classifies y (cross-entropy). A real image x then maps to (E_z(x), E_y(x)); keeping z and changing the
label re-generates the same image with another class: ``edit(x, new_y) = G(E_z(x), new_y)``. The paper
found E_y better trained on real labelled images; ``label_source="real"`` does that. ``validate`` / ``test``
report the same losses on held-out draws and the datamodule's evaluation batches.
"""

from __future__ import annotations

from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.core.mixins.hparams_mixin import _given_hyperparameters
from torch import Tensor, nn

from modules.gan import split_batch


class IcGAN(pl.LightningModule):
    """Fits E_z and E_y to a frozen conditional generator; one optimizer for both encoders.

    Args:
        generator: a class-conditional generator G(z, y) with ``latent_dim``; frozen and kept in eval mode.
        encoder_z: images -> (N, generator.latent_dim).
        encoder_y: images -> class logits (N, num_classes).
        num_classes: number of classes G was trained on.
        generator_checkpoint: a ganforge checkpoint to load G's weights from (None: use G as given).
        use_ema: load the checkpoint's EMA generator rather than the raw one.
        label_source: E_y learns from G's samples ("generated") or from the labelled real batches ("real").
        lr, betas: Adam for the encoders.
        noise_seed: seed of the (z, y) draws, one stream per step and rank (None: the process's torch seed).
    """

    def __init__(self, generator: nn.Module, encoder_z: nn.Module, encoder_y: nn.Module, num_classes: int,
                 generator_checkpoint: str | None = None, use_ema: bool = True,
                 label_source: Literal["generated", "real"] = "generated", lr: float = 2e-4,
                 betas: tuple[float, float] = (0.5, 0.999), noise_seed: int | None = None):
        super().__init__()
        if not hasattr(generator, "latent_dim"):
            raise ValueError(f"generator ({type(generator).__name__}) must define `latent_dim`")
        # As in modules.gan.GAN: under ganforge's CLI the hyper-parameters are the config (networks as class
        # paths), so load_from_checkpoint rebuilds the module; built in Python, the networks are left out.
        from_config = _given_hyperparameters.get() is not None
        self.save_hyperparameters(ignore=None if from_config else ["generator", "encoder_z", "encoder_y"])
        if generator_checkpoint is not None:
            generator.load_state_dict(_generator_state(generator_checkpoint, use_ema))
        self.generator = generator.requires_grad_(False).eval()
        self.encoder_z = encoder_z
        self.encoder_y = encoder_y
        self.seed = int(torch.initial_seed() if noise_seed is None else noise_seed) % (2**62)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> IcGAN:
        """The checkpoint's state dict holds G's weights: the checkpoint G was first loaded from is not read
        again (it may be gone by now)."""
        kwargs.setdefault("generator_checkpoint", None)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def train(self, mode: bool = True) -> IcGAN:
        """Lightning switches modules to train mode; the frozen generator stays in eval mode."""
        super().train(mode)
        self.generator.eval()
        return self

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss_z, loss_y, accuracy = self._encoder_losses(batch, self._rng(self.global_step))
        self.log_dict({"loss/e_z": loss_z.detach(), "loss/e_y": loss_y.detach(), "acc/e_y": accuracy},
                      prog_bar=True)
        return loss_z + loss_y

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._score_held_out(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._score_held_out(batch, batch_idx, "test")

    def _score_held_out(self, batch: Any, batch_idx: int, stage: str) -> None:
        """The training losses on fresh (z, y) draws (streams apart from training's) and the real batch,
        averaged over the batches."""
        loss_z, loss_y, accuracy = self._encoder_losses(batch, self._rng(batch_idx, stage))
        self.log_dict({f"{stage}/loss_e_z": loss_z, f"{stage}/loss_e_y": loss_y, f"{stage}/acc_e_y": accuracy},
                      on_step=False, on_epoch=True, sync_dist=True, batch_size=split_batch(batch)[0].shape[0])

    def _encoder_losses(self, batch: Any, rng: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """E_z's squared error on G's samples of drawn (z, y); E_y's cross-entropy and accuracy on the source
        of ``label_source``."""
        real, labels = split_batch(batch)
        n, k = real.shape[0], self.hparams.num_classes
        z = torch.randn(n, self.generator.latent_dim, device=self.device, generator=rng)
        y = torch.randint(0, k, (n,), device=self.device, generator=rng)
        with torch.no_grad():
            fake = self.generator(z, y)
        loss_z = F.mse_loss(self.encoder_z(fake), z)
        if self.hparams.label_source == "real":
            if labels is None:
                raise ValueError("IcGAN label_source='real' needs labelled (x, y) batches")
            logits, targets = self.encoder_y(real), labels
        else:
            logits, targets = self.encoder_y(fake), y
        loss_y = F.cross_entropy(logits, targets)
        accuracy = (logits.argmax(1) == targets).float().mean()
        return loss_z, loss_y, accuracy

    def _rng(self, counter: int, stage: str | None = None) -> torch.Generator:
        """Seeded by (seed, slot, counter). The slot is the rank in training; in validation (test) it is -1 - 2 rank
        (-2 - 2 rank), which no training rank uses."""
        rank = self.trainer.global_rank if self._trainer is not None else 0
        slot = rank if stage is None else -1 - 2 * rank - (stage == "test")
        gen = torch.Generator(device=self.device)
        gen.manual_seed(((self.seed * 1_000_003 + slot) * 1_000_033 + counter) % (2**63 - 1))
        return gen

    def configure_optimizers(self):
        params = [*self.encoder_z.parameters(), *self.encoder_y.parameters()]
        return torch.optim.Adam(params, lr=self.hparams.lr, betas=tuple(self.hparams.betas))

    # ---- inference ------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(E_z(x), predicted class) in eval mode."""
        with _eval(self.encoder_z, self.encoder_y):
            return self.encoder_z(x), self.encoder_y(x).argmax(1)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """G(E_z(x), E_y(x)): x re-generated with its own (predicted) class."""
        z, y = self.encode(x)
        return self.generator(z, y)

    @torch.no_grad()
    def edit(self, x: Tensor, new_y: Tensor) -> Tensor:
        """G(E_z(x), new_y): x re-generated as class ``new_y`` (one label per image)."""
        z, _ = self.encode(x)
        return self.generator(z, new_y)


def _generator_state(path: str, use_ema: bool) -> dict[str, Tensor]:
    """The generator's weights from a ganforge checkpoint (its EMA copy if asked and present)."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    has_ema = any(k.startswith("generator_ema.") for k in state)
    prefix = "generator_ema." if use_ema and has_ema else "generator."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not weights:
        raise ValueError(f"checkpoint {path} holds no generator weights (no '{prefix}' keys)")
    return weights


class _eval:
    """Context: the given modules in eval mode, each restored to its own mode afterwards."""

    def __init__(self, *modules: nn.Module):
        self.modules = modules
        self.modes = [m.training for m in modules]

    def __enter__(self) -> None:
        for m in self.modules:
            m.eval()

    def __exit__(self, *exc: object) -> None:
        for m, mode in zip(self.modules, self.modes, strict=True):
            m.train(mode)
