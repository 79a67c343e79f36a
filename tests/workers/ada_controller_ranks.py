"""Two gloo ranks feed an AdaController different real scores; each prints its p and r_t as one JSON line."""

import json
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from modules.augment.ada_controller import AdaController


def rank_main(rank: int, port: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    controller = AdaController(p=0.5, target=0.6, ada_kimg=1.0, interval=2)
    # rank 0 sees 8 positive scores per step, rank 1 sees 8 negative: the global r_t is 0 (< target: p falls);
    # either rank alone would move p the other way or by another step.
    scores = torch.full((8,), 1.0 if rank == 0 else -1.0)
    history = []
    for _ in range(4):
        controller.observe(scores, batch_images=16)
        history.append(round(float(controller.p), 6))
    print(json.dumps({"rank": rank, "p": history, "rt": float(controller.rt),
                      "running": controller.running.tolist()}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    other = mp.get_context("spawn").Process(target=rank_main, args=(1, sys.argv[1]))
    other.start()
    rank_main(0, sys.argv[1])
    other.join(timeout=60)
    sys.exit(other.exitcode)
