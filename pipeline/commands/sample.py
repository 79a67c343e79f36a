"""``ganforge sample``: load a checkpoint and write samples (a PNG grid or scatter plot, or a .pt tensor).

    ganforge sample --ckpt gan.ckpt --num 64 --out samples.png
    ganforge sample --ckpt cgan.ckpt --per-class 8 --out classes.png          # one row per class
    ganforge sample --ckpt icgan.ckpt --edit-class --images data/digits32 --num 8 --out edits.png
    ganforge sample --ckpt stylegan2.ckpt --truncation-psi 0.7 --out truncated.png
    ganforge sample --ckpt stylegan2.ckpt --style-mix 4 6 --out mixing.png

An edit grid has one row per real image: the image, its reconstruction G(E_z(x), E_y(x)), then the image
re-generated as each target class G(E_z(x), c).

A style-mixing grid (StyleGAN generators; NVlabs' style_mixing.py layout) for ``--style-mix R C``: the top
row holds C column images (after a blank corner), the left column R row images; the cell of row i and column
j is row i's ws with the layers of ``--mix-layers`` (default the first half, 0..num_ws/2-1: the coarse
resolutions' styles, pose and shape) taken from column j's; the row keeps its fine styles (texture, colour). z
for the rows then the columns come from ``--seed``; noise is the generator's fixed noise; a conditional
generator draws every image as class 0.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and Lightning load after the arguments are parsed: --help and bad options answer fast
    import pytorch_lightning as pl
    from torch import Tensor

_DEFAULT_SAMPLES, _DEFAULT_EDITS = 64, 8


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ganforge sample", description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint written by `ganforge fit` (path or URL)")
    parser.add_argument("--num", type=int, default=None,
                        help=f"number of samples (default {_DEFAULT_SAMPLES}; a conditional generator cycles "
                             f"through its classes), or of real images to edit (default {_DEFAULT_EDITS})")
    parser.add_argument("--per-class", type=int, default=None, metavar="K",
                        help="conditional generators: K samples of every class, one grid row per class")
    parser.add_argument("--edit-class", type=int, nargs="*", default=None, metavar="CLASS",
                        help="IcGAN: re-generate the --images as these classes (none listed: every class)")
    parser.add_argument("--images", nargs="+", default=None, metavar="PATH",
                        help="real images for --edit-class: a shard folder or its shards.json (the first "
                             "--num images), or image files")
    parser.add_argument("--out", default="samples.png", help=".png (grid / scatter) or .pt (raw tensor)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latent codes")
    parser.add_argument("--no-ema", action="store_true", help="sample the raw generator, not its EMA")
    parser.add_argument("--nrow", type=int, default=None, help="images per grid row (plain samples)")
    parser.add_argument("--truncation-psi", type=float, default=1.0,
                        help="StyleGAN truncation: w = w_avg + psi (w - w_avg) (default 1.0: none)")
    parser.add_argument("--style-mix", type=int, nargs=2, default=None, metavar=("ROWS", "COLS"),
                        help="StyleGAN generators: a style-mixing grid of ROWS x COLS mixes (see above)")
    parser.add_argument("--mix-layers", default=None, metavar="A-B",
                        help="--style-mix: the ws indices taken from the column image, e.g. 0-3 "
                             "(default the first half)")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Contradictory options fail before the checkpoint is read."""
    if Path(args.out).suffix not in (".png", ".pt"):
        raise ValueError(f"--out {args.out} must end in .png or .pt")
    if args.per_class is not None and args.edit_class is not None:
        raise ValueError("--per-class samples a conditional GAN, --edit-class edits with an IcGAN: give one")
    if args.per_class is not None and args.num is not None:
        raise ValueError(f"--per-class {args.per_class} fixes the count (K per class): drop --num")
    if args.edit_class is not None and not args.images:
        raise ValueError("--edit-class needs --images: a shard folder, its shards.json, or image files")
    if args.images and args.edit_class is None:
        raise ValueError("--images are the inputs of --edit-class: add --edit-class, or drop --images")
    for option, value in (("--num", args.num), ("--per-class", args.per_class)):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be >= 1, got {value}")
    if args.style_mix is not None and (args.num, args.per_class, args.edit_class) != (None, None, None):
        raise ValueError("--style-mix draws its own ROWS x COLS grid: drop --num, --per-class and --edit-class")
    if args.style_mix is not None and min(args.style_mix) < 1:
        raise ValueError(f"--style-mix ROWS COLS must both be >= 1, got {' '.join(map(str, args.style_mix))}")
    if args.mix_layers is not None and args.style_mix is None:
        raise ValueError("--mix-layers is for --style-mix: add --style-mix ROWS COLS, or drop it")


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    check_args(args)
    import torch

    from pipeline.commands.checkpoint_loading import load_module
    from pipeline.image_grid import save_grid

    model = load_module(args.ckpt)
    if args.edit_class is not None:
        images, nrow = edit_grid(model, args)
    elif args.style_mix is not None:
        images, nrow = style_mix_grid(model, args)
    else:
        if not hasattr(model, "sample"):
            raise ValueError(f"checkpoint {args.ckpt} holds {type(model).__name__}, which does not sample: "
                             "use --edit-class --images ... (IcGAN), or the checkpoint of a GAN")
        images, nrow = samples(model, args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".pt":
        torch.save(images, out)
    elif images.dim() >= 4:  # an edit grid's (N, columns, C, H, W) is laid out row by row
        save_grid(images.flatten(0, -4), out, nrow)
    else:
        save_scatter(images, out)
    print(f"wrote {tuple(images.shape)} to {out}")


def samples(model: pl.LightningModule, args: argparse.Namespace) -> tuple[Tensor, int | None]:
    """Plain samples, or ``--per-class`` K of each class (class-major: the grid's rows are the classes)."""
    import torch

    from modules.nets.conditional import per_class_labels

    num_classes = getattr(model, "num_classes", 0)
    num, labels, nrow = args.num or _DEFAULT_SAMPLES, None, args.nrow
    if args.per_class is not None:
        if not num_classes:
            raise ValueError(f"--per-class: checkpoint {args.ckpt} holds an unconditional generator "
                             f"({type(model.generator).__name__} with num_classes=0); drop --per-class, or "
                             "pass a class-conditional checkpoint")
        labels, nrow = per_class_labels(num_classes, args.per_class, model.device), args.per_class
    elif num_classes:
        labels = torch.arange(num, device=model.device) % num_classes
    count = num if labels is None else len(labels)
    return model.sample(count, labels=labels, seed=args.seed, use_ema=not args.no_ema,
                        truncation_psi=args.truncation_psi).cpu(), nrow


def parse_layers(text: str | None, num_ws: int) -> list[int]:
    """``A-B`` or ``A`` -> the ws indices A..B (default 0..num_ws/2 - 1), each in 0..num_ws-1."""
    if text is None:
        return list(range(num_ws // 2))
    parts = text.split("-")
    if len(parts) > 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"--mix-layers {text}: expected A-B or A, e.g. 0-3")
    first, last = int(parts[0]), int(parts[-1])
    if not 0 <= first <= last < num_ws:
        raise ValueError(f"--mix-layers {text}: the generator has ws 0..{num_ws - 1}")
    return list(range(first, last + 1))


def style_mix_grid(model: pl.LightningModule, args: argparse.Namespace) -> tuple[Tensor, int]:
    """((R + 1) * (C + 1), ...) images: blank corner, C column images; then per row its image and C mixes."""
    import torch

    net = model.generator_ema if (not args.no_ema and model.generator_ema is not None) else model.generator
    if not hasattr(net, "styles"):
        raise ValueError(f"--style-mix: checkpoint {args.ckpt} holds {type(net).__name__}, which has no "
                         "mapping network (styles); pass a StyleGAN checkpoint")
    rows, cols = args.style_mix
    layers = parse_layers(args.mix_layers, net.num_ws)
    gen = torch.Generator(device=model.device).manual_seed(args.seed)
    z = torch.randn(rows + cols, net.latent_dim, device=model.device, generator=gen)
    labels = torch.zeros(rows + cols, dtype=torch.long, device=model.device) if net.num_classes else None
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            ws = net.styles(z, labels, truncation_psi=args.truncation_psi)
            mixed = ws[:rows, None].repeat(1, cols, 1, 1)  # (R, C, num_ws, w_dim): row i's ws in every column
            mixed[:, :, layers] = ws[None, rows:, layers]
            images = net.synthesis(torch.cat([ws, mixed.flatten(0, 1)]), noise_mode="const").cpu()
    finally:
        net.train(was_training)
    singles, mixes = images[:rows + cols], images[rows + cols:].reshape(rows, cols, *images.shape[1:])
    blank = torch.full_like(singles[:1], -1.0)
    grid = [blank, singles[rows:]] + [torch.cat([singles[i:i + 1], mixes[i]]) for i in range(rows)]
    return torch.cat(grid), cols + 1


def edit_grid(model: pl.LightningModule, args: argparse.Namespace) -> tuple[Tensor, int]:
    """(N, 2 + targets, C, H, W): each real image, its reconstruction, then its edit into each target class."""
    import torch

    from modules.icgan import IcGAN
    from pipeline.sources.real_images import load_real_images

    if not isinstance(model, IcGAN):
        raise ValueError(f"--edit-class: checkpoint {args.ckpt} holds {type(model).__name__}, not IcGAN; "
                         "fit IcGAN's encoders (modules.icgan.IcGAN) to this generator and pass that checkpoint")
    num_classes = model.hparams.num_classes
    targets = args.edit_class or list(range(num_classes))
    bad = [c for c in targets if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"--edit-class {' '.join(map(str, bad))}: the IcGAN knows classes 0..{num_classes - 1}")
    with torch.no_grad():  # the generator's output shape is the size the real images are decoded to
        probe = model.generator(torch.zeros(1, model.generator.latent_dim), torch.zeros(1, dtype=torch.long))
    _, channels, resolution, _ = probe.shape
    x = load_real_images(args.images, args.num or _DEFAULT_EDITS, resolution, channels)
    edits = [model.edit(x, torch.full((len(x),), c)) for c in targets]
    return torch.stack([x, model.reconstruct(x), *edits], dim=1), 2 + len(targets)


def save_scatter(points: Tensor, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5)
    ax.set_aspect("equal")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
