"""The in-domain feature net: scripts/train_feature_net.py trains it on the digit shards to >= 95% held-out
accuracy; its features tell real digits from real digits (FD ~ 0) and from noise (FD large); its predictions
count the classes a set of images covers."""

import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from datamodules.webdataset_datamodule import WebDataModule
from pipeline.commands import shards as shards_command
from pipeline.metrics.class_coverage import ClassHistogram
from pipeline.metrics.feature_net import FORMAT, FeatureNet, adapt_images, load_feature_net
from pipeline.metrics.frechet import FeatureStats, frechet_distance_of

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Digit shards, the script's output and the wall time it took (one thread: a fair figure on a shared
    2-core machine)."""
    folder = tmp_path_factory.mktemp("digits32")
    shards_command.main(["--source", "sklearn-digits", "--resolution", "32", "--out", str(folder)])
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "scripts/train_feature_net.py", "--shards", str(folder), "--out",
                           str(folder / "net.pt")], cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, done.stdout, time.perf_counter() - started


@pytest.fixture(scope="module")
def digits(trained):
    """Every digit in shard order, as the training run reads them, and their labels."""
    data = WebDataModule(index=str(trained[0] / "shards.json"), resolution=32, channels=1, labels=True,
                         num_workers=0)
    batches = list(data.reference_batches())
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def features_and_logits(net: FeatureNet, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        outputs = [net(chunk) for chunk in images.split(256)]
    return torch.cat([o[0] for o in outputs]), torch.cat([o[1] for o in outputs])


def stats_of(features: torch.Tensor) -> FeatureStats:
    stats = FeatureStats.empty(features.shape[1])
    stats.update(features)
    return stats


def test_the_script_trains_to_95_percent_held_out_accuracy_in_under_30_s(trained, digits):
    folder, output, seconds = trained
    printed = float(re.search(r"held-out accuracy (\d\.\d+) on 360 of 1797 images", output).group(1))
    record = torch.load(folder / "net.pt", map_location="cpu", weights_only=True)  # a plain dict: no code
    assert record["format"] == FORMAT and record["classes"] == [str(d) for d in range(10)]
    assert {k: record["config"][k] for k in ("resolution", "channels", "num_classes")} == {
        "resolution": 32, "channels": 1, "num_classes": 10}
    # Recomputed: every 5th image in shard order was held out.
    images, labels = digits
    held_out = torch.arange(len(images)) % 5 == 0
    predicted = features_and_logits(load_feature_net(str(folder / "net.pt")), images[held_out])[1].argmax(1)
    accuracy = float((predicted == labels[held_out]).double().mean())
    assert accuracy == pytest.approx(record["held_out_accuracy"], abs=1e-9)
    assert accuracy == pytest.approx(printed, abs=1e-4)
    assert accuracy >= 0.95
    assert seconds < 30, f"training took {seconds:.1f} s"


def test_fd_of_real_vs_real_is_near_zero_and_vs_noise_is_large(trained, digits):
    net = load_feature_net(str(trained[0] / "net.pt"))
    images = digits[0]
    noise = torch.rand(len(images) // 2, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    half_a, half_b, noise = (stats_of(features_and_logits(net, x)[0]) for x in (images[0::2], images[1::2], noise))
    same = frechet_distance_of(half_a, half_b)
    print(f"in-domain FD: real vs real {same:.3f}, real vs noise {frechet_distance_of(half_a, noise):.3f}")
    assert abs(frechet_distance_of(half_a, half_a)) < 1e-6
    assert 0 < same < 0.05 * frechet_distance_of(half_a, noise)


def test_class_coverage_of_real_digits_and_of_a_single_class(trained, digits):
    net = load_feature_net(str(trained[0] / "net.pt"))
    images, labels = digits
    every = ClassHistogram.empty(10)
    every.update(features_and_logits(net, images)[1])
    coverage = every.coverage()
    assert coverage.classes == 10 and coverage.kl_uniform < 0.01  # the digits are almost balanced
    threes = ClassHistogram.empty(10)
    threes.update(features_and_logits(net, images[labels == 3])[1])
    assert threes.counts.argmax() == 3 and threes.counts[3] >= 0.95 * threes.counts.sum()
    one = ClassHistogram.empty(10)
    one.update(features_and_logits(net, images[labels == 3][:1].repeat(50, 1, 1, 1))[1])
    assert one.coverage().classes == 1 and one.coverage().kl_uniform == pytest.approx(math.log(10))


def test_class_coverage_counts_and_kl_on_known_histograms():
    def coverage_of(predicted: list[int]):
        histogram = ClassHistogram.empty(10)
        histogram.update(torch.nn.functional.one_hot(torch.tensor(predicted), 10).float())
        return histogram.coverage()

    assert (coverage_of(list(range(10)) * 3).classes, coverage_of(list(range(10)) * 3).kl_uniform) == (10, 0.0)
    assert coverage_of([4] * 7).kl_uniform == pytest.approx(math.log(10))
    assert coverage_of([1, 2] * 5).classes == 2 and coverage_of([1, 2] * 5).kl_uniform == pytest.approx(math.log(5))
    with pytest.raises(ValueError, match="no samples"):
        ClassHistogram.empty(10).coverage()


def test_other_sizes_and_channels_are_adapted_to_the_net():
    grey = torch.rand(2, 1, 64, 64) * 2 - 1
    rgb = grey.expand(-1, 3, -1, -1)
    assert adapt_images(rgb, 1, 32).shape == (2, 1, 32, 32)
    assert torch.allclose(adapt_images(rgb, 1, 64), grey, atol=1e-6)  # luma weights sum to 1
    flat = torch.full((1, 1, 64, 64), 0.25)
    assert torch.allclose(adapt_images(flat, 1, 32), torch.full((1, 1, 32, 32), 0.25))
    assert adapt_images(grey, 3, 32).shape == (2, 3, 32, 32)


def test_a_missing_or_foreign_file_names_the_key_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^cb.feature_net=.*nope.pt: no such file; train one with "
                                                r"`python scripts/train_feature_net.py"):
        load_feature_net(str(tmp_path / "nope.pt"), "cb.feature_net")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a ganforge feature-net file"):
        load_feature_net(str(tmp_path / "other.pt"), "cb.feature_net")
