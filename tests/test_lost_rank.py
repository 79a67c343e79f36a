"""A collective whose peer rank died is told in one line (pipeline/strategies/lost_rank.py), on the real error
that gloo raises when the other process is killed."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist

from pipeline.strategies.lost_rank import lost_rank_message

PEER = textwrap.dedent("""
    import os, sys, torch.distributed as dist
    dist.init_process_group("gloo", init_method=sys.argv[1], rank=1, world_size=2)
    os._exit(9)  # dies without a word, as under kill -9
""")


def test_a_killed_peer_makes_the_next_collective_fail_in_one_line(tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    peer = subprocess.Popen([sys.executable, "-c", PEER, init], env=dict(os.environ, OMP_NUM_THREADS="1"))
    dist.init_process_group("gloo", init_method=init, rank=0, world_size=2)
    try:
        peer.wait(timeout=60)
        with pytest.raises(RuntimeError) as failed:
            dist.all_reduce(torch.ones(4))
        message = lost_rank_message(failed.value)
    finally:
        dist.destroy_process_group()
    assert message is not None and "\n" not in message
    assert message.startswith("a collective failed, another rank is gone (")
    assert "by peer" in message and ".cc:" not in message  # gloo's own words, without its source location
    assert "resume from the run's last.ckpt" in message


def test_other_runtime_errors_are_not_taken_for_a_lost_rank():
    assert lost_rank_message(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 2x8)")) is None
    assert lost_rank_message(ValueError("Connection reset by peer")) is None  # not a collective's error
