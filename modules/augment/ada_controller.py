"""ADA's controller of the augmentation probability p (Karras et al., 2020, Sec. 3).

The overfitting heuristic r_t = E[sign(D(x_real))] is the share of reals D scores positive minus the share
it scores negative: near 0 while D generalises, towards 1 as it memorises the training set. Every
``interval`` D steps p moves by sign(r_t - target) * (images in those steps) / (ada_kimg * 1000), clamped to
[0, 1]: fast enough to go from 0 to 1 in ada_kimg thousand images, slow enough to follow D's state.

State (p, the last r_t and the current interval's running sums) lives in buffers, so it is part of the
model's state_dict and checkpoint; a resumed run continues with the same p, mid-interval included (the
reference implementation restarts p at 0 on resume). Each step's sign sum and count are all-reduced over
the ranks as they are collected (when torch.distributed is initialised), so every rank holds the same
state and the checkpoint of rank 0 resumes every rank. The update itself is tensor arithmetic on the
scores' device: no host synchronisation in the training step.
"""

from __future__ import annotations

import torch
from torch import Tensor, distributed, nn

_SIGN_SUM, _COUNT, _IMAGES, _STEPS = range(4)


class AdaController(nn.Module):
    """Tracks r_t over the discriminator's real scores and adjusts p towards ``target``.

    Args:
        p: the initial probability.
        target: the r_t that p is steered to (the paper: 0.6).
        ada_kimg: thousands of images for p to move by 1 at the full rate (the paper: 500).
        interval: D steps between updates (the paper: 4).
        adaptive: False measures r_t but keeps p fixed (set from outside, e.g. by a schedule).
    """

    def __init__(self, p: float = 0.0, target: float = 0.6, ada_kimg: float = 500.0, interval: int = 4,
                 adaptive: bool = True):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"ADA p must be in [0, 1], got {p}")
        if not -1.0 <= target <= 1.0:
            raise ValueError(f"ADA target is a value of E[sign(D(x))], in [-1, 1]; got {target}")
        if ada_kimg <= 0:
            raise ValueError(f"ADA ada_kimg must be > 0 (thousands of images for p to move by 1), got {ada_kimg}")
        if interval < 1:
            raise ValueError(f"ADA interval must be >= 1 discriminator step, got {interval}")
        self.target, self.ada_kimg, self.interval, self.adaptive = float(target), float(ada_kimg), interval, adaptive
        self.register_buffer("p", torch.tensor(float(p)))
        self.register_buffer("rt", torch.tensor(0.0))  # r_t of the last completed interval
        self.register_buffer("running", torch.zeros(4))  # sign sum, scores, images, D steps of this interval

    def observe(self, real_scores: Tensor, batch_images: int) -> None:
        """Add one D step: its raw scores of reals on this rank, and the images of the step on all ranks."""
        scores = real_scores.detach().float()
        step = torch.stack([scores.sign().sum(), scores.new_full((), scores.numel())])
        if distributed.is_available() and distributed.is_initialized():
            distributed.all_reduce(step)
        running = self.running + torch.cat([step, step.new_full((1,), batch_images), step.new_ones(1)])
        due = running[_STEPS] >= self.interval
        rt = running[_SIGN_SUM] / running[_COUNT].clamp(min=1)
        p = self.p
        if self.adaptive:
            p = (p + torch.sign(rt - self.target) * running[_IMAGES] / (self.ada_kimg * 1000)).clamp(0, 1)
        self.p.copy_(torch.where(due, p, self.p))
        self.rt.copy_(torch.where(due, rt, self.rt))
        self.running.copy_(torch.where(due, torch.zeros_like(running), running))

    def _apply(self, fn, recurse=True):
        """Move with the module but stay float32 (a step of p, ~1e-4, would vanish in half precision)."""
        state = {name: self._buffers[name] for name in ("p", "rt", "running")}
        super()._apply(fn, recurse)
        for name, before in state.items():
            self._buffers[name] = before.to(self._buffers[name].device)
        return self

    def extra_repr(self) -> str:
        mode = "adaptive" if self.adaptive else "fixed"
        return f"{mode}, target={self.target}, ada_kimg={self.ada_kimg}, interval={self.interval}"
