"""A sample's bytes -> float image tensor in [-1, 1] at the training resolution (decode, resize, crop,
flip) and an integer label.

Only images (through Pillow) and ``cls`` labels (decimal text) are ever decoded; nothing is unpickled.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # torch loads on first decode: `ganforge shards --help` need not wait for it
    from torch import Tensor

# Sample fields holding an image, in order of preference when a sample has several.
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "ppm", "pgm", "bmp")
LABEL_FIELD = "cls"
_MODES = {1: "L", 3: "RGB"}

Crop = Literal["center", "random"]


def open_image(data: bytes, channels: int, resolution: int | None = None) -> Image.Image:
    """Decode to ``L`` (1 channel) or ``RGB`` (3); large JPEGs are DCT-downscaled while decoding."""
    image = Image.open(io.BytesIO(data))
    if resolution is not None and image.format == "JPEG":
        image.draft(_MODES[channels], (resolution, resolution))  # keeps both sides >= resolution
    if image.mode != _MODES[channels]:
        image = image.convert(_MODES[channels])
    return image


def resize_and_crop(image: Image.Image, resolution: int, crop: Crop = "center",
                    rng: random.Random | None = None) -> Image.Image:
    """Scale the shorter side to ``resolution`` (antialiased), then crop the longer one to a square."""
    width, height = image.size
    if (width, height) == (resolution, resolution):
        return image
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    if size != (width, height):
        # Lanczos filters over the whole footprint when shrinking (no aliasing); bicubic when enlarging.
        resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
        image = image.resize(size, resample)
    extra_x, extra_y = size[0] - resolution, size[1] - resolution
    if crop == "random":
        rng = rng or random.Random()
        left, top = rng.randint(0, extra_x), rng.randint(0, extra_y)
    else:
        left, top = extra_x // 2, extra_y // 2
    return image.crop((left, top, left + resolution, top + resolution))


def to_tensor(image: Image.Image) -> Tensor:
    """(C, H, W) float32 with 0 -> -1 and 255 -> 1."""
    import torch

    array = np.array(image, dtype=np.uint8)  # a writable copy: torch refuses read-only arrays
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).float().mul_(2.0 / 255.0).sub_(1.0)


def decode_image(data: bytes, resolution: int, channels: int, crop: Crop = "center", hflip: bool = False,
                 rng: random.Random | None = None) -> Tensor:
    """The training tensor for one sample; ``rng`` draws the random crop and the flip."""
    image = resize_and_crop(open_image(data, channels, resolution), resolution, crop, rng)
    if hflip and (rng or random).random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return to_tensor(image)


@dataclass(frozen=True)
class SampleDecoder:
    """A sample's fields -> (image, label): the image from its first image field, the label from ``cls``
    (-1 when labels are off). Raises ValueError/OSError on anything it cannot decode."""

    resolution: int
    channels: int
    crop: Crop = "center"
    hflip: bool = False
    labels: bool = False
    num_classes: int | None = None

    @property
    def is_random(self) -> bool:
        return self.crop == "random" or self.hflip

    def __call__(self, sample: dict[str, Any], rng: random.Random | None = None) -> tuple[Tensor, int]:
        field = next((f for f in IMAGE_EXTENSIONS if f in sample), None)
        if field is None:
            raise ValueError(f"no image field (one of {', '.join(IMAGE_EXTENSIONS)})")
        image = decode_image(sample[field], self.resolution, self.channels, self.crop, self.hflip, rng)
        if not self.labels:
            return image, -1
        if LABEL_FIELD not in sample:
            raise ValueError(f"no '{LABEL_FIELD}' field, and labels are on")
        label = int(sample[LABEL_FIELD])
        if self.num_classes is not None and not 0 <= label < self.num_classes:
            raise ValueError(f"label {label} is outside the index's {self.num_classes} classes")
        return image, label
