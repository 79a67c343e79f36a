"""Where ``ganforge shards`` reads images from: an image folder, ``.npy``/``.npz`` arrays, bundled datasets.

A source is a count, optional class names and a reader of image i, so the writer can visit the images in
any (seeded) order without loading them all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from datamodules.image_decode import IMAGE_EXTENSIONS

_FOLDER_EXTENSIONS = frozenset(f".{ext}" for ext in (*IMAGE_EXTENSIONS, "tif", "tiff", "gif"))


@dataclass(frozen=True)
class ImageSource:
    name: str
    count: int
    read: Callable[[int], tuple[Image.Image, int | None]]  # image i and its label (None: unlabelled)
    classes: list[str] | None = None


def image_folder(path: str) -> ImageSource:
    """``path/<class>/**/image`` (sub-folders are classes, sorted by name) or images directly in ``path``."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--source {path}: no such folder (give an image folder, a .npy/.npz "
                                f"file, or one of {', '.join(BUNDLED)})")
    classes = sorted(entry.name for entry in os.scandir(path) if entry.is_dir())
    files: list[tuple[str, int | None]] = []
    if classes:
        for label, name in enumerate(classes):
            files += [(file, label) for file in _images_under(os.path.join(path, name))]
    else:
        files = [(file, None) for file in _images_under(path)]
    if not files:
        raise ValueError(f"--source {path}: no images ({', '.join(sorted(_FOLDER_EXTENSIONS))}) in it")

    def read(i: int) -> tuple[Image.Image, int | None]:
        file, label = files[i]
        with Image.open(file) as image:
            image.load()
            return image, label

    return ImageSource(f"folder:{os.path.abspath(path)}", len(files), read, classes or None)


def _images_under(folder: str) -> list[str]:
    found = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names
             if os.path.splitext(name)[1].lower() in _FOLDER_EXTENSIONS]
    return sorted(found)


def image_arrays(path: str, images_key: str = "images", labels_key: str = "labels") -> ImageSource:
    """An (N, H, W[, C]) or (N, C, H, W) uint8 array (floats in [0, 1] are scaled); labels from the .npz."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--source {path}: no such file")
    labels = None
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as arrays:
            if images_key not in arrays:
                raise ValueError(f"--source {path}: no array {images_key!r} (it has "
                                 f"{', '.join(arrays.files)}); name the images with --images-key")
            images = arrays[images_key]
            labels = arrays[labels_key].astype(np.int64) if labels_key in arrays else None
    else:
        images = np.load(path, mmap_mode="r", allow_pickle=False)
    images = _channels_last(images, path)
    if labels is not None and labels.shape != (len(images),):
        raise ValueError(f"--source {path}: {labels_key!r} has shape {labels.shape}, "
                         f"expected ({len(images)},)")
    if labels is not None and labels.min(initial=0) < 0:
        raise ValueError(f"--source {path}: negative labels in {labels_key!r}")
    classes = None if labels is None else [str(c) for c in range(int(labels.max(initial=0)) + 1)]

    def read(i: int) -> tuple[Image.Image, int | None]:
        return _to_image(images[i], path), None if labels is None else int(labels[i])

    return ImageSource(f"arrays:{os.path.abspath(path)}", len(images), read, classes)


def _channels_last(images: np.ndarray, path: str) -> np.ndarray:
    if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
        images = images.transpose(0, 2, 3, 1)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        raise ValueError(f"--source {path}: images of shape {images.shape}; expected (N, H, W), "
                         "(N, H, W, 1|3) or (N, 1|3, H, W)")
    return images


def _to_image(array: np.ndarray, path: str) -> Image.Image:
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating) or array.min() < 0 or array.max() > 1:
            raise ValueError(f"--source {path}: images must be uint8, or floats in [0, 1]; got {array.dtype}")
        array = np.round(array * 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array))


def sklearn_digits() -> ImageSource:
    """scikit-learn's 1,797 8x8 handwritten digits (UCI), bundled in its wheel: ink 0..16 -> 0..255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)

    def read(i: int) -> tuple[Image.Image, int | None]:
        return Image.fromarray(images[i]), int(labels[i])

    return ImageSource("sklearn-digits", len(images), read, [str(d) for d in range(10)])


# Bundled datasets by --source name; later importers (MNIST, Fashion-MNIST) register here.
BUNDLED: dict[str, Callable[[], ImageSource]] = {"sklearn-digits": sklearn_digits}


def open_source(source: str, images_key: str = "images", labels_key: str = "labels") -> ImageSource:
    if source in BUNDLED:
        return BUNDLED[source]()
    if source.endswith((".npy", ".npz")):
        return image_arrays(source, images_key, labels_key)
    return image_folder(source)
