"""Class coverage of generated images: the mode-collapse view of a class-labelled image dataset.

A classifier trained on the data labels each sample; a generator that covers the data predicts every
class, about equally often. Reported: the number of classes predicted at least once, and KL(q || uniform)
of the predicted-class histogram q (0 for a balanced generator, log K when all samples fall in one of K
classes; empty classes contribute 0). Counts are sums, so ranks combine them by all-reduce.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class ClassHistogram:
    counts: Tensor
    asked: Tensor  # (correct, total) over samples generated for a given class

    @classmethod
    def empty(cls, num_classes: int, device: torch.device | str = "cpu") -> ClassHistogram:
        return cls(torch.zeros(num_classes, dtype=torch.float64, device=device),
                   torch.zeros(2, dtype=torch.float64, device=device))

    def update(self, logits: Tensor, asked: Tensor | None = None) -> None:
        """``asked``: the classes the samples were generated for (conditional generators)."""
        predicted = logits.detach().argmax(1)
        self.counts += torch.bincount(predicted, minlength=len(self.counts)).to(self.counts)
        if asked is not None:
            self.asked += torch.tensor([float((predicted == asked).sum()), float(len(asked))]).to(self.asked)

    def all_reduce(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.counts)
            torch.distributed.all_reduce(self.asked)

    def accuracy(self) -> float | None:
        """Share of the samples generated for a class that are classified as it; None without any."""
        correct, total = self.asked.tolist()
        return correct / total if total else None

    def coverage(self) -> ClassCoverage:
        counts = self.counts.cpu()
        if counts.sum() == 0:
            raise ValueError("class coverage of no samples: update the histogram first")
        q = counts[counts > 0] / counts.sum()
        return ClassCoverage(int((counts > 0).sum()), float((q * torch.log(q * len(counts))).sum()))


@dataclass(frozen=True)
class ClassCoverage:
    classes: int
    kl_uniform: float

    def as_dict(self, prefix: str = "metrics/") -> dict[str, float]:
        return {f"{prefix}class_coverage": float(self.classes), f"{prefix}class_kl": self.kl_uniform}

