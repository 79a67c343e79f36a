"""DDP for two players: each optimizer step averages the gradients of that optimizer's parameters, once.

Lightning's DDPStrategy wraps the whole LightningModule in one DistributedDataParallel, whose reducer expects
every parameter to get a gradient in each backward pass. A GAN's manual step touches one player, so plain DDP
fails ("unused parameters"), and ``find_unused_parameters=True`` pays a graph traversal per backward and still
all-reduces the idle player's zero gradients. Here, as in StyleGAN2-ADA's training loop, the module is not
wrapped: every rank starts from rank 0's parameters and buffers, and when a player steps, the gradients of
its optimizer's parameters (only those) are summed over ranks in flat buckets and divided by the world size.
With ``overlap`` (the default) each bucket's all-reduce starts during the player's backward, as soon as all of
its gradients are final (post-accumulate-grad hooks; buckets in reverse order of the parameters, as DDP's
reducer), so communication runs behind the rest of the backward; only the optimizer whose ``backward`` is
running is armed, so the idle player sends nothing. Either way the step waits for the averages after the step's
closure and before the precision plugin unscales and ``on_before_optimizer_step`` clips, so clipping and the
optimizer see the global gradient on every rank and the ranks stay equal. Accumulated micro-batches: the
gradients are averaged once, from the last backward before the step (an earlier micro-batch's launched
all-reduces are waited for and dropped); backwards inside the optimizer's closure are synchronised once after it.

BatchNorm: buffers are broadcast from rank 0 at set-up and then stay per rank, each rank normalising with its
own batch statistics (DDP's ``broadcast_buffers=False``; a discriminator that runs twice per step, on reals
and on fakes, would otherwise have its statistics overwritten between the two forwards). Only rank 0's
running statistics reach checkpoints. ``Trainer(sync_batchnorm=True)`` swaps in SyncBatchNorm for global
batch statistics; PyTorch implements it for GPUs only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

import torch
from lightning_fabric.plugins import CheckpointIO, ClusterEnvironment
from lightning_fabric.plugins.collectives.torch_collective import default_pg_timeout
from pytorch_lightning.strategies import DDPStrategy, StrategyRegistry
from torch import Tensor

from pipeline.strategies.gradient_buckets import all_reduce_mean_, broadcast_, buckets
from pipeline.strategies.overlapped_all_reduce import OverlappedAllReduce

__all__ = ["NAME", "TwoPlayerDDPStrategy", "buckets", "register"]
NAME = "ddp_gan"


class TwoPlayerDDPStrategy(DDPStrategy):
    """Multi-process data parallelism for modules with one optimizer per player (``strategy="ddp_gan"``).

    Args:
        bucket_cap_mb: largest flat buffer per all-reduce, as DDP's option of that name.
        overlap: all-reduce each bucket during the backward, as soon as its gradients are final (False: all of
            them after the backward, as StyleGAN2-ADA's loop does).
        Other arguments as DDPStrategy's; there are no DistributedDataParallel options (nothing is wrapped).

    Every rank must produce gradients for the same parameters of the stepping optimizer (true of ganforge's
    game, which runs the same code on every rank); a parameter whose gradient is None is left out.
    """

    strategy_name = NAME

    def __init__(
        self,
        accelerator: Any = None,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: ClusterEnvironment | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Any = None,
        process_group_backend: str | None = None,
        timeout: timedelta | None = default_pg_timeout,
        start_method: Literal["popen", "spawn", "fork", "forkserver"] = "popen",
        bucket_cap_mb: float = 25.0,
        overlap: bool = True,
    ):
        super().__init__(accelerator=accelerator, parallel_devices=parallel_devices,
                         cluster_environment=cluster_environment, checkpoint_io=checkpoint_io,
                         precision_plugin=precision_plugin, process_group_backend=process_group_backend,
                         timeout=timeout, start_method=start_method)
        self.bucket_cap_bytes = int(bucket_cap_mb * 1024 * 1024)
        self.overlap = overlap
        self._reducers: dict[int, OverlappedAllReduce] = {}  # id(optimizer) -> its overlapped all-reduce
        self._in_closure = False

    def setup(self, trainer) -> None:
        if self._layer_sync is not None and self.root_device.type == "cpu":
            raise ValueError("trainer.sync_batchnorm needs GPUs (PyTorch's SyncBatchNorm refuses CPU tensors); "
                             "without it BatchNorm statistics stay per rank")
        super().setup(trainer)

    def configure_ddp(self) -> None:
        """Instead of wrapping in DistributedDataParallel: make every rank start from rank 0's state."""
        if self.world_size > 1:
            broadcast_([*self.model.parameters(), *self.model.buffers()], self.bucket_cap_bytes)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any], model=None,
                       **kwargs: Any) -> Any:
        if self.world_size == 1:
            return super().optimizer_step(optimizer, closure, model, **kwargs)

        def closure_then_average() -> Any:
            self._in_closure = True
            try:
                result = closure()
            finally:
                self._in_closure = False
            reducer = self._reducers.get(id(optimizer))
            if reducer is not None:
                reducer.finish()
            else:
                all_reduce_mean_(self.gradients(optimizer), self.world_size, self.bucket_cap_bytes)
            return result

        return super().optimizer_step(optimizer, closure_then_average, model, **kwargs)

    def backward(self, closure_loss: Tensor, optimizer: torch.optim.Optimizer | None, *args: Any,
                 **kwargs: Any) -> Tensor:
        """Arms the optimizer's overlapped all-reduce for this backward (not inside a closure, which may run
        several: those are averaged once after it)."""
        if self.overlap and self.world_size > 1 and optimizer is not None:
            reducer = self._reducers.get(id(optimizer))
            if reducer is None:
                reducer = self._reducers[id(optimizer)] = OverlappedAllReduce(
                    [p for group in optimizer.param_groups for p in group["params"]], self.world_size,
                    self.bucket_cap_bytes)
            if self._in_closure:
                reducer.discard()
            else:
                reducer.arm()
        return super().backward(closure_loss, optimizer, *args, **kwargs)

    def teardown(self) -> None:
        for reducer in self._reducers.values():
            reducer.remove()
        self._reducers.clear()
        super().teardown()

    @staticmethod
    def gradients(optimizer: torch.optim.Optimizer) -> list[Tensor]:
        return [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


def register() -> None:
    StrategyRegistry.register(NAME, TwoPlayerDDPStrategy, override=True,
                              description="DDP for two-player modules: per-optimizer gradient all-reduce, "
                                          "no DistributedDataParallel wrapper")
