"""An endless, seeded stream of 2-D mixture batches whose position survives checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from datamodules.mixtures import GaussianMixture, mixture


class MixtureStream(IterableDataset):
    """Batch k of rank r is drawn from a generator seeded by (seed, r, k): any batch can be re-drawn.

    Each pass over the stream yields the batches up to the next multiple of ``batches_per_epoch``, so an
    epoch cut short by a checkpoint ends where it would have ended uninterrupted.
    """

    def __init__(self, dist: GaussianMixture, batch_size: int, batches_per_epoch: int, seed: int, rank: int,
                 start: int = 0):
        self.dist, self.batch_size, self.batches_per_epoch = dist, batch_size, batches_per_epoch
        self.seed, self.rank, self.position = seed, rank, start

    def __len__(self) -> int:
        return self.batches_per_epoch

    def batch(self, index: int) -> Tensor:
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + self.rank) * 1_000_000_007 + index)
        return self.dist.sample(self.batch_size, gen)[0]

    def __iter__(self) -> Iterator[Tensor]:
        end = (self.position // self.batches_per_epoch + 1) * self.batches_per_epoch
        while self.position < end:
            index = self.position
            self.position += 1
            yield self.batch(index)


class MixtureDataModule(pl.LightningDataModule):
    """ring8 / grid25 points, streamed forever from ``seed``; an "epoch" is ``batches_per_epoch`` batches.

    The number of batches the model has consumed is saved in checkpoints, so a resumed run continues the
    stream exactly where it stopped.
    """

    def __init__(self, name: Literal["ring8", "grid25"] = "ring8", batch_size: int = 256,
                 batches_per_epoch: int = 500, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.dist = mixture(name)
        self.batches_consumed = 0

    def train_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        stream = MixtureStream(self.dist, self.hparams.batch_size, self.hparams.batches_per_epoch,
                               self.hparams.seed, rank, start=self.batches_consumed)
        # Generating a batch costs microseconds: worker processes would only add latency.
        return DataLoader(stream, batch_size=None, num_workers=0)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is not None and self.trainer.training:
            self.batches_consumed += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"batches_consumed": self.batches_consumed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.batches_consumed = int(state_dict["batches_consumed"])
