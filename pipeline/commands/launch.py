"""``ganforge launch``: render slurm/train.sbatch for N nodes x G GPUs, print it, and submit it with sbatch.

    ganforge launch --config configs/ring8.yaml --nodes 2 --gpus-per-node 4 --time 12:00:00 --partition gpu
    ganforge launch --config configs/ring8.yaml --nodes 1 --gpus-per-node 1 --seeds 0 1 2 --dry-run
    ganforge launch --config configs/gan.yaml --nodes 1 --gpus-per-node 2 --sweep model.init_args.lr_g=1e-3,2e-4 \\
        -- --trainer.max_steps 5000

Options after ``--`` go to ``ganforge fit`` unchanged. ``--seeds`` and ``--sweep`` make a job array with one
task per combination (seed x sweep values); every task is its own job, run folder and requeue cycle.
Each job writes under ``<out-dir>/<job id>[_<task>]/``; Slurm's output goes to ``<out-dir>/<job name>-<id>.out``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import itertools
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "slurm" / "train.sbatch"
STARTUP_MARGIN_S = 60  # a job needs this long to start training after the signal lead is subtracted
_FIELD = re.compile(r"{{(\w+)}}")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    fit_args: list[str] = []
    if "--" in argv:
        argv, fit_args = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    parser = argparse.ArgumentParser(prog="ganforge launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", required=True, help="config file(s) for `ganforge fit`")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=1, help="one task per GPU (per CPU process with "
                                                                      "--accelerator cpu)")
    parser.add_argument("--accelerator", choices=["gpu", "cpu"], default="gpu")
    parser.add_argument("--strategy", default="ddp_gan", help="trainer.strategy (ddp_gan, deepspeed_gan)")
    parser.add_argument("--partition")
    parser.add_argument("--account")
    parser.add_argument("--qos")
    parser.add_argument("--time", help="time limit, in sbatch's format (minutes, HH:MM:SS, D-HH:MM, ...)")
    parser.add_argument("--cpus-per-task", type=int)
    parser.add_argument("--signal-lead", type=int, default=120,
                        help="seconds before the time limit at which SIGUSR1 asks the run to checkpoint and requeue")
    parser.add_argument("--max-requeues", type=int, default=20, help="a job is requeued at most this often")
    parser.add_argument("--seeds", type=int, nargs="+", help="job array: one task per seed (seed_everything)")
    parser.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                        help="job array: one task per value of this fit option (repeatable: all combinations)")
    parser.add_argument("--job-name", help="default: the last config's file name")
    parser.add_argument("--out-dir", help="default: runs/slurm/<job name>")
    parser.add_argument("--template", type=Path, default=TEMPLATE)
    parser.add_argument("--dry-run", action="store_true", help="print the job script, do not submit it")
    return parser.parse_args(argv), fit_args


def main(argv: list[str]) -> None:
    args, fit_args = parse_args(argv)
    script = render(args, fit_args)
    print(script)
    if args.dry_run:
        return
    out_dir = output_folder(args)
    out_dir.mkdir(parents=True, exist_ok=True)  # Slurm does not create the folder of --output
    path = out_dir / f"{job_name(args)}.sbatch"
    path.write_text(script)
    done = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ValueError(f"sbatch {path} failed: {done.stderr.strip()}")
    job_id = done.stdout.strip().split(";")[0]
    print(f"submitted job {job_id}: runs in {out_dir}/{job_id}*, Slurm output in {out_dir}")


def render(args: argparse.Namespace, fit_args: list[str]) -> str:
    for config in args.config:
        if not Path(config).is_file():
            raise FileNotFoundError(f"no config file {config}")
    if min(args.nodes, args.gpus_per_node) < 1:
        raise ValueError("--nodes and --gpus-per-node must be >= 1")
    if args.time is not None and slurm_seconds(args.time) <= args.signal_lead + STARTUP_MARGIN_S:
        raise ValueError(f"--time {args.time} leaves no training time after the {args.signal_lead} s signal lead "
                         f"(+{STARTUP_MARGIN_S} s start-up): the job would be signalled as it starts and requeue "
                         "itself without progress; lengthen --time or shorten --signal-lead")
    workdir, out_dir = Path.cwd(), output_folder(args)
    for path in (workdir, out_dir):
        if re.search(r"\s", str(path)):
            raise ValueError(f"{path}: #SBATCH lines cannot hold paths with white space")
    tasks = array_tasks(args.seeds, args.sweep)
    directives = [f"#SBATCH --{key}={value}" for key, value in (
        ("gpus-per-node", args.gpus_per_node if args.accelerator == "gpu" else None),
        ("cpus-per-task", args.cpus_per_task), ("time", args.time), ("partition", args.partition),
        ("account", args.account), ("qos", args.qos), ("array", f"0-{len(tasks) - 1}" if tasks else None),
    ) if value is not None]
    callback = {"class_path": "pipeline.callbacks.preemption.PreemptionCheckpoint",
                "init_args": {"max_requeues": args.max_requeues}}
    fields = {
        "job_name": job_name(args), "nodes": args.nodes, "tasks_per_node": args.gpus_per_node,
        "signal_lead": args.signal_lead, "out_dir": out_dir, "workdir": workdir,
        "log_name": "%x-%A_%a" if tasks else "%x-%j", "directives": "\n".join(directives),
        "task_args": task_args_case(tasks), "python": shlex.quote(sys.executable),
        "config_args": " ".join(f"--config {shlex.quote(c)}" for c in args.config),
        "accelerator": args.accelerator, "strategy": shlex.quote(args.strategy),
        "logger_args": logger_args(args.config), "preemption_callback": json.dumps(callback),
        "fit_args": " ".join(shlex.quote(a) for a in fit_args),
    }
    text = _FIELD.sub(lambda m: str(fields[m.group(1)]), args.template.read_text())
    return text.replace("\n\n\n", "\n\n")


def job_name(args: argparse.Namespace) -> str:
    return args.job_name or Path(args.config[-1]).stem


def output_folder(args: argparse.Namespace) -> Path:
    return Path.cwd() / (args.out_dir or f"runs/slurm/{job_name(args)}")  # an absolute --out-dir stays as is


def array_tasks(seeds: list[int] | None, sweeps: list[str]) -> list[list[str]]:
    """Fit options per array task: every combination of seed and sweep values ([] when not an array)."""
    axes = [[["--seed_everything", str(s)] for s in seeds]] if seeds else []
    for sweep in sweeps:
        key, sep, values = sweep.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"--sweep {sweep!r} is not KEY=V1,V2,...")
        axes.append([[f"--{key.removeprefix('--')}", value] for value in values.split(",")])
    return [sum(combo, []) for combo in itertools.product(*axes)] if axes else []


def task_args_case(tasks: list[list[str]]) -> str:
    if not tasks:
        return "task_args=()"
    cases = "\n".join(f"  {i}) task_args=({' '.join(shlex.quote(a) for a in task)}) ;;"
                      for i, task in enumerate(tasks))
    return f'case "$SLURM_ARRAY_TASK_ID" in\n{cases}\nesac'


def logger_args(configs: list[str]) -> str:
    """Puts the configured logger's files in the run folder and, where it takes a version, pins that to the job
    id, so a requeued job logs on into the same run (W&B's logger derives its run id from the job itself)."""
    logger = None
    for config in configs:
        trainer = (yaml.safe_load(Path(config).read_text()) or {}).get("trainer") or {}
        logger = trainer.get("logger", logger)
    if not isinstance(logger, dict) or "class_path" not in logger:
        print("ganforge launch: note: the config names no single logger, so Lightning's default logger starts "
              "a new version folder when a requeued job resumes", file=sys.stderr)
        return ""
    class_path = logger["class_path"]
    module, _, name = class_path.rpartition(".")
    params = inspect.signature(getattr(importlib.import_module(module or "pytorch_lightning.loggers"), name)).parameters
    options = [("save_dir", '"$run_dir"'), ("version", '"$run_id"')]
    return " ".join(f"--trainer.logger.init_args.{key} {value}" for key, value in options if key in params)


def slurm_seconds(time: str) -> int:
    """sbatch --time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    days, _, clock = time.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:
        hours, (minutes, seconds) = 0, (parts + [0])[:2]
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
