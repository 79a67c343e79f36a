"""Worker for tests/test_deepspeed.py: one 2-process launch runs every fit the tests need, back to back.

Starting the processes (importing Lightning and DeepSpeed, joining the process group) costs more than a fit of
a toy GAN, so one launch does them all. Each rank saves what it saw to OUT/rank<r>.pt:
- per ZeRO stage 0/1/2: a run that checkpoints at step STOP_AT, and a run resumed from that checkpoint;
- ZeRO-2 with the optimizer offloaded, ZeRO-2 under bf16-mixed, and the same game under ddp_gan (reference);
- a game that clips both players' gradients, under ZeRO-0 (the engine clips), ZeRO-2 (the partitions are
  clipped) and ddp_gan (the module clips), stepped by plain SGD so that a different clipping rule could not
  hide in Adam's normalised update;
- a game whose rank 0 sees NaN reals on NAN_D_STEPS, under ZeRO-0 (the module skips) and ZeRO-2 (the engine
  skips a NaN global norm): both ranks skip the same steps and stay equal;
- modules that ZeRO cannot partition (an optimizer with per-tensor statistics, channels_last weights): the
  errors they raise on both ranks.

Usage: python deepspeed_fit.py OUT_DIR   (Lightning starts rank 1 by re-running it)
"""

import sys
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from datamodules.mixture_datamodule import MixtureDataModule
from modules.gan import GAN
from modules.losses import NonSaturatingLoss
from modules.nets.mlp import MLPDiscriminator, MLPGenerator
from pipeline.strategies.deepspeed_gan import DeepSpeedGANStrategy
from pipeline.strategies.two_player_ddp import TwoPlayerDDPStrategy

MAX_STEPS, STOP_AT, N_CRITIC, BATCH = 6, 4, 2, 32  # the checkpoint falls mid-epoch (batch 8 of 10)
STAGES = (0, 1, 2)
CLIP = 0.05
NAN_D_STEPS = {3, 4}


class RecordingGAN(GAN):
    """configs/gan.yaml's game at toy size (BatchNorm G, Fourier-feature D, R1, linear LR decay, EMA) with
    n_critic=2, counting per player the gradients that each player's step produced."""

    def __init__(self, clip: float | None = None, channels_last: bool = False):
        torch.manual_seed(0)
        super().__init__(MLPGenerator(latent_dim=2, hidden=16, layers=2, batch_norm=True),
                         MLPDiscriminator(hidden=16, layers=2, fourier_features=8, fourier_scale=0.1),
                         loss=NonSaturatingLoss(), n_critic=N_CRITIC, r1_gamma=0.1, lr_g=1e-3, lr_d=1e-3,
                         lr_schedule="linear", grad_clip_g=clip, grad_clip_d=clip, ema_kimg=0.1,
                         channels_last=channels_last, noise_seed=3)
        self.phase, self.grads, self.initial = "", Counter(), {}
        for player in ("generator", "discriminator"):
            for p in getattr(self, player).parameters():
                p.register_hook(lambda grad, player=player: self.grads.update([f"{self.phase} step -> {player}"]))

    def on_train_start(self) -> None:  # after the strategy made every rank start from rank 0's weights
        self.initial = {k: v.clone() for k, v in self.state_dict().items()}

    def discriminator_step(self, *args, **kwargs):
        self.phase = "D"
        return super().discriminator_step(*args, **kwargs)

    def generator_step(self, *args, **kwargs):
        self.phase = "G"
        return super().generator_step(*args, **kwargs)


class ClippedSGDGAN(RecordingGAN):
    """Clips both players at CLIP; records the gradient norms that ddp_gan's module sees before it clips."""

    def __init__(self):
        super().__init__(clip=CLIP)
        self.norms, self.logged_norms = [], []

    def _make_optimizer(self, params, lr, betas):
        return torch.optim.SGD(params, lr=10 * lr)

    def on_before_optimizer_step(self, optimizer):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        self.norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
        super().on_before_optimizer_step(optimizer)

    def log_optimizer_step(self, player, grad_norm, optimizer):
        self.logged_norms.append((player, float(grad_norm)))
        super().log_optimizer_step(player, grad_norm, optimizer)


class RankZeroNaNGAN(RecordingGAN):
    """Rank 0's real batch is NaN on NAN_D_STEPS; records D's weights before every D step."""

    def __init__(self):
        super().__init__()
        self.d_weights = []

    def discriminator_step(self, opt, real, labels):
        self.d_weights.append([p.detach().clone() for p in self.discriminator.parameters()])
        if self.trainer.global_rank == 0 and self.d_steps in NAN_D_STEPS:
            real = real * float("nan")
        return super().discriminator_step(opt, real, labels)


class AdafactorGAN(RecordingGAN):
    def _make_optimizer(self, params, lr, betas):
        return torch.optim.Adafactor(params, lr=lr)


def fit(strategy, out: Path, game: Callable[[], RecordingGAN] = RecordingGAN, precision: str = "32-true",
        checkpoint_every: int = 0, resume: Path | None = None) -> dict:
    model = game()
    callbacks = [ModelCheckpoint(dirpath=out, every_n_train_steps=checkpoint_every, save_top_k=-1)]
    trainer = pl.Trainer(accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0,
                         devices=2, strategy=strategy, precision=precision, log_every_n_steps=1,
                         max_steps=MAX_STEPS, logger=False, callbacks=callbacks if checkpoint_every else [],
                         enable_checkpointing=bool(checkpoint_every), enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, MixtureDataModule(batch_size=BATCH, batches_per_epoch=10, seed=5), ckpt_path=resume)
    return {"state": model.state_dict(), "initial": model.initial, "grads": dict(model.grads),
            "counters": (trainer.global_step, model.d_steps, model.images_seen),
            "engine_steps": [engine.global_steps for engine in getattr(trainer.strategy, "engines", {}).values()],
            "norms": getattr(model, "norms", []), "logged_norms": getattr(model, "logged_norms", []),
            "skipped": dict(model.step_health.skipped), "d_weights": getattr(model, "d_weights", [])}


def deepspeed(stage: int, **kwargs) -> DeepSpeedGANStrategy:
    return DeepSpeedGANStrategy(zero_stage=stage, process_group_backend="gloo", **kwargs)


def main(out: Path) -> None:
    results = {}
    for stage in STAGES:
        checkpoints = out / f"zero{stage}_checkpoints"
        results[f"zero{stage}"] = fit(deepspeed(stage), checkpoints, checkpoint_every=STOP_AT)
        results[f"zero{stage}_resumed"] = fit(deepspeed(stage), out / "unused",
                                              resume=checkpoints / f"epoch=0-step={STOP_AT}.ckpt")
    results["zero2_offload"] = fit(deepspeed(2, offload_optimizer=True), out / "unused")
    results["zero2_bf16"] = fit(deepspeed(2), out / "unused", precision="bf16-mixed")
    results["ddp_gan"] = fit(TwoPlayerDDPStrategy(process_group_backend="gloo"), out / "unused")
    for stage in (0, 2):
        results[f"zero{stage}_clip"] = fit(deepspeed(stage), out / "unused", game=ClippedSGDGAN)
    results["ddp_gan_clip"] = fit(TwoPlayerDDPStrategy(process_group_backend="gloo"), out / "unused",
                                  game=ClippedSGDGAN)
    for stage in (0, 2):
        results[f"zero{stage}_nan"] = fit(deepspeed(stage), out / "unused", game=RankZeroNaNGAN)
    refused = {"adafactor_error": AdafactorGAN, "channels_last_error": partial(RecordingGAN, channels_last=True)}
    for name, game in refused.items():
        try:
            fit(deepspeed(1), out / "unused", game=game)
        except ValueError as err:
            results[name] = str(err)
    torch.save(results, out / f"rank{torch.distributed.get_rank()}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
