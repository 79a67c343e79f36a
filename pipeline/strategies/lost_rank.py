"""A collective that failed because another rank is gone: told in one line, with what to do.

A rank killed outright (OOM killer, kill -9, a node lost) closes its sockets, and the others' next collective
fails within seconds (gloo: "Connection reset/closed by peer"; NCCL: the communicator is aborted). A rank
that hangs instead is waited on for the process group's timeout: ``trainer.strategy.timeout`` (ddp_gan and
deepspeed_gan; PyTorch's default, 30 minutes), which bounds how long a frozen peer can hold a job.
"""

from __future__ import annotations

import re

import torch.distributed as dist

_LOST_PEER = re.compile(r"Connection (reset|closed) by peer|Timed out waiting|NCCL communicator was aborted|"
                        r"Watchdog caught collective operation timeout|remote process exited")

_SOURCE_LOCATION = re.compile(r"^\[[^\]]*\.(cc|cpp|h):\d+\]\s*")  # gloo's "[/path/pair.cc:537] "


def lost_rank_message(err: BaseException) -> str | None:
    """One line for a collective that failed because a peer rank died or stopped answering; None otherwise."""
    if not isinstance(err, RuntimeError) or not dist.is_available():
        return None
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    first = _SOURCE_LOCATION.sub("", first)
    if not (isinstance(err, getattr(dist, "DistError", ())) or _LOST_PEER.search(first)):
        return None
    return (f"a collective failed, another rank is gone "
            f"({first[:200]}); the checkpoints on disk are complete: resume from the run's last.ckpt with "
            f"--ckpt_path (a rank that hangs is waited on for trainer.strategy.timeout)")
