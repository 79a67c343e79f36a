"""Image quality of each image preset on the bundled digits or Fashion-MNIST (32 px, CPU), as a markdown table.

Every run is ``ganforge fit`` in-process, no checkpoints or logger; at the end ImageMetricsCallback scores EMA
samples with the in-domain feature net (Fréchet distance on its features, classes covered, KL of the class
histogram to uniform, and for conditional presets the share of samples classified as the class they were
generated for), with the real FID Inception when given (FID on --fid-samples, resized to 299 px bicubic), and
SampleGridCallback writes the sample grid, copied to ``--grids`` (docs/ for the README). Arguments after ``--``
go to every fit:

    python scripts/bench_quality.py                                   # digits, all presets, their own lengths
    python scripts/bench_quality.py --presets dcgan -- --trainer.max_steps 300
    python scripts/bench_quality.py --data fashion-mnist --budget-s 1800 \\
        --inception .cache/test-assets/fid_inception_default_1.pt    # same CPU wall clock for every preset
    python scripts/bench_quality.py --data fashion-mnist --subset 1000 --budget-s 1800   # small-data regime
    python scripts/bench_quality.py --throughput --presets dcgan stylegan2               # kimg/s, no metrics

``--budget-s`` trains every preset for the same wall-clock seconds (a Timer callback; the preset's max_steps
lifted), or with ``--budget-clock cpu`` for the same CPU seconds of the training process (fair when other work
shares the machine: run with ``--threads 1``); ``--subset N`` trains on the first N training images (the metrics'
real statistics are of those images too). The shards and the feature net are made first if missing (as
scripts/quickstart.sh does); Fashion-MNIST comes from Debian's dataset-fashion-mnist IDX files. Real statistics are
cached in --cache-dir.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Timer

from pipeline.callbacks.image_metrics import ImageMetricsCallback
from pipeline.commands import shards as shards_command
from pipeline.commands.cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
METRICS = f"{ImageMetricsCallback.__module__}.{ImageMetricsCallback.__name__}"


@dataclass(frozen=True)
class Dataset:
    title: str
    source: str
    shards: Path
    presets: tuple[str, ...]
    fd_samples: int


DATASETS = {
    "digits": Dataset("Bundled digits", "sklearn-digits", ROOT / "data" / "digits32",
                      ("dcgan", "dcgan_cond", "wgan_gp_resnet", "sngan_hinge_resnet", "sngan_projection", "bigan",
                       "stylegan2"), 1000),
    "fashion-mnist": Dataset("Fashion-MNIST", "fashion-mnist", ROOT / "data" / "fmnist32",
                             ("dcgan", "sngan_hinge_resnet", "stylegan2_fmnist"), 5000),
}


def ensure_data(dataset: Dataset, subset: int | None) -> tuple[Path, Path]:
    """The training shards (the first ``subset`` images, or all) and the feature net (trained on all of them)."""
    if not (dataset.shards / "shards.json").is_file():
        shards_command.main(["--source", dataset.source, "--resolution", "32", "--out", str(dataset.shards)])
    feature_net = dataset.shards / "feature_net.pt"
    if not feature_net.is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "train_feature_net.py"), "--shards",
                        str(dataset.shards), "--out", str(feature_net)], check=True)
    if subset is None:
        return dataset.shards, feature_net
    shards = dataset.shards.with_name(f"{dataset.shards.name}_first{subset}")
    if not (shards / "shards.json").is_file():
        shards_command.main(["--source", dataset.source, "--resolution", "32", "--limit", str(subset),
                             "--out", str(shards)])
    return shards, feature_net


class CpuBudget(pl.Callback):
    """Stops training once the process has spent ``seconds`` of CPU time in it (all its threads, not the
    data loader's worker processes): the same work for every preset however busy the machine is."""

    def __init__(self, seconds: float):
        self.seconds, self.start, self.spent = seconds, None, 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = time.process_time()

    def on_train_batch_end(self, trainer, *args) -> None:
        self.spent = time.process_time() - self.start
        if self.spent >= self.seconds:
            trainer.should_stop = True


def fit(preset: str, shards: Path, callbacks: list[dict], extra: list[str], root: Path, budget_s: float | None,
        *objects: pl.Callback, clock: str = "wall"):
    """``ganforge fit`` of the preset with these callbacks (config dicts, then ``objects``), plus a Timer
    (which stops it after ``budget_s`` wall-clock seconds) or, with ``clock="cpu"``, a CpuBudget."""
    args = ["--config", str(ROOT / "configs" / f"{preset}.yaml"),
            "--data.init_args.index", str(shards / "shards.json"), "--trainer.default_root_dir", str(root),
            "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.callbacks", json.dumps(callbacks), *extra]
    cli = run_cli(args, run=False)
    # First in the list: their on_train_end runs before the metrics callbacks' evaluation.
    wall = None if budget_s is None or clock == "cpu" else {"seconds": budget_s}
    budget = [CpuBudget(budget_s)] if budget_s is not None and clock == "cpu" else []
    cli.trainer.callbacks[:0] = [Timer(duration=wall), *budget, *objects]
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli


def train_seconds(cli) -> float:
    """Training wall-clock seconds, or CPU seconds under a CpuBudget."""
    cpu = [c for c in cli.trainer.callbacks if isinstance(c, CpuBudget)]
    return cpu[0].spent if cpu else next(c for c in cli.trainer.callbacks if isinstance(c, Timer)).time_elapsed("train")


def quality_row(preset: str, args, shards: Path, feature_net: Path, extra: list[str], workdir: Path,
                fd_samples: int) -> str:
    """One table row: FID (with an Inception file), in-domain FD and class metrics, kimg, seconds."""
    callbacks = [{"class_path": METRICS, "init_args": {"feature_net": str(feature_net), "every_n_steps": 0,
                                                       "num_samples": fd_samples, "cache_dir": args.cache_dir}},
                 {"class_path": "pipeline.callbacks.sample_grid.SampleGridCallback", "init_args": {"every_n_steps": 0}}]
    if args.inception:
        callbacks.append({"class_path": METRICS, "init_args": {"inception": args.inception, "every_n_steps": 0,
                                                               "num_samples": args.fid_samples,
                                                               "cache_dir": args.cache_dir}})
    lengths = ["--trainer.max_steps", "-1"] if args.budget_s is not None else []
    root = workdir / preset
    cli = fit(preset, shards, callbacks, [*lengths, *extra], root, args.budget_s, clock=args.budget_clock)
    found = [c.evaluations[-1][1] for c in cli.trainer.callbacks if isinstance(c, ImageMetricsCallback)]
    metrics = {k: v for m in found for k, v in m.items()}
    grids = Path(args.grids)
    grids.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.data == "digits" else f"_{args.data}" + ("" if args.subset is None else f"_{args.subset}")
    shutil.copyfile(max((root / "samples").glob("grid_*.png")), grids / f"{preset}{suffix}.png")
    accuracy = metrics.get("metrics/class_accuracy")
    fid = f"{metrics['metrics/fid']:.1f} | " if args.inception else ""
    return (f"| {preset} | {fid}{metrics['metrics/fd_indomain']:.1f} | {metrics['metrics/class_coverage']:.0f}/10 | "
            f"{metrics['metrics/class_kl']:.3f} | {'' if accuracy is None else f'{100 * accuracy:.1f}'} | "
            f"{cli.model.images_seen / 1000:.1f} | {train_seconds(cli):.0f} |")


class StepClock(pl.Callback):
    """Seconds and images shown to D from the end of generator step ``warmup`` to the end of training
    (leaves out the data loader's start and its shuffle buffer filling)."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.images = warmup, None, 0

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if trainer.global_step == self.warmup and self.start is None:
            self.start, self.images = time.perf_counter(), pl_module.images_seen

    def on_train_end(self, trainer, pl_module) -> None:
        self.seconds, self.images = time.perf_counter() - self.start, pl_module.images_seen - self.images


THROUGHPUT_WARMUP = 5


def throughput_row(preset: str, args, shards: Path, extra: list[str], workdir: Path) -> str:
    """kimg/s over --throughput-steps generator steps after 5 warm-up steps (images shown to D per second)."""
    clock = StepClock(THROUGHPUT_WARMUP)
    steps = THROUGHPUT_WARMUP + args.throughput_steps
    cli = fit(preset, shards, [], ["--trainer.max_steps", str(steps), *extra], workdir / preset, None, clock)
    seconds, kimg = clock.seconds, clock.images / 1000
    return (f"| {preset} | {cli.datamodule.hparams.batch_size} | {args.throughput_steps} | {kimg:.2f} | "
            f"{seconds:.1f} | {kimg / seconds:.3f} |")


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=tuple(DATASETS), default="digits", help="the 32 px training set")
    parser.add_argument("--presets", nargs="+", default=None,
                        help="config names under configs/ (default: the --data's image presets)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="train each preset for this many wall-clock seconds (default: its own max_steps)")
    parser.add_argument("--budget-clock", choices=("wall", "cpu"), default="wall",
                        help="what --budget-s counts: wall-clock seconds, or the training process's CPU seconds")
    parser.add_argument("--subset", type=int, default=None, help="train on the first N training images only")
    parser.add_argument("--inception", default=os.environ.get("GANFORGE_FID_INCEPTION"),
                        help="FID Inception file (default $GANFORGE_FID_INCEPTION); no FID without one")
    parser.add_argument("--fid-samples", type=int, default=2000, help="samples (and real images) for FID")
    parser.add_argument("--fd-samples", type=int, default=None,
                        help="samples for the in-domain FD (default 1000 digits, 5000 Fashion-MNIST)")
    parser.add_argument("--throughput", action="store_true", help="kimg/s per preset instead of quality")
    parser.add_argument("--throughput-steps", type=int, default=30, help="generator steps per throughput run")
    parser.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/ganforge/real_stats"),
                        help="where real-image statistics are cached between runs")
    parser.add_argument("--grids", default=str(ROOT / "docs"), help="where each preset's sample grid is copied")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    for option, value in (("--budget-s", args.budget_s), ("--subset", args.subset),
                          ("--fid-samples", args.fid_samples), ("--fd-samples", args.fd_samples),
                          ("--throughput-steps", args.throughput_steps)):
        if value is not None and value <= 0:
            parser.error(f"{option} must be > 0, got {value}")
    if args.inception and not Path(args.inception).is_file():
        parser.error(f"--inception {args.inception}: no such file (the FID Inception TorchScript file)")
    torch.set_num_threads(args.threads)
    dataset = DATASETS[args.data]
    presets = args.presets or list(dataset.presets)
    shards, feature_net = ensure_data(dataset, args.subset)
    fd_samples = args.fd_samples or dataset.fd_samples

    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for preset in presets:
            if args.throughput:
                rows.append(throughput_row(preset, args, shards, extra, Path(workdir)))
            else:
                rows.append(quality_row(preset, args, shards, feature_net, extra, Path(workdir), fd_samples))
            print(f"# {rows[-1]}", file=sys.stderr, flush=True)

    images = "all training images" if args.subset is None else f"the first {args.subset} training images"
    length = ("its own max_steps" if args.budget_s is None else
              f"{args.budget_s:.0f} {'CPU ' if args.budget_clock == 'cpu' else ''}s (then to the step's end)")
    threads = torch.get_num_threads()
    print(f"\n{dataset.title}, 32 px, {images}, {threads} CPU thread{'s' if threads > 1 else ''}; each preset "
          f"trained for {length}. Extra args: {' '.join(extra) or 'none'}\n")
    if args.throughput:
        print(f"| preset | batch | G steps (after {THROUGHPUT_WARMUP} warm-up) | kimg | training s | kimg/s |")
        print("|---|---|---|---|---|---|")
    else:
        fid = (f"FID ({args.fid_samples} EMA samples vs {args.fid_samples} real, 299 px bicubic) | "
               if args.inception else "")
        print(f"| preset | {fid}in-domain FD ({fd_samples} samples) | classes | class KL | "
              f"asked-class accuracy % | kimg | training {'CPU ' if args.budget_clock == 'cpu' else ''}s |")
        print("|---" * (8 if args.inception else 7) + "|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
