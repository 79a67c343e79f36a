"""The predict stage's data: sample indices, so that what a generator makes for index i depends on i alone."""

from __future__ import annotations

from torch.utils.data import DataLoader, Dataset


class SampleIndices(Dataset):
    """0, 1, ..., ``num_samples - 1``. Map-style, so that under DDP Lightning deals the indices out to the ranks
    (an unrepeated DistributedSampler when predicting: no index is made twice)."""

    def __init__(self, num_samples: int):
        self.num_samples = num_samples

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> int:
        return index


def sample_index_loader(num_samples: int, batch_size: int) -> DataLoader:
    """Batches of int64 indices, in order (no workers: an index costs nothing to make)."""
    return DataLoader(SampleIndices(num_samples), batch_size=batch_size, shuffle=False, num_workers=0)
