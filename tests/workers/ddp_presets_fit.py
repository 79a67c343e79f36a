"""One rank of a 2-rank job that trains every preset in turn (the process group outlives each fit), so the
per-process start-up (imports, gloo rendezvous) is paid once rather than once per preset.

    RANK=r LOCAL_RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=p python ddp_presets_fit.py OUT DATA CONFIGS...

Writes OUT/<preset>.rank<r>.pt: the rank's weights, generator steps and world size after STEPS steps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from pipeline.commands.cli import run_cli

STEPS = 3


def main(out: Path, index: str, configs: list[str]) -> None:
    torch.set_num_threads(1)
    cond_checkpoint = out / "dcgan_cond.ckpt"
    for config in configs:
        name = Path(config).stem
        args = ["--config", config, "--trainer.strategy", "ddp_gan", "--trainer.accelerator", "cpu",
                "--trainer.devices", "2", "--trainer.num_nodes", "1", "--trainer.max_steps", str(STEPS),
                "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                "--trainer.logger", "false", "--trainer.callbacks", "[]", "--trainer.enable_checkpointing", "false",
                "--trainer.default_root_dir", str(out / name)]
        if "WebDataModule" in Path(config).read_text():
            args += ["--data.init_args.index", index, "--data.init_args.num_workers", "0",
                     "--data.init_args.batch_size", "8"]
        if name == "icgan":
            args += ["--model.init_args.generator_checkpoint", str(cond_checkpoint)]
        cli = run_cli(args, run=False)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        if name == "dcgan_cond":
            cli.trainer.save_checkpoint(cond_checkpoint)
        torch.save({"state": cli.model.state_dict(), "global_step": cli.trainer.global_step,
                    "world_size": cli.trainer.world_size}, out / f"{name}.rank{cli.trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])
