"""Torch's global RNG, forked and seeded for one block of code.

Networks may draw random numbers inside forward from torch's global RNG (StyleGAN2's noise inputs and style
mixing do). Running each such forward on a fork seeded from a known stream makes those draws a function of
the stream alone: a resumed run, a re-run evaluation or a sample with a given seed draws the same numbers,
and the RNG outside the block is left exactly as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Runs the block on torch's global CPU RNG (and ``device``'s, when it is a GPU) forked and seeded with
    ``seed``; both are restored afterwards."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def next_seed(generator: torch.Generator) -> int:
    """A seed drawn from ``generator``'s stream (the numbers after what it drew so far), for a fork of the global
    RNG that must not repeat the generator's own draws."""
    return int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
