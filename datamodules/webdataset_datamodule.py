"""Image batches streamed from WebDataset tar shards, with the same number of batches on every rank.

Each epoch, the shards are dealt out afresh (seeded by ``seed`` and the epoch) to the ranks x dataloader
workers "streams". A stream reads only its shards, so the ranks see disjoint samples; it yields a fixed
number of batches, going round its shards again if they run short, so every rank takes the same number of
steps and DDP never waits on a rank whose data ran out. With fewer shards than streams, each shard is read
by several streams that keep every k-th sample of it. Tars are read by ``tar_reader``, not tarfile; remote
shards through ``resilient_stream``, which resumes a stalled or dropped read where it stopped.
"""

from __future__ import annotations

import gzip
import heapq
import inspect
import os
import random
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from itertools import chain, count, islice
from typing import IO, Any, Literal

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from datamodules.image_decode import SampleDecoder
from datamodules.resilient_stream import ReadRetry, RetryPolicy
from datamodules.sample_indices import sample_index_loader
from datamodules.shard_index import read_index
from datamodules.tar_reader import read_tar_samples
from datamodules.url_open import check_reachable, check_storage_options, expand_shard_urls, is_local, open_url

# Columns of the shared counters: samples read from shards, read but undecodable, lost in broken shards (as
# far as known), broken shards, those among them whose lost samples are unknown (no index), read retries.
READ, UNDECODABLE, LOST, BROKEN_SHARDS, UNCOUNTED_SHARDS, RETRIES = range(6)
_MIN_SAMPLES_BEFORE_CHECK = 100  # a few bad samples at the very start do not stop a run


@dataclass(frozen=True)
class ShardSlice:
    """Every ``parts``-th sample of a shard, from sample ``part`` on (parts=1: the whole shard)."""

    url: str
    part: int = 0
    parts: int = 1
    samples: int | None = None  # expected count, from the index

    def expected(self) -> int | None:
        return None if self.samples is None else len(range(self.part, self.samples, self.parts))


def plan_epoch(urls: list[str], counts: list[int] | None, streams: int, seed: int,
               epoch: int) -> list[list[ShardSlice]]:
    """Deal the shards (or slices of them, when there are fewer shards than streams) to the streams.

    Seeded by (seed, epoch) only, so every rank computes the same plan; balanced by sample count.
    """
    parts = -(-streams // len(urls))
    slices = [ShardSlice(url, part, parts, None if counts is None else counts[i])
              for i, url in enumerate(urls) for part in range(parts)]
    random.Random(f"{seed}/{epoch}/plan").shuffle(slices)
    slices.sort(key=lambda s: -(s.expected() or 1))  # stable: the shuffle breaks ties
    plan: list[list[ShardSlice]] = [[] for _ in range(streams)]
    loads = [(0, stream) for stream in range(streams)]  # a heap: the least loaded stream comes first
    for piece in slices:
        load, stream = heapq.heappop(loads)
        plan[stream].append(piece)
        heapq.heappush(loads, (load + (piece.expected() or 1), stream))
    return plan


def shuffled(items: Iterable[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Reservoir shuffle: once ``size`` items are held, each new item releases a random held one."""
    if size <= 1:
        yield from items
        return
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = rng.randrange(size)
        yield buffer[i]
        buffer[i] = item
    rng.shuffle(buffer)
    yield from buffer


def _count_congruent(stop: int, residue: int, modulus: int) -> int:
    """How many b in [0, stop) have b % modulus == residue."""
    return len(range(residue, stop, modulus))


class ShardStream(IterableDataset):
    """One rank's batches; an epoch is ``batches_per_epoch`` batches, interleaved over the workers.

    Batch b of an epoch is produced by "lane" b % workers, which owns stream ``rank * workers + lane`` of
    the epoch plan. ``position`` counts the rank's batches consumed; a pass starts there: each lane skips
    the (undecoded) samples of the batches already consumed and yields up to the end of the epoch.
    Worker w of a pass that starts at batch o runs lane (o + w) % workers, so the DataLoader's
    round-robin over workers yields the epoch's batches in order after a resume too.

    ``stats`` (shared memory, one row per worker; the columns above) counts every read, so a bad shard read in
    two epochs counts twice. A shard that broke is not read again by that worker in the same epoch (a store
    that stalled is not waited on again).
    """

    def __init__(self, urls: list[str], counts: list[int] | None, decoder: SampleDecoder, batch_size: int,
                 batches_per_epoch: int, shuffle_buffer: int, seed: int, rank: int, world_size: int,
                 num_workers: int, max_bad_fraction: float, storage_options: dict[str, Any] | None,
                 position: int = 0, policy: RetryPolicy | None = None):
        self.urls, self.counts, self.decoder = urls, counts, decoder
        self.batch_size, self.batches_per_epoch = batch_size, batches_per_epoch
        self.shuffle_buffer, self.seed, self.rank, self.world_size = shuffle_buffer, seed, rank, world_size
        self.max_bad_fraction, self.storage_options = max_bad_fraction, storage_options
        self.position, self.policy = position, policy or RetryPolicy()
        self.stats = torch.zeros(max(1, num_workers), 6, dtype=torch.long).share_memory_()
        self._row = 0
        self._last_bad = "none in this worker"
        self._broken: set[str] = set()  # this epoch's broken shards

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[Tensor | tuple[Tensor, Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        self._row = worker
        epoch, offset = divmod(self.position, self.batches_per_epoch)
        self.position = (epoch + 1) * self.batches_per_epoch  # a persistent worker's next pass: next epoch
        lane = (offset + worker) % workers
        done = _count_congruent(offset, lane, workers)
        total = _count_congruent(self.batches_per_epoch, lane, workers)
        if done == total:
            return
        stream = self.rank * workers + lane
        self._broken = set()
        plan = plan_epoch(self.urls, self.counts, self.world_size * workers, self.seed, epoch)
        samples = islice(self._samples(plan[stream], epoch, stream), done * self.batch_size, None)
        images: list[Tensor] = []
        labels: list[int] = []
        for index, sample in enumerate(samples, start=done * self.batch_size):
            rng = random.Random(f"{self.seed}/{epoch}/{stream}/{index}") if self.decoder.is_random else None
            try:
                image, label = self.decoder(sample, rng)
            except Exception as err:  # undecodable image or label: skip it, count it
                where = f"{sample['__key__']!r} of {sample['__url__']}"
                self._count_bad(UNDECODABLE, 1, f"skipped sample {where}: {type(err).__name__}: {err}")
                continue
            images.append(image)
            labels.append(label)
            if len(images) == self.batch_size:
                self._check_bad_share()
                batch = torch.stack(images)
                yield (batch, torch.tensor(labels)) if self.decoder.labels else batch
                images, labels = [], []
                done += 1
                if done == total:
                    return

    def _samples(self, slices: list[ShardSlice], epoch: int, stream: int) -> Iterator[dict[str, Any]]:
        """The stream's slices, shuffled, then round again (reshuffled) for as long as it is read."""
        for cycle in count():
            order = [piece for piece in slices if piece.url not in self._broken]
            random.Random(f"{self.seed}/{epoch}/{stream}/{cycle}/order").shuffle(order)
            raw = chain.from_iterable(self._read_slice(piece) for piece in order)
            buffer_rng = random.Random(f"{self.seed}/{epoch}/{stream}/{cycle}/buffer")
            delivered = 0
            for sample in shuffled(raw, self.shuffle_buffer, buffer_rng):
                delivered += 1
                yield sample
            if delivered == 0:
                urls = sorted({piece.url for piece in slices})
                raise RuntimeError(f"data: no readable samples in {', '.join(urls)}; write them again "
                                   "(ganforge shards), or leave them out of the index")

    def _read_slice(self, piece: ShardSlice) -> Iterator[dict[str, Any]]:
        """The slice's samples; a shard that fails mid-way (after its retries) is skipped with a warning and
        counted, as is one with fewer samples than the index says. Without an index the samples lost are
        unknown, and said so."""
        stream: IO[bytes] | None = None
        read, finished, expected = 0, False, piece.expected()
        try:
            stream = open_url(piece.url, self.storage_options, self.policy, self._note_retry)
            tar = gzip.GzipFile(fileobj=stream) if piece.url.endswith((".gz", ".tgz")) else stream
            for i, sample in enumerate(read_tar_samples(tar)):
                if i % piece.parts == piece.part:
                    read += 1
                    self.stats[self._row, READ] += 1
                    sample["__url__"] = piece.url
                    yield sample
            finished = True
            stream.close()  # a pipe: command that failed reports it here
            if expected is not None and read < expected:
                raise EOFError(f"it ended after {read} of the {expected} samples in the index")
        except Exception as err:  # truncated or corrupt tar, dropped connection, failed command
            self._broken.add(piece.url)
            self.stats[self._row, BROKEN_SHARDS] += 1
            if expected is None:
                self.stats[self._row, UNCOUNTED_SHARDS] += 1
            lost = 0 if expected is None else expected - read
            what = ("an unknown number of samples lost: no data.index gives its count" if expected is None
                    else f"{lost} samples lost")
            self._count_bad(LOST, lost, f"skipped the rest of shard {piece.url} after {read} samples ({what}): "
                                        f"{type(err).__name__}: {err}")
        finally:
            if stream is not None and not finished:
                with suppress(Exception):  # stopped early (end of epoch) or already failed
                    stream.close()

    def _note_retry(self, retry: ReadRetry) -> None:
        self.stats[self._row, RETRIES] += 1
        warnings.warn(f"data: {retry}", RuntimeWarning, stacklevel=2)

    def _count_bad(self, column: int, samples: int, message: str) -> None:
        self.stats[self._row, column] += samples
        self._last_bad = message
        warnings.warn(f"data: {message}", RuntimeWarning, stacklevel=2)
        self._check_bad_share()

    def _check_bad_share(self) -> None:
        """Stop the run once more than ``max_bad_fraction`` of the samples this rank met were bad."""
        totals = self.stats.sum(0)
        bad, seen = int(totals[UNDECODABLE] + totals[LOST]), int(totals[READ] + totals[LOST])
        if seen >= _MIN_SAMPLES_BEFORE_CHECK and bad > self.max_bad_fraction * seen:
            raise RuntimeError(f"data: {bad} of {seen} samples on rank {self.rank} were unreadable, more "
                               f"than data.max_bad_fraction={self.max_bad_fraction}; last: {self._last_bad}. "
                               "Fix or remove the bad shards, or raise data.max_bad_fraction")


class ReusableBatches(IterableDataset):
    """The batches ``make()`` returns, made afresh at every pass (a generator function's are used up once)."""

    def __init__(self, make: Callable[[], Iterator[Any]]):
        self.make = make

    def __iter__(self) -> Iterator[Any]:
        return self.make()


class WebDataModule(pl.LightningDataModule):
    """Images in [-1, 1] (and labels) streamed from tar shards on local disk, http(s), s3/gs/any fsspec
    store, or ``pipe:`` commands. The number of batches consumed is checkpointed, and a resumed run
    continues the stream from there (see ShardStream: exact unless samples were skipped as undecodable
    earlier in the interrupted epoch, which shifts that epoch's remainder by as many samples).

    Args:
        urls: shard URLs with brace patterns (``s3://bucket/shard-{000000..000099}.tar``), or a list.
        index: a ``shards.json`` written by ``ganforge shards`` (its shards are found next to it); it
            fixes the epoch length and tells whether labels exist. Give ``urls`` or ``index``.
        resolution: side of the square images (shorter side resized with antialiasing, then cropped).
        channels: 1 (grayscale) or 3 (RGB); images are converted.
        labels: yield ``(images, labels)`` with int64 labels from each sample's ``cls``; else images only.
        batch_size: samples per batch on each rank.
        batches_per_epoch: batches per rank per epoch; default, from the index: one pass over the data
            (samples // (world_size * batch_size)). Required with ``urls``.
        num_workers: decoding worker processes per rank.
        shuffle_buffer: samples each worker holds to shuffle across shard boundaries (<= 1: shard order).
        crop: ``center``, or ``random`` along the longer side.
        hflip: flip half the images left-right.
        seed: seeds the per-epoch shard plan, shuffling and augmentation of every (rank, worker); None:
            the run's ``seed_everything`` value (PL_GLOBAL_SEED, the same on every rank), else 0.
        max_bad_fraction: stop the run once more than this share of a rank's samples were unreadable.
        read_timeout: seconds without a byte from a remote shard that make a stall, retried from where it
            stopped (well under the HTTP client's default of minutes).
        read_retries: re-opens of a remote shard after stalls, resets and 5xx errors (backoff 0.5 s, doubling)
            before the rest of it is skipped and counted.
        pin_memory: page-locked batches for fast copies to the GPU (only when CUDA is available).
        persistent_workers: keep workers, and their open connections, from epoch to epoch.
        prefetch_factor: batches each worker prepares ahead.
        storage_options: fsspec options for the store (endpoint_url, anon, ...). Credentials come from the
            environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, ...), never from here: this is logged.
        eval_samples: images of the validate and test sets: the fixed reference set (``reference_batches``,
            shared out over the ranks), which is read from the training shards, so it is not held out.
        predict_samples: sample indices that ``predict`` generates, in batches of ``batch_size``.
    """

    def __init__(
        self,
        urls: str | list[str] | None = None,
        index: str | None = None,
        resolution: int = 64,
        channels: Literal[1, 3] = 3,
        labels: bool = False,
        batch_size: int = 64,
        batches_per_epoch: int | None = None,
        num_workers: int = 2,
        shuffle_buffer: int = 1000,
        crop: Literal["center", "random"] = "center",
        hflip: bool = False,
        seed: int | None = None,
        max_bad_fraction: float = 0.01,
        read_timeout: float = 20.0,
        read_retries: int = 3,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        prefetch_factor: int = 4,
        storage_options: dict[str, Any] | None = None,
        eval_samples: int = 1000,
        predict_samples: int = 64,
    ):
        super().__init__()
        if (urls is None) == (index is None):
            raise ValueError("data: give data.urls (shard URLs, brace patterns allowed) or data.index "
                             "(a shards.json), exactly one of them")
        for name, value, low in (("resolution", resolution, 1), ("batch_size", batch_size, 1),
                                 ("num_workers", num_workers, 0), ("prefetch_factor", prefetch_factor, 1),
                                 ("batches_per_epoch", batches_per_epoch or 1, 1), ("eval_samples", eval_samples, 1),
                                 ("predict_samples", predict_samples, 1)):
            if value < low:
                raise ValueError(f"data.{name} must be >= {low}, got {value}")
        if channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 or 3, got {channels}")
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"data.max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        if read_timeout <= 0 or read_retries < 0:
            raise ValueError(f"data.read_timeout must be > 0 and data.read_retries >= 0, got {read_timeout} and "
                             f"{read_retries}")
        check_storage_options(storage_options)
        # Handing Lightning the frame spares the frame cycle its own lookup makes, which would keep the
        # caller's frame, and any loader (with its worker processes) in it, alive until a gc pass.
        self.save_hyperparameters(frame=inspect.currentframe())
        self.seed = seed if seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        self.batches_consumed = 0
        self.shard_urls: list[str] = []
        self.shard_counts: list[int] | None = None
        self.classes: list[str] | None = None
        self._stream: ShardStream | None = None
        self.read_policy = RetryPolicy(read_timeout, read_retries)

    @property
    def num_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    def setup(self, stage: str | None = None) -> None:
        """Find the shards and check that they can be reached: bad input fails here, naming it."""
        if self.shard_urls:
            return
        hp = self.hparams
        if hp.index is not None:
            check_reachable(hp.index, hp.storage_options)
            index = read_index(hp.index, hp.storage_options, self.read_policy)
            if hp.labels and index.classes is None:
                raise ValueError(f"data.labels is true but {hp.index} has no classes: write the shards from "
                                 "labelled data, or set data.labels false")
            urls, self.classes = index.shard_urls(hp.index), index.classes
            self.shard_counts = [entry.samples for entry in index.shards]
        else:
            urls = expand_shard_urls(hp.urls)
            if hp.batches_per_epoch is None:
                raise ValueError("data.batches_per_epoch is required with data.urls (or give data.index)")
        if not urls:
            raise ValueError(f"data.urls {hp.urls!r} names no shards")
        check_reachable(urls[0], hp.storage_options)
        for url in urls[1:]:  # the rest only where checking is free
            if is_local(url):
                check_reachable(url)
        self.shard_urls = urls

    def reference_batches(self, num_samples: int | None = None, batch_size: int = 256, rank: int = 0,
                          world_size: int = 1) -> Iterator[tuple[Tensor, Tensor | None]]:
        """The first ``num_samples`` samples (None: all) in shard order, centre-cropped, never flipped: a fixed
        real set for evaluation. Rank r of ``world_size`` gets samples r, r + world_size, ... Labels are None
        when data.labels is off."""
        self.setup()
        hp = self.hparams
        decoder = SampleDecoder(hp.resolution, hp.channels, labels=hp.labels, num_classes=self.num_classes)

        def read(url: str) -> Iterator[dict[str, Any]]:
            with open_url(url, hp.storage_options, self.read_policy) as stream:
                yield from read_tar_samples(gzip.GzipFile(fileobj=stream) if url.endswith((".gz", ".tgz"))
                                            else stream)

        samples = islice(chain.from_iterable(read(url) for url in self.shard_urls), rank, num_samples, world_size)
        while batch := [decoder(sample) for sample in islice(samples, batch_size)]:
            images, labels = zip(*batch, strict=True)
            yield torch.stack(images), (torch.tensor(labels) if hp.labels else None)

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        hp = self.hparams
        rank, world_size = self._rank_and_world_size()
        batches = hp.batches_per_epoch or max(1, sum(self.shard_counts) // (world_size * hp.batch_size))
        decoder = SampleDecoder(hp.resolution, hp.channels, hp.crop, hp.hflip, hp.labels, self.num_classes)
        self._stream = ShardStream(
            self.shard_urls, self.shard_counts, decoder, hp.batch_size, batches, hp.shuffle_buffer, self.seed,
            rank, world_size, hp.num_workers, hp.max_bad_fraction, hp.storage_options,
            position=self.batches_consumed, policy=self.read_policy)
        workers = hp.num_workers > 0
        return DataLoader(self._stream, batch_size=None, num_workers=hp.num_workers,
                          pin_memory=hp.pin_memory and torch.cuda.is_available(),
                          persistent_workers=hp.persistent_workers and workers,
                          prefetch_factor=hp.prefetch_factor if workers else None)

    def val_dataloader(self) -> DataLoader:
        return self._reference_loader()

    def test_dataloader(self) -> DataLoader:
        return self._reference_loader()

    def predict_dataloader(self) -> DataLoader:
        return sample_index_loader(self.hparams.predict_samples, self.hparams.batch_size)

    def _reference_loader(self) -> DataLoader:
        """This rank's share of the first ``eval_samples`` images, as (images, labels) or images alone (like the
        training batches), read in this process: the set is small and read once per evaluation."""
        hp = self.hparams
        rank, world_size = self._rank_and_world_size()

        def batches() -> Iterator[Tensor | tuple[Tensor, Tensor]]:
            for images, labels in self.reference_batches(hp.eval_samples, hp.batch_size, rank, world_size):
                yield images if labels is None else (images, labels)

        return DataLoader(ReusableBatches(batches), batch_size=None, num_workers=0)

    def _rank_and_world_size(self) -> tuple[int, int]:
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def data_health(self) -> dict[str, int]:
        """This rank's counts since the loader was made: samples read, skipped (as far as known), broken shards,
        broken shards whose lost samples are unknown (no index: ``skipped_samples`` is then a lower bound),
        and re-opens of remote shards."""
        totals = self._stream.stats.sum(0) if self._stream is not None else torch.zeros(6, dtype=torch.long)
        return {"samples_read": int(totals[READ]), "skipped_samples": int(totals[UNDECODABLE] + totals[LOST]),
                "broken_shards": int(totals[BROKEN_SHARDS]), "uncounted_shards": int(totals[UNCOUNTED_SHARDS]),
                "read_retries": int(totals[RETRIES])}

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = self.trainer
        if trainer is not None and trainer.training:
            self.batches_consumed += 1
            if self._stream is not None:  # workers made for the next epoch start from here
                self._stream.position = self.batches_consumed
            if self.batches_consumed % trainer.log_every_n_steps == 0:
                self._log_data_health()
        return batch

    def _log_data_health(self) -> None:
        """Log every rank's counts summed (all ranks get here at the same batch: same steps per rank)."""
        health = self.data_health()
        strategy = self.trainer.strategy
        totals = strategy.reduce(torch.tensor(list(health.values()), dtype=torch.float64,
                                              device=strategy.root_device), reduce_op="sum")
        metrics = {f"data/{name}": float(value) for name, value in zip(health, totals.tolist(), strict=True)}
        for logger in self.trainer.loggers:
            logger.log_metrics(metrics, step=self.trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"batches_consumed": self.batches_consumed, "seed": self.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.batches_consumed, self.seed = int(state_dict["batches_consumed"]), int(state_dict["seed"])
