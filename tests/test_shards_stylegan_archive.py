"""`ganforge shards --source DATASET.zip`: NVlabs dataset_tool.py archives (zip or folder) become shards."""

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from pipeline.commands import cli
from pipeline.commands import shards as shards_command
from tests.test_shards_command import members


def nvlabs_images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8) for _ in range(count)]


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="png")
    return buffer.getvalue()


def write_archive(path, images, labels):
    """dataset_tool.py's layout: 00000/img00000000.png ... and dataset.json {"labels": [[name, int], ...]}."""
    names = [f"{i // 1000:05d}/img{i:08d}.png" for i in range(len(images))]
    with zipfile.ZipFile(path, "w") as archive:
        for name, pixels in zip(names, images, strict=True):
            archive.writestr(name, png_bytes(pixels))
        pairs = None if labels is None else [[n, y] for n, y in zip(names, labels, strict=True)]
        archive.writestr("dataset.json", json.dumps({"labels": pairs}))
    return names


def test_a_labelled_zip_archive_becomes_shards_with_cls(tmp_path):
    images, labels = nvlabs_images(5), [3, 0, 1, 3, 2]
    write_archive(tmp_path / "dataset.zip", images, labels)
    shards_command.main(["--source", str(tmp_path / "dataset.zip"), "--out", str(tmp_path / "out"), "--keep-order"])
    index = json.loads((tmp_path / "out" / "shards.json").read_text())
    assert index["samples"] == 5 and index["classes"] == ["0", "1", "2", "3"] and index["channels"] == 3
    assert index["source"].startswith("stylegan-dataset:")
    files = members(tmp_path / "out")
    for i in range(5):
        assert int(files[f"{i:07d}.cls"]) == labels[i]
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(files[f"{i:07d}.png"]))), images[i])


def test_an_unlabelled_extracted_folder(tmp_path):
    images = nvlabs_images(3, seed=1)
    write_archive(tmp_path / "dataset.zip", images, None)
    with zipfile.ZipFile(tmp_path / "dataset.zip") as archive:
        archive.extractall(tmp_path / "folder")  # the same layout as a folder: 00000/ is not a class
    shards_command.main(["--source", str(tmp_path / "folder"), "--out", str(tmp_path / "out"), "--keep-order"])
    index = json.loads((tmp_path / "out" / "shards.json").read_text())
    assert index["samples"] == 3 and index["classes"] is None
    files = members(tmp_path / "out")
    assert not any(name.endswith(".cls") for name in files)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(files["0000002.png"]))), images[2])


@pytest.mark.parametrize("labels, message", [
    ([[0.5, 0.5]] * 2, "is not [file, class int >= 0]"),
    ("missing", "has no label for 00000/img00000001.png"),
])
def test_bad_labels_are_one_line(tmp_path, labels, message):
    names = write_archive(tmp_path / "dataset.zip", nvlabs_images(2), [0, 1])
    pairs = [[names[0], 0]] if labels == "missing" else [[n, v] for n, v in zip(names, labels, strict=True)]
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as archive:
        for name in names:
            archive.writestr(name, zipfile.ZipFile(tmp_path / "dataset.zip").read(name))
        archive.writestr("dataset.json", json.dumps({"labels": pairs}))
    with pytest.raises(SystemExit) as stopped:
        cli.main(["shards", "--source", str(tmp_path / "bad.zip"), "--out", str(tmp_path / "out")])
    assert message in str(stopped.value) and "\n" not in str(stopped.value)


def test_a_zip_that_is_not_one_is_refused(tmp_path):
    (tmp_path / "fake.zip").write_bytes(b"not a zip")
    with pytest.raises(SystemExit) as stopped:
        cli.main(["shards", "--source", str(tmp_path / "fake.zip"), "--out", str(tmp_path / "out")])
    assert "not a zip archive" in str(stopped.value)
