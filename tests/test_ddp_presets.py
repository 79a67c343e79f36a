"""Every preset trains as a 2-rank ddp_gan job through the ``ganforge`` CLI, ranks staying equal.

A preset is a file under configs/ that names a model (fragments such as wandb.yaml and sweep files are not).
"""

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from ddp_launch import REPO, run_ranks

STEPS = 3
PRESETS = sorted(p for p in (REPO / "configs").glob("*.yaml") if "model" in (yaml.safe_load(p.read_text()) or {}))


class RankStateDump(pl.Callback):
    """Writes each rank's weights and step count at the end of training (checkpoints hold rank 0's only)."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)

    def on_train_end(self, trainer, pl_module) -> None:
        torch.save({"state": pl_module.state_dict(), "global_step": trainer.global_step,
                    "world_size": trainer.world_size}, self.out_dir / f"rank{trainer.global_rank}.pt")


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_trains_on_two_ranks(tmp_path, preset):
    dump = {"class_path": "test_ddp_presets.RankStateDump", "init_args": {"out_dir": str(tmp_path)}}
    run_ranks(["-m", "pipeline.cli", "fit", "--config", str(preset), "--trainer.strategy", "ddp_gan",
               "--trainer.devices", "2", "--trainer.num_nodes", "1", "--trainer.max_steps", str(STEPS),
               "--trainer.enable_progress_bar", "false", f"--trainer.callbacks+={json.dumps(dump)}"],
              cwd=tmp_path, extra_path=Path(__file__).parent)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert [(r["global_step"], r["world_size"]) for r in ranks] == [(STEPS, 2)] * 2
    for name, tensor in ranks[0]["state"].items():
        if not name.endswith(("running_mean", "running_var", "num_batches_tracked")):  # per rank by design
            assert torch.equal(tensor, ranks[1]["state"][name]), name
