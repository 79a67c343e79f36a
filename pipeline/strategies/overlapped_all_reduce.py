"""One optimizer's gradients averaged over ranks while the backward is still running, bucket by bucket.

As DistributedDataParallel's reducer does: parameters are grouped into buckets in reverse order of their
registration (the order a backward roughly produces their gradients), each parameter's post-accumulate-grad hook
counts its bucket down, and a bucket whose gradients are all final is all-reduced asynchronously at once, so the
communication runs behind the rest of the backward. ``finish`` waits for them just before the optimizer step.
Unlike DDP nothing is wrapped, and only the optimizer that is about to step is armed, so the idle player sends
nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor

from pipeline.strategies.gradient_buckets import all_reduce_mean_, buckets, scatter_back


class OverlappedAllReduce:
    """Averages the gradients of ``params`` over the default process group, overlapped with the backward.

    ``arm()`` before the backward that completes the step's gradients (with accumulation: before each micro-batch;
    an earlier micro-batch's all-reduces are then waited for and dropped, its gradients being incomplete), then
    ``finish()`` before the optimizer step. A bucket with a parameter that got no gradient never launches; ``finish``
    reduces its other gradients then, as the non-overlapped path does.
    """

    def __init__(self, params: Iterable[Tensor], world_size: int, cap_bytes: int):
        self.params = [p for p in params if p.requires_grad]
        self.world_size, self.cap_bytes = world_size, cap_bytes
        self.buckets = list(buckets(reversed(self.params), cap_bytes))
        self._bucket_of = {id(p): i for i, bucket in enumerate(self.buckets) for p in bucket}
        self._remaining: list[int] = []
        self._in_flight: dict[int, tuple[dist.Work, Tensor]] = {}
        self.armed = False
        self._hooks = [p.register_post_accumulate_grad_hook(self._gradient_ready) for p in self.params]

    def arm(self) -> None:
        """The next backward's gradients are the ones to average: launch each bucket as soon as it is complete."""
        self.discard()
        self._remaining = [len(bucket) for bucket in self.buckets]
        self.armed = True

    def _gradient_ready(self, param: Tensor) -> None:
        if not self.armed:
            return
        index = self._bucket_of[id(param)]
        self._remaining[index] -= 1
        if self._remaining[index] == 0:
            flat = torch.cat([p.grad.reshape(-1) for p in self.buckets[index]])
            self._in_flight[index] = (dist.all_reduce(flat, async_op=True), flat)

    def finish(self) -> None:
        """Every gradient becomes its mean over ranks: waits for the launched buckets, reduces the others now."""
        self.armed = False
        for index, bucket in enumerate(self.buckets):
            if index in self._in_flight:
                work, flat = self._in_flight.pop(index)
                work.wait()
                flat.div_(self.world_size)
                scatter_back(flat, [p.grad for p in bucket])
            else:
                all_reduce_mean_([p.grad for p in bucket if p.grad is not None], self.world_size, self.cap_bytes)

    def discard(self) -> None:
        """Waits for launched all-reduces and drops their results (the gradients they read are not final)."""
        self.armed = False
        for work, _ in self._in_flight.values():
            work.wait()
        self._in_flight.clear()

    def remove(self) -> None:
        self.discard()
        for hook in self._hooks:
            hook.remove()
