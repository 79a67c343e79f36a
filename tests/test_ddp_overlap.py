"""ddp_gan's overlapped all-reduce on 2 real gloo ranks: buckets launch during the backward, in reverse order of
the parameters, as soon as their gradients are final; the averages equal the all-reduce after the backward, also
with accumulated micro-batches; the idle player sends nothing."""

import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pipeline.strategies.gradient_buckets import all_reduce_mean_
from pipeline.strategies.overlapped_all_reduce import OverlappedAllReduce

WORLD = 2


def make_players() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return (nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1)),
            nn.Linear(3, 1))


def loss_of(net: nn.Module, rank: int, micro_batch: int) -> torch.Tensor:
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(100 * rank + micro_batch))
    return net(x).pow(2).mean()


def rank_main(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    events: list[str] = []
    all_reduce = dist.all_reduce

    def recording_all_reduce(tensor, *args, **kwargs):
        events.append(f"all_reduce {tensor.numel()}")
        return all_reduce(tensor, *args, **kwargs)

    dist.all_reduce = recording_all_reduce
    results = {}
    for micro_batches in (1, 2):
        net, idle = make_players()
        reducer = OverlappedAllReduce(net.parameters(), WORLD, cap_bytes=1)  # one bucket per tensor
        idle_reducer = OverlappedAllReduce(idle.parameters(), WORLD, cap_bytes=1)
        first = net[0].weight  # the last gradient a backward produces
        first.register_post_accumulate_grad_hook(lambda p: events.append("first layer's gradient final"))
        events.clear()
        for k in range(micro_batches):
            reducer.arm()
            loss_of(net, rank, k).backward()
            events.append("backward returned")
        idle(torch.ones(2, 3)).sum().backward()  # the idle player's reducer is not armed: nothing is sent
        reducer.finish()
        overlapped, overlapped_events = [p.grad.clone() for p in net.parameters()], list(events)

        reference, _ = make_players()
        for k in range(micro_batches):
            loss_of(reference, rank, k).backward()
        all_reduce_mean_([p.grad for p in reference.parameters()], WORLD, cap_bytes=1)
        results[micro_batches] = {"events": overlapped_events, "overlapped": overlapped,
                                  "reference": [p.grad.clone() for p in reference.parameters()],
                                  "sizes": [p.numel() for p in net.parameters()]}
        reducer.remove()
        idle_reducer.remove()
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_buckets_reduce_during_the_backward_and_equal_the_reduce_after_it(tmp_path):
    # spawn, not fork: a fork of the suite's process (its wandb, gloo and OpenMP threads) can inherit a held lock
    # and hang; a deadline turns a hung rank into a failure instead of a stalled suite.
    ranks_running = mp.start_processes(rank_main, args=(free_port(), str(tmp_path)), nprocs=WORLD,
                                       start_method="spawn", join=False)
    deadline = time.monotonic() + 120
    while not ranks_running.join(timeout=1):
        if time.monotonic() > deadline:
            for process in ranks_running.processes:
                process.kill()
            raise AssertionError("the 2 gloo ranks did not finish within 120 s")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for micro_batches in (1, 2):
        result = ranks[0][micro_batches]
        sizes = result["sizes"]
        # The last micro-batch's backward: every bucket launched, last layer first, before the backward returned,
        # the later layers' before the first layer's weight (the last gradient) was final.
        tail = result["events"][-(len(sizes) + 2):]
        assert tail[-1] == "backward returned"
        launches = [e for e in tail if e.startswith("all_reduce")]
        assert launches == [f"all_reduce {n}" for n in reversed(sizes)]
        assert tail.index("first layer's gradient final") > tail.index(f"all_reduce {sizes[2]}")
        # An earlier micro-batch's launches were dropped, then relaunched: one set per backward, none for idle.
        assert sum(e.startswith("all_reduce") for e in result["events"]) == micro_batches * len(sizes)
        for rank in ranks:
            for got, want in zip(rank[micro_batches]["overlapped"], rank[micro_batches]["reference"], strict=True):
                assert torch.equal(got, want)
        for a, b in zip(ranks[0][micro_batches]["overlapped"], ranks[1][micro_batches]["overlapped"], strict=True):
            assert torch.equal(a, b)
