"""Under DDP only rank 0 creates the W&B run: a 2-process fit leaves exactly one run, which saw both ranks."""

import os
import subprocess
import sys
from pathlib import Path

from test_wandb_run import BATCH, fit_args

from pipeline.tracking.run_reader import read_local_runs

STEPS = 10


def test_two_process_ddp_fit_creates_one_run(tmp_path):
    # No evaluation callback: their plots ask trainer.log_dir (a collective) on rank 0 alone and hang under DDP.
    args = fit_args(tmp_path, "--trainer.devices", "2", "--trainer.strategy", "ddp_find_unused_parameters_true",
                    steps=STEPS, evaluate=False)
    env = {**os.environ, "WANDB_MODE": "offline"}
    done = subprocess.run([sys.executable, "-m", "pipeline.commands.cli", *args], cwd=Path(__file__).parents[1],
                          env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list(tmp_path.rglob("run-*.wandb"))) == 1
    (run,) = read_local_runs(tmp_path / "wandb")
    assert run.config["run"]["distributed"]["world_size"] == 2
    assert run.config["run"]["distributed"]["strategy"] == "DDPStrategy"
    assert run.summary["run/final_kimg"] == STEPS * BATCH * 2 / 1000  # images of both ranks
