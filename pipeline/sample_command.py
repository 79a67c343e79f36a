"""``ganforge sample``: load a checkpoint and write N samples (a PNG grid or scatter plot, and/or a .pt file)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pipeline.checkpoint_loading import load_gan
from pipeline.image_grid import save_grid


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ganforge sample", description=__doc__)
    parser.add_argument("--ckpt", required=True, help="checkpoint written by `ganforge fit` (path or URL)")
    parser.add_argument("--num", type=int, default=64, help="number of samples")
    parser.add_argument("--out", default="samples.png", help=".png (grid / scatter) or .pt (raw tensor)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latent codes")
    parser.add_argument("--no-ema", action="store_true", help="sample the raw generator, not its EMA")
    parser.add_argument("--nrow", type=int, default=None, help="images per grid row")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    model = load_gan(args.ckpt)
    samples = model.sample(args.num, seed=args.seed, use_ema=not args.no_ema).cpu()
    out = Path(args.out)
    if out.suffix == ".pt":
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(samples, out)
    elif out.suffix == ".png":
        if samples.dim() == 4:
            save_grid(samples, out, args.nrow)
        else:
            save_scatter(samples, out)
    else:
        raise SystemExit(f"ganforge sample: --out {args.out} must end in .png or .pt")
    print(f"wrote {args.num} samples of shape {tuple(samples.shape[1:])} to {out}")


def save_scatter(points: torch.Tensor, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5)
    ax.set_aspect("equal")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
