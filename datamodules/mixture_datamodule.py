"""An endless, seeded stream of 2-D mixture batches whose position survives checkpoints, and fixed held-out
batches to evaluate on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from datamodules.mixtures import GaussianMixture, mixture
from datamodules.sample_indices import sample_index_loader

# Stream slots of the held-out sets, in place of the rank: negative, so that no training rank ever draws them.
_HELD_OUT = {"validate": -1, "test": -2}


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


class HeldOutBatches(IterableDataset):
    """Batches 0 .. ``batches - 1`` of a stream, the same ones at every pass (a fixed evaluation set)."""

    def __init__(self, stream: MixtureStream, batches: int):
        self.stream, self.batches = stream, batches

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[Tensor]:
        return (self.stream.batch(index) for index in range(self.batches))


class MixtureDataModule(pl.LightningDataModule):
    """ring8 / grid25 points, streamed forever from ``seed``; an "epoch" is ``batches_per_epoch`` batches.

    The number of batches the model has consumed is saved in checkpoints, so a resumed run continues the
    stream exactly where it stopped.

    Args:
        eval_batches: batches per rank of the validate and of the test set: held-out streams of the same
            ``seed`` that no training rank reads (validate and test draw different points).
        predict_samples: sample indices that ``predict`` generates, in batches of ``batch_size``.
    """

    def __init__(self, name: Literal["ring8", "grid25"] = "ring8", batch_size: int = 256,
                 batches_per_epoch: int = 500, seed: int = 0, eval_batches: int = 10, predict_samples: int = 64):
        super().__init__()
        for arg, value in (("eval_batches", eval_batches), ("predict_samples", predict_samples)):
            if value < 1:
                raise ValueError(f"data.{arg} must be >= 1, got {value}")
        self.save_hyperparameters()
        self.dist = mixture(name)
        self.batches_consumed = 0

    def train_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        stream = MixtureStream(self.dist, self.hparams.batch_size, self.hparams.batches_per_epoch,
                               self.hparams.seed, rank, start=self.batches_consumed)
        # Generating a batch costs microseconds: worker processes would only add latency.
        return DataLoader(stream, batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return self._held_out("validate")

    def test_dataloader(self) -> DataLoader:
        return self._held_out("test")

    def predict_dataloader(self) -> DataLoader:
        return sample_index_loader(self.hparams.predict_samples, self.hparams.batch_size)

    def _held_out(self, split: str) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        slot = _HELD_OUT[split] - 2 * rank  # rank r of the validate set: -1 - 2r; of the test set: -2 - 2r
        hp = self.hparams
        stream = MixtureStream(self.dist, hp.batch_size, hp.eval_batches, hp.seed, slot)
        return DataLoader(HeldOutBatches(stream, hp.eval_batches), batch_size=None, num_workers=0)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is not None and self.trainer.training:
            self.batches_consumed += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"batches_consumed": self.batches_consumed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.batches_consumed = int(state_dict["batches_consumed"])
