"""Image quality of each image preset on the bundled digits (32 px, CPU), as a markdown table.

Every run is ``ganforge fit`` in-process with its preset's own training length, no checkpoints or logger;
at the end ImageMetricsCallback scores 1,000 EMA samples with the in-domain feature net (Fréchet distance
on its features, classes covered, KL of the class histogram to uniform, and for conditional presets the
share of samples classified as the class they were generated for) and SampleGridCallback writes the
sample grid, copied to ``--grids`` (docs/ for the README). Arguments after ``--`` go to every fit:

    python scripts/bench_quality.py                                   # all presets, their own lengths
    python scripts/bench_quality.py --presets dcgan -- --trainer.max_steps 300

The shards and the feature net are made first if missing (as scripts/quickstart.sh does).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from pipeline.callbacks.image_metrics import ImageMetricsCallback
from pipeline.commands import shards as shards_command
from pipeline.commands.cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ["dcgan", "dcgan_cond", "wgan_gp_resnet", "sngan_hinge_resnet", "sngan_projection", "bigan"]
SHARDS = ROOT / "data" / "digits32"
FEATURE_NET = SHARDS / "feature_net.pt"
NUM_SAMPLES = 1000


def ensure_data() -> None:
    if not (SHARDS / "shards.json").is_file():
        shards_command.main(["--source", "sklearn-digits", "--resolution", "32", "--out", str(SHARDS)])
    if not FEATURE_NET.is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "train_feature_net.py"), "--shards", str(SHARDS),
                        "--out", str(FEATURE_NET)], check=True)


def run_once(preset: str, extra: list[str], workdir: Path, grids: Path) -> tuple[dict[str, float], float]:
    """The final metrics and the seconds of one training run; its last sample grid goes to ``grids``."""
    callbacks = [
        {"class_path": f"{ImageMetricsCallback.__module__}.{ImageMetricsCallback.__name__}",
         "init_args": {"feature_net": str(FEATURE_NET), "every_n_steps": 0, "num_samples": NUM_SAMPLES,
                       "cache_dir": str(workdir / "real_stats")}},
        {"class_path": "pipeline.callbacks.sample_grid.SampleGridCallback", "init_args": {"every_n_steps": 0}},
    ]
    root = workdir / preset
    args = ["fit", "--config", str(ROOT / "configs" / f"{preset}.yaml"),
            "--data.init_args.index", str(SHARDS / "shards.json"), "--trainer.default_root_dir", str(root),
            "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.callbacks", json.dumps(callbacks), *extra]
    start = time.perf_counter()
    cli = run_cli(args)
    seconds = time.perf_counter() - start
    metrics = next(c for c in cli.trainer.callbacks if isinstance(c, ImageMetricsCallback)).evaluations[-1][1]
    grids.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(max((root / "samples").glob("grid_*.png")), grids / f"{preset}.png")
    return metrics, seconds


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=PRESETS, help="config names under configs/")
    parser.add_argument("--grids", default=str(ROOT / "docs"), help="where each preset's sample grid is copied")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    torch.set_num_threads(args.threads)
    ensure_data()

    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for preset in args.presets:
            metrics, seconds = run_once(preset, extra, Path(workdir), Path(args.grids))
            accuracy = metrics.get("metrics/class_accuracy")
            rows.append(f"| {preset} | {metrics['metrics/fd_indomain']:.1f} | "
                        f"{metrics['metrics/class_coverage']:.0f}/10 | {metrics['metrics/class_kl']:.3f} | "
                        f"{'' if accuracy is None else f'{100 * accuracy:.1f}'} | {seconds:.0f} |")
            print(f"# {rows[-1]}", file=sys.stderr, flush=True)

    print(f"\nBundled digits, 32 px, {NUM_SAMPLES} EMA samples per preset. Extra args: {' '.join(extra) or 'none'}\n")
    print("| preset | in-domain FD | classes | class KL | asked-class accuracy % | seconds |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
