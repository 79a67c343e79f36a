"""Worker for tests/test_deepspeed.py: a 2-process deepspeed_gan fit that dumps each rank's final weights.

Usage: python deepspeed_fit.py OUT_DIR ZERO_STAGE MAX_STEPS [CKPT_EVERY] [RESUME_FROM]
Lightning launches the second rank by re-running this script.
"""

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from datamodules.mixture_datamodule import MixtureDataModule
from modules.gan import GAN
from modules.losses import NonSaturatingLoss
from modules.nets.mlp import MLPDiscriminator, MLPGenerator
from pipeline.strategies.deepspeed_gan import DeepSpeedGANStrategy


def main(out: str, stage: str, max_steps: str, every: str = "0", resume: str = "") -> None:
    torch.manual_seed(0)
    model = GAN(MLPGenerator(latent_dim=2, hidden=32, layers=2), MLPDiscriminator(hidden=32, layers=2),
                loss=NonSaturatingLoss(), n_critic=2, grad_clip_d=1.0, noise_seed=1)
    callbacks = [ModelCheckpoint(dirpath=Path(out) / "ckpt", every_n_train_steps=int(every), save_top_k=-1)]
    trainer = pl.Trainer(accelerator="cpu", devices=2, max_steps=int(max_steps), logger=False,
                         strategy=DeepSpeedGANStrategy(zero_stage=int(stage), process_group_backend="gloo"),
                         callbacks=callbacks if int(every) else [], enable_checkpointing=bool(int(every)),
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, MixtureDataModule(batch_size=32, batches_per_epoch=50), ckpt_path=resume or None)
    torch.save({"generator": [p.detach().clone() for p in model.generator.parameters()],
                "discriminator": [p.detach().clone() for p in model.discriminator.parameters()],
                "global_step": trainer.global_step, "d_steps": model.d_steps,
                "images_seen": model.images_seen},
               Path(out) / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:])
