"""Flat buckets of tensors for collectives: one all-reduce or broadcast per bucket instead of one per tensor."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist
from torch import Tensor


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
        scatter_back(flat, bucket)


def broadcast_(tensors: Iterable[Tensor], cap_bytes: int, src: int = 0) -> None:
    """In place: every tensor becomes rank ``src``'s, one broadcast per bucket."""
    for bucket in buckets(tensors, cap_bytes):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        dist.broadcast(flat, src)
        scatter_back(flat, bucket)


def scatter_back(flat: Tensor, bucket: list[Tensor]) -> None:
    with torch.no_grad():
        for tensor, chunk in zip(bucket, flat.split([t.numel() for t in bucket]), strict=True):
            tensor.copy_(chunk.view_as(tensor))
