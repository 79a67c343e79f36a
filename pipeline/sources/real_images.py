"""Real images to feed a trained model (IcGAN's edits): the first N of a shard set, or image files, decoded
the way training decodes them (shorter side resized, centre-cropped, values in [-1, 1])."""

from __future__ import annotations

import os

import torch
from torch import Tensor

from datamodules.image_decode import IMAGE_EXTENSIONS, decode_image
from datamodules.shard_index import INDEX_NAME, read_index
from datamodules.tar_reader import read_tar_samples
from datamodules.url_open import is_local, open_url

_HINT = f"give a shard folder, its {INDEX_NAME} (`ganforge shards` writes them), or image files"


def load_real_images(inputs: list[str], count: int, resolution: int, channels: int) -> Tensor:
    """(N, channels, resolution, resolution): every image file given, or the first ``count`` images of the
    shard set (in shard order, which `ganforge shards` shuffles by its seed) when one is given."""
    index = _index_url(inputs[0]) if len(inputs) == 1 else None
    encoded = _first_shard_images(index, count) if index is not None else [_read_file(path) for path in inputs]
    images = []
    for name, data in encoded:
        try:
            images.append(decode_image(data, resolution, channels))
        except OSError as err:  # Pillow: not an image, or a truncated one
            raise ValueError(f"--images {name}: not a readable image ({err}); {_HINT}") from None
    return torch.stack(images)


def _index_url(path: str) -> str | None:
    """The shards.json that ``path`` is or holds; None for anything else (an image file)."""
    if path.endswith(".json"):
        if is_local(path) and not os.path.isfile(path):
            raise FileNotFoundError(f"--images {path}: no such file; {_HINT}")
        return path
    if is_local(path) and os.path.isdir(path):
        index = os.path.join(path, INDEX_NAME)
        if not os.path.isfile(index):
            raise FileNotFoundError(f"--images {path}: no {INDEX_NAME} in this folder; {_HINT}")
        return index
    return None


def _first_shard_images(index_url: str, count: int) -> list[tuple[str, bytes]]:
    """(name, encoded image) of the first ``count`` samples that have an image."""
    images: list[tuple[str, bytes]] = []
    for url in read_index(index_url).shard_urls(index_url):
        with open_url(url) as stream:
            for sample in read_tar_samples(stream):
                field = next((f for f in IMAGE_EXTENSIONS if f in sample), None)
                if field is not None:
                    images.append((f"{url}:{sample['__key__']}.{field}", sample[field]))
                if len(images) == count:
                    return images
    if not images:
        raise ValueError(f"--images {index_url}: its shards hold no images; {_HINT}")
    return images


def _read_file(path: str) -> tuple[str, bytes]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--images {path}: no such file; {_HINT}")
    with open(path, "rb") as f:
        return path, f.read()
