"""Every preset trains as a 2-rank ddp_gan job, its ranks staying equal.

A preset is a file under configs/ that names a model (fragments such as wandb.yaml and sweep files are not).
Both ranks train all presets in turn in one pair of processes (tests/workers/ddp_presets_fit.py).
"""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from ddp_launch import REPO

from pipeline.commands.shards import main as write_shards

PRESETS = sorted(p for p in (REPO / "configs").glob("*.yaml") if "model" in (yaml.safe_load(p.read_text()) or {}))
WORKER = Path(__file__).parent / "workers" / "ddp_presets_fit.py"
STEPS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp_presets")
    write_shards(["--source", "sklearn-digits", "--resolution", "32", "--out", str(out / "digits")])
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(free_port()))
    ranks = [subprocess.Popen([sys.executable, str(WORKER), str(out), str(out / "digits" / "shards.json"),
                               *map(str, PRESETS)], cwd=out, env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
             for r in (0, 1)]
    try:
        outputs = [rank.communicate(timeout=600)[0] for rank in ranks]
    except subprocess.TimeoutExpired:
        for rank in ranks:
            os.killpg(rank.pid, signal.SIGKILL)
        raise AssertionError("2-rank preset job exceeded 600 s") from None
    for rank, output in zip(ranks, outputs, strict=True):
        assert rank.returncode == 0, output[-6000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_trains_on_two_ranks(trained, preset):
    ranks = [torch.load(trained / f"{preset.stem}.rank{r}.pt") for r in (0, 1)]
    assert [(r["global_step"], r["world_size"]) for r in ranks] == [(STEPS, 2)] * 2
    for name, tensor in ranks[0]["state"].items():
        if not name.endswith(("running_mean", "running_var", "num_batches_tracked")):  # per rank by design
            assert torch.equal(tensor, ranks[1]["state"][name]), name
