"""DDP for two players: each optimizer step averages the gradients of that optimizer's parameters, once.

Lightning's DDPStrategy wraps the whole LightningModule in one DistributedDataParallel, whose reducer expects
every parameter to get a gradient in each backward pass. A GAN's manual step touches one player, so plain DDP
fails ("unused parameters"), and ``find_unused_parameters=True`` pays a graph traversal per backward and still
all-reduces the idle player's zero gradients. Here, as in StyleGAN2-ADA's training loop, the module is not
wrapped: every rank starts from rank 0's parameters and buffers, and when a player steps, the gradients of
its optimizer's parameters (only those) are summed over ranks in flat buckets and divided by the world size.
That happens once per step, after the step's closure (every backward of the step, so accumulated micro-batches
sync once, on the last) and before the precision plugin unscales and ``on_before_optimizer_step`` clips, so
clipping and the optimizer see the global gradient on every rank and the ranks stay equal.

BatchNorm: buffers are broadcast from rank 0 at set-up and then stay per rank, each rank normalising with its
own batch statistics (DDP's ``broadcast_buffers=False``; a discriminator that runs twice per step, on reals
and on fakes, would otherwise have its statistics overwritten between the two forwards). Only rank 0's
running statistics reach checkpoints. ``Trainer(sync_batchnorm=True)`` swaps in SyncBatchNorm for global
batch statistics; PyTorch implements it for GPUs only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any, Literal

import torch
import torch.distributed as dist
from lightning_fabric.plugins import CheckpointIO, ClusterEnvironment
from lightning_fabric.plugins.collectives.torch_collective import default_pg_timeout
from pytorch_lightning.strategies import DDPStrategy, StrategyRegistry
from torch import Tensor

NAME = "ddp_gan"


def buckets(tensors: Iterable[Tensor], cap_bytes: int) -> Iterator[list[Tensor]]:
    """Groups tensors by (device, dtype), in order, into lists of at most ``cap_bytes`` (or one tensor)."""
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for tensor in tensors:
        groups.setdefault((tensor.device, tensor.dtype), []).append(tensor)
    for group in groups.values():
        bucket: list[Tensor] = []
        size = 0
        for tensor in group:
            nbytes = tensor.numel() * tensor.element_size()
            if bucket and size + nbytes > cap_bytes:
                yield bucket
                bucket, size = [], 0
            bucket.append(tensor)
            size += nbytes
        if bucket:
            yield bucket


def all_reduce_mean_(tensors: Iterable[Tensor], world_size: int, cap_bytes: int) -> None:
    """In place: every tensor becomes its mean over ranks, one all-reduce per bucket (gloo has no AVG)."""
    for bucket in buckets(tensors, cap_bytes):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        dist.all_reduce(flat)
        flat.div_(world_size)
        _scatter_back(flat, bucket)


def broadcast_(tensors: Iterable[Tensor], cap_bytes: int, src: int = 0) -> None:
    """In place: every tensor becomes rank ``src``'s, one broadcast per bucket."""
    for bucket in buckets(tensors, cap_bytes):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        dist.broadcast(flat, src)
        _scatter_back(flat, bucket)


def _scatter_back(flat: Tensor, bucket: list[Tensor]) -> None:
    with torch.no_grad():
        for tensor, chunk in zip(bucket, flat.split([t.numel() for t in bucket]), strict=True):
            tensor.copy_(chunk.view_as(tensor))


class TwoPlayerDDPStrategy(DDPStrategy):
    """Multi-process data parallelism for modules with one optimizer per player (``strategy="ddp_gan"``).

    Args:
        bucket_cap_mb: largest flat buffer per all-reduce, as DDP's option of that name.
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
    ):
        super().__init__(accelerator=accelerator, parallel_devices=parallel_devices,
                         cluster_environment=cluster_environment, checkpoint_io=checkpoint_io,
                         precision_plugin=precision_plugin, process_group_backend=process_group_backend,
                         timeout=timeout, start_method=start_method)
        self.bucket_cap_bytes = int(bucket_cap_mb * 1024 * 1024)

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
            result = closure()
            all_reduce_mean_(self.gradients(optimizer), self.world_size, self.bucket_cap_bytes)
            return result

        return super().optimizer_step(optimizer, closure_then_average, model, **kwargs)

    @staticmethod
    def gradients(optimizer: torch.optim.Optimizer) -> list[Tensor]:
        return [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


def register() -> None:
    StrategyRegistry.register(NAME, TwoPlayerDDPStrategy, override=True,
                              description="DDP for two-player modules: per-optimizer gradient all-reduce, "
                                          "no DistributedDataParallel wrapper")
