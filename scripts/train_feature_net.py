"""Train the in-domain feature net (pipeline/metrics/feature_net.py) on a labelled shard dataset.

    ganforge shards --source sklearn-digits --resolution 32 --out data/digits32
    python scripts/train_feature_net.py --shards data/digits32 --out data/digits32/feature_net.pt

Images are read exactly as the training run reads them (WebDataModule, centre crop, no flip). Every 5th
sample in shard order is held out (the shard writer shuffles with a seed, so that is a random fifth); the
held-out accuracy is printed and saved beside the weights. The bundled digits take ~10 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from datamodules.shard_index import INDEX_NAME, read_index
from datamodules.webdataset_datamodule import WebDataModule
from pipeline.metrics.feature_net import FeatureNet, save_feature_net

HELD_OUT_EVERY = 5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", required=True, help=f"a shard folder (with {INDEX_NAME}) or the index file")
    parser.add_argument("--out", required=True, help="where to write the network (.pt)")
    parser.add_argument("--resolution", type=int, default=None, help="default: the index's image size")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--width", type=int, default=16, help="channels of the first conv block")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def load_labelled(index: str, resolution: int, channels: int) -> tuple[Tensor, Tensor]:
    data = WebDataModule(index=index, resolution=resolution, channels=channels, labels=True, num_workers=0)
    batches = list(data.reference_batches())
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def held_out_mask(n: int) -> Tensor:
    return torch.arange(n) % HELD_OUT_EVERY == 0


@torch.no_grad()
def accuracy(net: FeatureNet, images: Tensor, labels: Tensor) -> float:
    net.eval()
    predicted = torch.cat([net(chunk)[1].argmax(1) for chunk in images.split(512)])
    return float((predicted == labels).double().mean())


def train(net: FeatureNet, images: Tensor, labels: Tensor, epochs: int, batch_size: int, lr: float,
          seed: int) -> None:
    """Adam with a one-cycle learning rate; each image is shifted by up to 2 px at random (generated
    digits are rarely centred as exactly as the data)."""
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * -(-len(images) // batch_size)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    net.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(images), generator=gen).split(batch_size):
            dx, dy = torch.randint(-2, 3, (2,), generator=gen).tolist()
            x = torch.roll(images[batch], shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(net(x)[1], labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    index_path = os.path.join(args.shards, INDEX_NAME) if os.path.isdir(args.shards) else args.shards
    index = read_index(index_path)
    if index.classes is None:
        raise SystemExit(f"--shards {args.shards}: the shards have no labels; write them from labelled data")
    resolution = args.resolution or (index.image_size[0] if index.image_size else None)
    if resolution is None:
        raise SystemExit(f"--shards {args.shards}: images differ in size; give --resolution")
    images, labels = load_labelled(index_path, resolution, index.channels or 3)
    held_out = held_out_mask(len(images))
    net = FeatureNet(resolution, images.shape[1], len(index.classes), width=args.width)
    train(net, images[~held_out], labels[~held_out], args.epochs, args.batch_size, args.lr, args.seed)
    held_out_accuracy = accuracy(net, images[held_out], labels[held_out])
    save_feature_net(net, args.out, classes=list(index.classes), held_out_accuracy=held_out_accuracy,
                     trained_on=os.path.abspath(index_path), held_out_every=HELD_OUT_EVERY)
    print(f"held-out accuracy {held_out_accuracy:.4f} on {int(held_out.sum())} of {len(images)} images; "
          f"saved {args.out} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
