"""ImageMetricsCallback in short fits of a tiny conditional DCGAN on the bundled digits: what it logs equals the
metrics recomputed by hand, and 2 DDP ranks log what 1 process does; bad extractor paths stop the fit before
it starts; real statistics are cached.

Run as a script, this file is a 2-rank worker: python tests/test_image_metrics.py DIGITS_DIR OUT_DIR
"""

import csv
import math
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from ddp_launch import run_ranks
from pytorch_lightning.loggers import CSVLogger
from torch import nn

import pipeline.strategies  # noqa: F401  registers ddp_gan
from datamodules.webdataset_datamodule import WebDataModule
from modules.gan import GAN
from modules.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from pipeline.callbacks.image_metrics import ImageMetricsCallback
from pipeline.commands import shards as shards_command
from pipeline.metrics.class_coverage import ClassHistogram
from pipeline.metrics.feature_net import FeatureNet, load_feature_net, save_feature_net
from pipeline.metrics.frechet import FeatureStats, frechet_distance_of
from pipeline.metrics.precision_recall import precision_recall

NUM_SAMPLES, BATCH, SEED = 100, 32, 7  # 4 chunks of latent codes, the last one partial


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The bundled digits as 32 px shards, and an (untrained, but fixed) feature net for them."""
    folder = tmp_path_factory.mktemp("digits32")
    shards_command.main(["--source", "sklearn-digits", "--resolution", "32", "--out", str(folder)])
    torch.manual_seed(0)
    save_feature_net(FeatureNet(resolution=32, channels=1, num_classes=10, width=8), str(folder / "net.pt"))
    return folder


def make_data(digits) -> WebDataModule:
    return WebDataModule(index=str(digits / "shards.json"), resolution=32, channels=1, labels=True, batch_size=16,
                         num_workers=0)


def make_model(frozen: bool = False) -> GAN:
    """``frozen``: learning rates 0 and a generator that normalises by batch statistics even in eval mode, so
    that its samples do not depend on which rank's data went through it (for the DDP comparison)."""
    torch.manual_seed(0)
    small = {"resolution": 32, "channels": 1, "base_width": 8, "num_classes": 10}
    generator = DCGANGenerator(latent_dim=16, **small)
    if frozen:
        for norm in generator.modules():
            if isinstance(norm, nn.BatchNorm2d):
                norm.track_running_stats = False
                norm.running_mean = norm.running_var = norm.num_batches_tracked = None
    rates = {"lr_g": 0.0, "lr_d": 0.0} if frozen else {}
    return GAN(generator, DCGANDiscriminator(**small), noise_seed=0, **rates)


def fit(digits, tmp_path, steps: int, devices: int = 1, frozen: bool = False, **callback_args
        ) -> tuple[pl.Trainer, GAN, ImageMetricsCallback]:
    options = {"feature_net": str(digits / "net.pt"), "num_samples": NUM_SAMPLES, "batch_size": BATCH,
               "seed": SEED, "cache_dir": str(tmp_path / "cache"), **callback_args}
    callback = ImageMetricsCallback(**options)
    model = make_model(frozen)
    trainer = pl.Trainer(accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0,
                         devices=devices, strategy="ddp_gan" if devices > 1 else "auto",
                         max_steps=steps, logger=CSVLogger(tmp_path / "logs"), callbacks=[callback],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, make_data(digits))
    return trainer, model, callback


def logged_rows(trainer: pl.Trainer) -> list[dict[str, str]]:
    with open(f"{trainer.logger.log_dir}/metrics.csv") as f:
        return [row for row in csv.DictReader(f) if row.get("metrics/fd_indomain")]


def test_logged_metrics_equal_a_recomputation_from_the_same_codes_and_real_images(digits, tmp_path):
    trainer, model, callback = fit(digits, tmp_path, steps=4, every_n_steps=2)
    rows = logged_rows(trainer)
    assert [step for step, _ in callback.evaluations] == [2, 4]  # every 2 generator steps; the end (4) not twice
    # logged at the step Lightning stamps on the module's own metrics of that batch (batches count from 0)
    assert [int(row["step"]) for row in rows] == [1, 3]
    final = callback.evaluations[-1][1]
    assert float(rows[-1]["metrics/fd_indomain"]) == pytest.approx(final["metrics/fd_indomain"], rel=1e-6)
    assert float(trainer.callback_metrics["metrics/class_kl"]) == pytest.approx(final["metrics/class_kl"])

    # By hand: the first NUM_SAMPLES reference images vs NUM_SAMPLES EMA samples, chunk c of codes drawn from
    # seed SEED * 1_000_003 + c, with balanced labels (sample i has class i % 10).
    net = load_feature_net(str(digits / "net.pt"))
    real, fake = FeatureStats.empty(net.feature_dim), FeatureStats.empty(net.feature_dim)
    classes = ClassHistogram.empty(10)
    real_features, fake_features = [], []
    for images, _ in make_data(digits).reference_batches(NUM_SAMPLES, 64):
        real.update(net(images)[0])
        real_features.append(net(images)[0])
    for chunk in range(4):
        indices = torch.arange(chunk * BATCH, min((chunk + 1) * BATCH, NUM_SAMPLES))
        images = model.sample(len(indices), labels=indices % 10, seed=SEED * 1_000_003 + chunk)
        features, logits = net(images)
        fake.update(features)
        fake_features.append(features)
        classes.update(logits, indices % 10)
    assert int(real.n) == int(fake.n) == NUM_SAMPLES
    assert final["metrics/fd_indomain"] == pytest.approx(frechet_distance_of(real, fake), rel=1e-6)
    assert final["metrics/fd_indomain"] > 0
    coverage = classes.coverage()
    assert final["metrics/class_coverage"] == coverage.classes and 1 <= coverage.classes <= 10
    assert final["metrics/class_kl"] == pytest.approx(coverage.kl_uniform, abs=1e-9)
    assert 0 <= coverage.kl_uniform <= math.log(10)
    correct = sum(int((net(model.sample(len(i), labels=i % 10, seed=SEED * 1_000_003 + c))[1].argmax(1) == i % 10)
                      .sum()) for c, i in enumerate(torch.arange(NUM_SAMPLES).split(BATCH)))
    assert final["metrics/class_accuracy"] == pytest.approx(correct / NUM_SAMPLES, abs=1e-12)
    # k-NN metrics on the same in-domain features (no Inception here), k = 3
    by_hand = precision_recall(torch.cat(real_features), torch.cat(fake_features), k=3).as_dict()
    assert {name: final[name] for name in by_hand} == pytest.approx(by_hand, abs=1e-12)
    assert float(rows[-1]["metrics/recall"]) == final["metrics/recall"]  # logged as computed


@pytest.mark.parametrize("inception, message", [
    ("missing.pt", "ImageMetricsCallback.init_args.inception={path}: no such file; compute nodes cannot "
                   "download it: copy the FID Inception there"),
    ("net.pt", "ImageMetricsCallback.init_args.inception={path}: a weights file, but not torch-fidelity's"),
])
def test_a_bad_inception_path_stops_the_fit_at_start_naming_the_key(digits, tmp_path, inception, message):
    path = str(digits / inception)
    callback = ImageMetricsCallback(feature_net=str(digits / "net.pt"), inception=path,
                                    cache_dir=str(tmp_path / "cache"))
    trainer = pl.Trainer(accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0,
                         max_steps=2, logger=False, callbacks=[callback],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises((FileNotFoundError, ValueError)) as failed:
        trainer.fit(make_model(), make_data(digits))
    assert str(failed.value).startswith(message.format(path=path)) and "\n" not in str(failed.value)
    assert trainer.global_step == 0 and not (tmp_path / "cache").exists()


def test_real_statistics_are_computed_once_per_dataset_and_sample_count(digits, tmp_path):
    _, _, first = fit(digits, tmp_path, steps=1, every_n_steps=0)
    files = list((tmp_path / "cache").iterdir())
    assert first.real_from_cache == {"indomain": False} and len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    _, _, second = fit(digits, tmp_path, steps=1, every_n_steps=0)
    assert second.real_from_cache == {"indomain": True} and files[0].stat().st_mtime_ns == stamp
    (stats_a, _), (stats_b, _) = first.real["indomain"], second.real["indomain"]
    assert int(stats_b.n) == NUM_SAMPLES and torch.equal(stats_a.outer, stats_b.outer)
    assert first.evaluations[-1][1] == second.evaluations[-1][1]  # the same codes and weights: the same numbers
    _, _, other = fit(digits, tmp_path, steps=1, every_n_steps=0, num_samples=60)
    assert other.real_from_cache == {"indomain": False} and len(list((tmp_path / "cache").iterdir())) == 2


def test_two_ddp_ranks_log_what_one_process_logs(digits, tmp_path):
    run_ranks([__file__, str(digits), str(tmp_path / "ddp")])
    ranks = [torch.load(tmp_path / "ddp" / f"rank{rank}.pt") for rank in range(2)]
    _, _, single = fit(digits, tmp_path / "single", steps=1, frozen=True, every_n_steps=0)
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["evaluations"] == ranks[1]["evaluations"]  # every rank holds rank 0's numbers
    real = ranks[0]["real"]
    assert int(real["n"]) == NUM_SAMPLES  # both ranks' shares of the reference set, summed
    # float32 features of other batch groupings (each rank its share), summed in float64
    assert torch.allclose(real["outer"], single.real["indomain"][0].outer, rtol=1e-6)
    (step, ddp_metrics), (_, single_metrics) = ranks[0]["evaluations"][-1], single.evaluations[-1]
    assert step == 1 and ddp_metrics.keys() == single_metrics.keys()
    for name, value in single_metrics.items():
        assert ddp_metrics[name] == pytest.approx(value, rel=1e-6), name


def worker(digits: Path, out: Path) -> None:
    torch.set_num_threads(1)
    trainer, _, callback = fit(digits, out, steps=1, devices=2, frozen=True, every_n_steps=0)
    real = callback.real["indomain"][0].state_dict() if trainer.is_global_zero else None  # kept on rank 0
    torch.save({"world_size": trainer.world_size, "evaluations": callback.evaluations, "real": real},
               out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    worker(Path(sys.argv[1]), Path(sys.argv[2]))
