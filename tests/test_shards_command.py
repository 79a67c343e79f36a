"""`ganforge shards`: what it writes, from each kind of source, and that it writes it the same every time."""

import io
import json
import tarfile
import time

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from pipeline.commands import cli
from pipeline.commands import shards as shards_command


def members(folder) -> dict[str, bytes]:
    """Every file in every shard, by name (shards in index order)."""
    index = json.loads((folder / "shards.json").read_text())
    found = {}
    for shard in index["shards"]:
        with tarfile.open(folder / shard["name"]) as tar:
            names = tar.getnames()
            assert len({name.split(".")[0] for name in names}) == shard["samples"]
            found.update({name: tar.extractfile(name).read() for name in names})
    return found


def test_sklearn_digits_become_the_bundled_32px_dataset(tmp_path):
    started = time.perf_counter()
    shards_command.main(["--source", "sklearn-digits", "--resolution", "32", "--out", str(tmp_path)])
    elapsed = time.perf_counter() - started
    index = json.loads((tmp_path / "shards.json").read_text())
    assert index["samples"] == 1797 and index["image_size"] == [32, 32] and index["channels"] == 1
    assert index["classes"] == [str(d) for d in range(10)] and index["image_format"] == "png"
    files = members(tmp_path)
    digits = load_digits()
    for i in (0, 1, 500, 1796):
        key = f"{i:07d}"
        assert int(files[f"{key}.cls"]) == digits.target[i]
        image = Image.open(io.BytesIO(files[f"{key}.png"]))
        assert (image.mode, image.size) == ("L", (32, 32))
        # Back down to 8x8 by 4x4 means: the original digit, ink 0..16 scaled to 0..255.
        small = np.asarray(image, np.float64).reshape(8, 4, 8, 4).mean(axis=(1, 3))
        assert np.corrcoef(small.ravel(), digits.images[i].ravel())[0, 1] > 0.95
    assert elapsed < 30, f"{elapsed:.1f} s"


def test_the_same_source_and_seed_give_byte_identical_shards(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        shards_command.main(["--source", "sklearn-digits", "--out", str(tmp_path / name), "--seed", str(seed),
                             "--max-count", "600"])
    a, b, c = (members(tmp_path / name) for name in "abc")
    assert a == b
    for name in ("shards.json", "shard-000000.tar", "shard-000002.tar"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert a == c  # the same samples, in another order
    first = [(tmp_path / name / "shard-000000.tar").read_bytes() for name in "ac"]
    assert first[0] != first[1]


def test_shards_are_cut_by_sample_count_or_size(tmp_path):
    shards_command.main(["--source", "sklearn-digits", "--out", str(tmp_path / "count"),
                         "--max-count", "500"])
    index = json.loads((tmp_path / "count" / "shards.json").read_text())
    assert [s["samples"] for s in index["shards"]] == [500, 500, 500, 297]
    shards_command.main(["--source", "sklearn-digits", "--resolution", "32", "--out", str(tmp_path / "size"),
                         "--max-size", "200KB"])
    index = json.loads((tmp_path / "size" / "shards.json").read_text())
    assert len(index["shards"]) > 5 and sum(s["samples"] for s in index["shards"]) == 1797
    for shard in index["shards"]:  # the tar's end-of-archive blocks and record padding come on top
        assert (tmp_path / "size" / shard["name"]).stat().st_size <= 200_000 + 1024 + 10240
    assert len(members(tmp_path / "size")) == 2 * 1797


def test_an_image_folder_with_class_subfolders(tmp_path):
    rng = np.random.default_rng(0)
    source = tmp_path / "photos"
    for name, ext, mode, size in [("cats", "png", "RGBA", (40, 30)), ("dogs", "jpg", "RGB", (20, 50))]:
        (source / name / "nested").mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, size=(size[1], size[0], len(mode)), dtype=np.uint8)
            Image.fromarray(pixels, mode).save(source / name / "nested" / f"{i}.{ext}")
    (source / "cats" / "notes.txt").write_text("not an image")
    shards_command.main(["--source", str(source), "--resolution", "16", "--out", str(tmp_path / "out"),
                         "--format", "webp", "--keep-order"])
    index = json.loads((tmp_path / "out" / "shards.json").read_text())
    assert index["classes"] == ["cats", "dogs"] and index["samples"] == 6
    assert index["channels"] == 3 and index["image_size"] == [16, 16] and index["seed"] is None
    files = members(tmp_path / "out")
    assert [int(files[f"{i:07d}.cls"]) for i in range(6)] == [0, 0, 0, 1, 1, 1]
    for i in range(6):
        image = Image.open(io.BytesIO(files[f"{i:07d}.webp"]))
        assert (image.format, image.mode, image.size) == ("WEBP", "RGB", (16, 16))


def test_arrays_channels_first_floats_without_labels(tmp_path):
    images = np.random.default_rng(1).random((5, 3, 6, 7)).astype(np.float32)
    np.save(tmp_path / "x.npy", images)
    shards_command.main(["--source", str(tmp_path / "x.npy"), "--out", str(tmp_path / "out")])
    index = json.loads((tmp_path / "out" / "shards.json").read_text())
    assert index["classes"] is None and index["channels"] == 3 and index["image_size"] == [6, 7]
    files = members(tmp_path / "out")
    assert not any(name.endswith(".cls") for name in files)
    decoded = np.asarray(Image.open(io.BytesIO(files["0000003.png"])))
    assert np.array_equal(decoded, np.round(images[3].transpose(1, 2, 0) * 255).astype(np.uint8))


@pytest.mark.parametrize("args, message", [
    (["--source", "no/such/folder"], "--source no/such/folder: no such folder"),
    (["--source", "{tmp}/a.npz", "--images-key", "pixels"], "no array 'pixels' (it has images, labels)"),
    (["--source", "{tmp}/a.npz", "--resolution", "0"], "--resolution must be >= 1"),
])
def test_bad_input_is_one_line_naming_it(tmp_path, args, message):
    np.savez(tmp_path / "a.npz", images=np.zeros((2, 4, 4), np.uint8), labels=np.zeros(2))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    with pytest.raises(SystemExit) as stopped:
        cli.main(["shards", *args, "--out", str(tmp_path / "out")])
    assert str(stopped.value).startswith("ganforge shards: error: ") and message in str(stopped.value)
    assert "\n" not in str(stopped.value)
