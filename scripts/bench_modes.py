"""2-D mode-collapse benchmark: each variant preset on ring8 and grid25, several seeds, as a markdown table.

Every run is ``ganforge fit`` in-process with no checkpoints, logger or progress bar; the mode-coverage
callback scores 2,500 EMA samples once, at the end. Ours are mean +- std over seeds, beside the rows of
PacGAN (Lin et al., 2018), Table 1 (10 trials each). Arguments after ``--`` go to every ``ganforge fit``:

    python scripts/bench_modes.py                                  # 5 presets x 2 mixtures x 5 seeds
    python scripts/bench_modes.py --presets sngan_hinge --data grid25 --seeds 2 -- --trainer.max_steps 500
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from pipeline.callbacks.mode_coverage import ModeCoverageCallback
from pipeline.commands.cli import run_cli

ROOT = Path(__file__).resolve().parents[1]

PRESETS = ["gan", "wgan", "wgan_gp", "sngan_hinge", "deligan"]
MIXTURES = ["ring8", "grid25"]
# PacGAN Table 1: modes captured, high-quality samples (%), reverse KL.
PUBLISHED = {
    "ring8": [("GAN", 6.3, 98.2, 0.45), ("ALI", 6.6, 97.6, 0.36), ("PacGAN2", 7.9, 95.6, 0.07),
              ("PacGAN4", 7.8, 95.9, 0.07)],
    "grid25": [("GAN", 17.3, 94.8, 0.70), ("ALI", 24.1, 95.7, 0.14), ("PacGAN2", 23.8, 91.3, 0.13),
               ("PacGAN4", 24.8, 93.6, 0.04)],
}
EVAL_ONLY_AT_END = [{"class_path": f"{ModeCoverageCallback.__module__}.{ModeCoverageCallback.__name__}",
                     "init_args": {"every_n_steps": 0, "num_samples": 2500, "plot": False}}]


def run_once(preset: str, mixture: str, seed: int, extra: list[str], workdir: str) -> tuple[float, float, float, float]:
    """(modes, high-quality %, reverse KL, seconds) of one training run."""
    args = ["fit", "--config", str(ROOT / "configs" / f"{preset}.yaml"), "--seed_everything", str(seed),
            "--data.init_args.name", mixture, "--data.init_args.seed", str(seed),
            "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.default_root_dir", workdir, "--trainer.callbacks", json.dumps(EVAL_ONLY_AT_END), *extra]
    start = time.perf_counter()
    cli = run_cli(args)
    seconds = time.perf_counter() - start
    callback = next(c for c in cli.trainer.callbacks if isinstance(c, ModeCoverageCallback))
    result = callback.history[-1][1]
    return result.modes, 100 * result.high_quality, result.reverse_kl, seconds


def mean_std(values: list[float], digits: int) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {spread:.{digits}f}"


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=PRESETS, help="config names under configs/")
    parser.add_argument("--data", nargs="+", default=MIXTURES, choices=MIXTURES)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (tiny MLPs: 1 is as fast and leaves a core free)")
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    torch.set_num_threads(args.threads)

    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for mixture in args.data:
            for preset in args.presets:
                runs = []
                for seed in range(args.seeds):
                    runs.append(run_once(preset, mixture, seed, extra, workdir))
                    print(f"# {preset} {mixture} seed {seed}: modes {runs[-1][0]}, HQ {runs[-1][1]:.1f}%, "
                          f"rKL {runs[-1][2]:.3f}, {runs[-1][3]:.0f} s", file=sys.stderr, flush=True)
                modes, hq, kl, sec = (list(column) for column in zip(*runs, strict=True))
                rows.append(f"| {mixture} | ours: {preset} | {mean_std(modes, 1)} | {mean_std(hq, 1)} | "
                            f"{mean_std(kl, 2)} | {mean_std(sec, 0)} |")
            rows += [f"| {mixture} | PacGAN Table 1: {name} | {m} | {q} | {k} | |"
                     for name, m, q, k in PUBLISHED[mixture]]

    print(f"\n{args.seeds} seeds per row (ours); published: 10 trials. Extra args: {' '.join(extra) or 'none'}\n")
    print("| data | model | modes | high-quality % | reverse KL | seconds |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
