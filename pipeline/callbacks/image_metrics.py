"""Image-quality metrics of the EMA generator every N generator steps: in-domain FD, class coverage, FID, KID,
precision / recall / density / coverage.

Each evaluation scores the same ``num_samples`` latent codes (chunk c of ``batch_size`` codes is drawn from
seed (seed, c), so the set does not depend on the number of ranks), shared out by chunks over the ranks.
Feature moments and class counts are summed over ranks, features gathered for KID and the k-NN metrics; rank 0 then
computes the metrics and broadcasts them, so every rank holds the same values (for checkpoint monitoring).
Under ddp_gan a generator's BatchNorm statistics are per rank, so each share comes from its rank's statistics.
Real-data statistics come from the datamodule's fixed reference set (``reference_batches``) and are cached
on disk, keyed by dataset, resolution, sample count and feature extractor, so they are computed once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor

from pipeline.callbacks.periodic import PeriodicCallback
from pipeline.metrics.class_coverage import ClassHistogram
from pipeline.metrics.feature_net import FeatureNet, load_feature_net
from pipeline.metrics.frechet import FeatureStats, frechet_distance_of
from pipeline.metrics.inception import InceptionFeatures, ResizeFilter, load_inception
from pipeline.metrics.kernel_distance import kernel_distance
from pipeline.metrics.precision_recall import precision_recall

_CONFIG = "ImageMetricsCallback.init_args"
_CACHE_VERSION = 2  # bump when what a cached file holds, or how it is computed, changes


class ImageMetricsCallback(PeriodicCallback):
    """Logs ``metrics/fd_indomain``, ``metrics/class_coverage``, ``metrics/class_kl`` (with ``feature_net``;
    also ``metrics/class_accuracy`` for conditional generators, whose samples cycle through the classes) and
    ``metrics/fid``, ``metrics/kid``, ``metrics/kid_std`` (with ``inception``), and ``metrics/precision``,
    ``metrics/recall``, ``metrics/density``, ``metrics/coverage`` (pipeline.metrics.precision_recall; on the
    Inception features when ``inception`` is given, else on the feature net's) to every logger.

    Args:
        feature_net: a file written by scripts/train_feature_net.py: in-domain Fréchet distance on its
            penultimate features, class coverage from its predictions. None: skipped.
        inception: a local FID Inception file (see pipeline.metrics.inception): FID and KID. None: skipped.
        every_n_steps: generator steps between evaluations (0: only at the end of training).
        num_samples: generated images per evaluation; also the real images of the reference statistics
            (fewer if the dataset is smaller).
        seed: of the latent codes: every evaluation scores the same codes.
        batch_size: images per generator and feature-extractor call, per rank.
        kid_subsets, kid_subset_size: KID is the mean (and std) over this many random subsets of this size.
        resize_filter: antialiasing filter of the resize to Inception's 299 px ("bicubic": clean-fid's).
        nearest_k: k of the k-NN balls of precision, recall, density and coverage (0: not computed).
        cache_dir: where real-data statistics are kept (shared by runs on the same data).
    """

    def __init__(self, feature_net: str | None = None, inception: str | None = None, every_n_steps: int = 5000,
                 num_samples: int = 10000, seed: int = 0, batch_size: int = 100, kid_subsets: int = 100,
                 kid_subset_size: int = 1000, resize_filter: ResizeFilter = "bicubic", nearest_k: int = 3,
                 cache_dir: str = "~/.cache/ganforge/real_stats"):
        super().__init__(every_n_steps)
        if feature_net is None and inception is None:
            raise ValueError(f"{_CONFIG}: give feature_net, inception or both; with neither there is nothing "
                             "to measure")
        for name, value in (("num_samples", num_samples), ("batch_size", batch_size)):
            if value < 2:
                raise ValueError(f"{_CONFIG}.{name} must be >= 2, got {value}")
        if not 0 <= nearest_k < num_samples:
            raise ValueError(f"{_CONFIG}.nearest_k must be in [0, num_samples), got {nearest_k}")
        self.feature_net_path, self.inception_path = feature_net, inception
        self.num_samples, self.seed, self.batch_size = num_samples, seed, batch_size
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size
        self.resize_filter = resize_filter
        self.nearest_k = nearest_k
        self.cache_dir = Path(os.path.expanduser(cache_dir))
        self.feature_net: FeatureNet | None = None
        self.inception: InceptionFeatures | None = None
        self.real: dict[str, tuple[FeatureStats, Tensor | None]] = {}  # rank 0 only: per extractor
        self.real_from_cache: dict[str, bool] = {}

    # ---- start: extractors (fail fast), then the real statistics --------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.feature_net_path is not None:
            self.feature_net = load_feature_net(self.feature_net_path, f"{_CONFIG}.feature_net")
        if self.inception_path is not None:
            self.inception = load_inception(self.inception_path, f"{_CONFIG}.inception", self.resize_filter)
        if not hasattr(trainer.datamodule, "reference_batches"):
            raise ValueError(f"{_CONFIG}: the real images come from the datamodule's reference_batches; train "
                             "with datamodules.webdataset_datamodule.WebDataModule")

    def prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for net in (self.feature_net, self.inception):
            if net is not None:
                net.to(pl_module.device)
        files = {name: self._cache_file(trainer, name, path) for name, path in self._extractor_paths().items()}
        on_disk = trainer.strategy.broadcast({name: file.is_file() for name, file in files.items()})
        missing = [name for name in files if not on_disk[name]]
        computed = self._real_statistics(trainer, pl_module, missing) if missing else {}
        if trainer.is_global_zero:
            for name, file in files.items():
                if name in computed:
                    _save_atomically(computed[name], file)
                self.real[name] = computed[name] if name in computed else _load(file)
        self.real_from_cache = {name: name not in computed for name in files}

    def _extractor_paths(self) -> dict[str, str]:
        paths = {"indomain": self.feature_net_path, "inception": self.inception_path}
        return {name: path for name, path in paths.items() if path is not None}

    def _cache_file(self, trainer: pl.Trainer, name: str, path: str) -> Path:
        data = trainer.datamodule
        key = {"version": _CACHE_VERSION, "urls": data.shard_urls, "counts": data.shard_counts,
               "resolution": data.hparams.resolution, "channels": data.hparams.channels,
               "num_samples": self.num_samples, "extractor": name, "extractor_sha256": _sha256(path),
               "resize_filter": self.resize_filter if name == "inception" else None}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        return self.cache_dir / f"{name}-{digest}.pt"

    def _real_statistics(self, trainer: pl.Trainer, pl_module: pl.LightningModule, names: list[str]
                         ) -> dict[str, tuple[FeatureStats, Tensor | None]]:
        """Every rank takes its share of the reference set; the sums are all-reduced, features gathered."""
        accumulator = _Accumulator(self, pl_module.device, names)
        batches = trainer.datamodule.reference_batches(self.num_samples, self.batch_size, trainer.global_rank,
                                                       trainer.world_size)
        position = trainer.global_rank
        for images, _ in batches:
            indices = torch.arange(len(images)) * trainer.world_size + position
            position += len(images) * trainer.world_size
            accumulator.update(images.to(pl_module.device), indices)
        return accumulator.finish(trainer)

    # ---- each evaluation ------------------------------------------------------------------------------
    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        accumulator = _Accumulator(self, pl_module.device, list(self._extractor_paths()))
        num_classes = getattr(pl_module, "num_classes", 0)
        chunks = range(-(-self.num_samples // self.batch_size))
        for chunk in chunks[trainer.global_rank::trainer.world_size]:
            indices = torch.arange(chunk * self.batch_size, min((chunk + 1) * self.batch_size, self.num_samples))
            labels = (indices % num_classes).to(pl_module.device) if num_classes else None
            images = pl_module.sample(len(indices), labels=labels, seed=self.seed * 1_000_003 + chunk)
            accumulator.update(images, indices, labels)
        fake = accumulator.finish(trainer)
        metrics = self._metrics(fake, accumulator.classes, pl_module.device) if trainer.is_global_zero else None
        metrics = trainer.strategy.broadcast(metrics)
        self.record(trainer, metrics)
        rank_zero_info(f"generator step {self.evaluated_step(trainer)}: "
                       + ", ".join(f"{name.removeprefix('metrics/')} {value:.4g}" for name, value in metrics.items()))
        trainer.callback_metrics.update({name: torch.tensor(value) for name, value in metrics.items()})

    def _metrics(self, fake: dict[str, tuple[FeatureStats, Tensor | None]], classes: ClassHistogram | None,
                 device: torch.device) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if "indomain" in fake:
            metrics["metrics/fd_indomain"] = frechet_distance_of(self.real["indomain"][0], fake["indomain"][0])
            metrics.update(classes.coverage().as_dict("metrics/"))
            if classes.accuracy() is not None:
                metrics["metrics/class_accuracy"] = classes.accuracy()
        if "inception" in fake:
            (real_stats, real_features), (fake_stats, fake_features) = self.real["inception"], fake["inception"]
            metrics["metrics/fid"] = frechet_distance_of(real_stats, fake_stats)
            kid, kid_std = kernel_distance(real_features, fake_features, self.kid_subsets, self.kid_subset_size,
                                           seed=self.seed)
            metrics.update({"metrics/kid": kid, "metrics/kid_std": kid_std})
        if self.nearest_k:
            name = "inception" if "inception" in fake else "indomain"
            metrics.update(precision_recall(self.real[name][1], fake[name][1], self.nearest_k, device).as_dict())
        return metrics


class _Accumulator:
    """One pass over images on one rank: feature moments and the features themselves per extractor, class
    counts."""

    def __init__(self, callback: ImageMetricsCallback, device: torch.device, names: list[str]):
        self.nets = {"indomain": callback.feature_net, "inception": callback.inception}
        self.stats = {name: FeatureStats.empty(self._dim(name), device) for name in names}
        self.classes = (ClassHistogram.empty(callback.feature_net.num_classes, device)
                        if "indomain" in names else None)
        self.kept: dict[str, list[Tensor]] = {name: [] for name in names}  # for KID and the k-NN metrics
        self.indices: list[Tensor] = []  # and their positions in the whole set, to order them

    def _dim(self, name: str) -> int:
        net = self.nets[name]
        return net.feature_dim if name == "indomain" else net.num_features

    @torch.no_grad()
    def update(self, images: Tensor, indices: Tensor, labels: Tensor | None = None) -> None:
        """``labels``: the classes a conditional generator was asked for (None for real images)."""
        images = images.float()
        if "indomain" in self.stats:
            features, logits = self.nets["indomain"](images)
            self.stats["indomain"].update(features)
            self.kept["indomain"].append(features)
            self.classes.update(logits, labels)
        if "inception" in self.stats:
            features = self.nets["inception"](images)
            self.stats["inception"].update(features)
            self.kept["inception"].append(features)
        self.indices.append(indices.to(images.device))

    def finish(self, trainer: pl.Trainer) -> dict[str, tuple[FeatureStats, Tensor | None]]:
        """Sum over ranks; every extractor's features of all ranks in set order (on the CPU)."""
        for stats in self.stats.values():
            stats.all_reduce()
        if self.classes is not None:
            self.classes.all_reduce()
        results: dict[str, tuple[FeatureStats, Tensor | None]] = {}
        for name, stats in self.stats.items():
            device = stats.n.device
            indices = torch.cat(self.indices) if self.indices else torch.zeros(0, dtype=torch.long, device=device)
            kept = self.kept[name]
            features = torch.cat(kept) if kept else torch.zeros(0, self._dim(name), device=device)
            features, indices = _gather_rows(trainer, features), _gather_rows(trainer, indices.to(device))
            results[name] = (stats, features[indices.argsort()].cpu())
        return results


def _gather_rows(trainer: pl.Trainer, rows: Tensor) -> Tensor:
    """The rows of every rank, rank by rank (ranks may hold different numbers of rows)."""
    if trainer.world_size == 1:
        return rows
    sizes = trainer.strategy.all_gather(torch.tensor(len(rows), device=rows.device))
    padded = rows.new_zeros((int(sizes.max()), *rows.shape[1:]))
    padded[: len(rows)] = rows
    gathered = trainer.strategy.all_gather(padded)
    return torch.cat([gathered[rank, : int(size)] for rank, size in enumerate(sizes.tolist())])


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _save_atomically(real: tuple[FeatureStats, Tensor | None], file: Path) -> None:
    """A plain dict of tensors (loadable with weights_only=True), renamed into place when complete."""
    stats, features = real
    record: dict[str, Any] = {"stats": stats.state_dict(), "features": features}
    file.parent.mkdir(parents=True, exist_ok=True)
    partial = file.with_suffix(f".{os.getpid()}.partial")
    torch.save(record, partial)
    os.replace(partial, file)


def _load(file: Path) -> tuple[FeatureStats, Tensor | None]:
    record = torch.load(file, map_location="cpu", weights_only=True)
    return FeatureStats.from_state_dict(record["stats"]), record["features"]
