"""WebDataModule: what comes out of the shards, from every kind of store, on every rank, after a resume."""

import csv
import io
import os
import pickle
import random
import subprocess
import tarfile
import time

import fsspec
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import webdataset as wds
from jsonargparse import ArgumentParser
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from servers import http_server, s3_server

from datamodules.image_decode import decode_image
from datamodules.tar_reader import read_tar_samples
from datamodules.webdataset_datamodule import WebDataModule
from pipeline.commands import shards as shards_command

N, SIZE, CLASSES = 240, 8, 5


def id_images(n: int = N) -> np.ndarray:
    """Noise images whose first two pixels spell their index, so a batch tells which samples it holds."""
    images = np.random.default_rng(0).integers(0, 256, size=(n, SIZE, SIZE), dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = np.arange(n) // 256, np.arange(n) % 256
    return images


def ids_of(images: torch.Tensor) -> list[int]:
    pixels = to_uint8(images[:, 0, 0, :2]).long()
    return (pixels[:, 0] * 256 + pixels[:, 1]).tolist()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return ((images + 1) * 127.5).round().to(torch.uint8)


def write_id_shards(folder, max_count: int = 40, *extra: str, out: str | None = None) -> str:
    """N labelled id images through `ganforge shards` (into ``folder``, or ``out``); returns the index."""
    os.makedirs(folder, exist_ok=True)
    np.savez(os.path.join(folder, "ids.npz"), images=id_images(), labels=np.arange(N) % CLASSES)
    out = out or str(folder)
    shards_command.main(["--source", os.path.join(folder, "ids.npz"), "--out", out,
                         "--max-count", str(max_count), *extra])
    return f"{out}/shards.json"


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def data(**kwargs) -> WebDataModule:
    options = dict(resolution=SIZE, channels=1, batch_size=8, num_workers=0, shuffle_buffer=50)
    return WebDataModule(**{**options, **kwargs})


def one_epoch(dm: WebDataModule) -> list:
    return list(dm.train_dataloader())


@pytest.fixture(scope="module")
def id_index(tmp_path_factory) -> str:
    return write_id_shards(tmp_path_factory.mktemp("ids"), 40)


# ---- format: three writers, one reading -------------------------------------------------------------
def test_our_writer_plain_tar_and_webdataset_shardwriter_read_back_identically(tmp_path, id_index):
    images, labels = id_images(), np.arange(N) % CLASSES
    pngs = {f"{i:07d}": png(images[i]) for i in range(N)}
    files = tmp_path / "files"
    files.mkdir()
    for key, encoded in pngs.items():
        (files / f"{key}.png").write_bytes(encoded)
        (files / f"{key}.cls").write_text(str(int(labels[int(key)])))
    for part in range(2):  # plain GNU tar, two shards
        names = sorted(os.listdir(files))[part * N: (part + 1) * N]
        subprocess.run(["tar", "cf", str(tmp_path / f"tar-{part}.tar"), *names], cwd=files, check=True)
    with wds.ShardWriter(str(tmp_path / "wds-%02d.tar"), maxcount=100) as sink:
        for key, encoded in pngs.items():
            sink.write({"__key__": key, "png": encoded, "cls": int(labels[int(key)])})

    ours = os.path.dirname(id_index)
    sources = {"ours": ([os.path.join(ours, f"shard-{k:06d}.tar") for k in range(6)], {"index": id_index}),
               "tar": ([str(tmp_path / f"tar-{k}.tar") for k in range(2)],
                       {"urls": str(tmp_path / "tar-{0..1}.tar")}),
               "webdataset": ([str(tmp_path / f"wds-{k:02d}.tar") for k in range(3)],
                              {"urls": [str(tmp_path / "wds-{00..01}.tar"), str(tmp_path / "wds-02.tar")]})}
    for name, (paths, where) in sources.items():
        keys = []
        for path in paths:
            with open(path, "rb") as stream:
                keys += [sample["__key__"] for sample in read_tar_samples(stream)]
        assert sorted(keys) == sorted(pngs), name
        epoch = one_epoch(data(**where, labels=True, shuffle_buffer=0, batches_per_epoch=N // 8))
        x, y = torch.cat([b[0] for b in epoch]), torch.cat([b[1] for b in epoch])
        order = torch.tensor(ids_of(x)).argsort()
        assert ids_of(x[order]) == list(range(N)), name  # every sample exactly once
        assert y.dtype == torch.int64 and torch.equal(y[order], torch.as_tensor(labels)), name
        assert torch.equal(to_uint8(x[order]), torch.as_tensor(images).unsqueeze(1)), name  # exact pixels


@pytest.mark.parametrize("tar_format", ["gnu", "pax", "ustar"])
def test_tar_dialects_long_names_and_gzip_read_like_tarfile(tmp_path, tar_format):
    source = tmp_path / "src"
    deep = source / ("a-long-folder-name-" * 4) / ("another-long-one-" * 3)  # paths of 100+ characters
    deep.mkdir(parents=True)
    images = id_images(6)
    for i in range(6):
        (deep / f"{i:03d}.png").write_bytes(png(images[i]))
        (deep / f"{i:03d}.cls").write_text(str(i % 2))
        (deep / f"{i:03d}.txt").write_text("never read")
    names = sorted(str(p.relative_to(source)) for p in deep.iterdir())
    assert max(map(len, names)) > 100
    for archive, flags in (("plain.tar", "cf"), ("zipped.tar.gz", "czf")):
        command = ["tar", f"--format={tar_format}", f"-{flags}", str(tmp_path / archive), *names]
        subprocess.run(command, cwd=source, check=True)
    with tarfile.open(tmp_path / "plain.tar") as reference:
        expected = {m.name: reference.extractfile(m).read() for m in reference if not m.name.endswith(".txt")}
    with open(tmp_path / "plain.tar", "rb") as stream:
        samples = list(read_tar_samples(stream))
    found = {f"{sample['__key__']}.{field}": data
             for sample in samples for field, data in sample.items() if field != "__key__"}
    assert found == expected and len(samples) == 6
    (x, y), = one_epoch(data(urls=str(tmp_path / "zipped.tar.gz"), labels=True, batch_size=6,
                             batches_per_epoch=1))
    assert sorted(ids_of(x)) == list(range(6)) and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]


# ---- stores: local, HTTP, S3, pipe: ---------------------------------------------------------------------
def test_http_s3_and_pipe_stream_the_same_batches_as_local_disk(id_index, monkeypatch):
    local = one_epoch(data(index=id_index, labels=True, num_workers=2))
    assert len(local) == N // 8
    folder = os.path.dirname(id_index)
    with http_server(folder) as base:
        over_http = one_epoch(data(index=f"{base}/shards.json", labels=True, num_workers=2))
    with s3_server(monkeypatch):
        fsspec.filesystem("s3").mkdir("data")  # the writer writes through fsspec: straight into the bucket
        write_id_shards(folder, 40, out="s3://data/ids")
        over_s3 = one_epoch(data(index="s3://data/ids/shards.json", labels=True, num_workers=2))
    piped = one_epoch(data(urls=f"pipe:cat {folder}/shard-{{000000..000005}}.tar", labels=True,
                           batches_per_epoch=N // 8, num_workers=2))
    for name, batches in {"http": over_http, "s3": over_s3, "pipe": piped}.items():
        assert len(batches) == len(local), name
        for (x, y), (x0, y0) in zip(batches, local, strict=True):
            assert torch.equal(x, x0) and torch.equal(y, y0), name


def test_an_unreachable_or_missing_url_fails_fast_naming_it(id_index, tmp_path, monkeypatch):
    with http_server(str(tmp_path)) as base:
        closed = base  # the port is free once the server is gone
    started = time.perf_counter()
    with pytest.raises(OSError, match=f"{closed}/shards.json: .*unreachable"):
        data(index=f"{closed}/shards.json").setup()
    assert time.perf_counter() - started < 10
    missing = os.path.join(os.path.dirname(id_index), "shard-000009.tar")
    with pytest.raises(FileNotFoundError, match=f"{missing}: no such file"):
        data(urls=[os.path.join(os.path.dirname(id_index), "shard-000000.tar"), missing],
             batches_per_epoch=1).setup()
    with s3_server(monkeypatch):
        with pytest.raises(FileNotFoundError, match="s3://nowhere/shards.json: not found"):
            data(index="s3://nowhere/shards.json").setup()


@pytest.mark.parametrize("kwargs, match", [
    ({"urls": "a.tar", "index": "b.json"}, "exactly one of them"),
    ({}, "exactly one of them"),
    ({"urls": "a.tar", "storage_options": {"secret": "x"}}, "credentials must not be in the config"),
    ({"urls": "a.tar", "storage_options": {"client_kwargs": {"aws_session_token": "x"}}},
     "storage_options.client_kwargs.aws_session_token: credentials must not"),
    ({"urls": "a.tar", "channels": 2}, "data.channels must be 1 or 3"),
    ({"urls": "a.tar", "batch_size": 0}, "data.batch_size must be >= 1"),
])
def test_bad_arguments_are_refused_naming_the_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WebDataModule(**kwargs)


def test_bad_index_files_are_refused_naming_the_file(id_index, tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match=f"bad shard index {tmp_path}/broken.json: .*ganforge shards"):
        data(index=str(tmp_path / "broken.json")).setup()
    unlabelled = write_id_shards(tmp_path / "plain", 40, "--labels-key", "none")
    with pytest.raises(ValueError, match="data.labels is true but .* has no classes"):
        data(index=unlabelled, labels=True).setup()
    with pytest.raises(ValueError, match="data.batches_per_epoch is required"):
        data(urls=os.path.join(os.path.dirname(id_index), "shard-000000.tar")).setup()


def test_every_argument_is_typed_for_the_cli():
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(WebDataModule, "data")
    cfg = parser.parse_args(["--data.urls=s3://b/shard-{000..009}.tar", "--data.channels=1",
                             "--data.labels=true", "--data.batches_per_epoch=100",
                             '--data.storage_options={"anon": true}'])
    assert cfg.data.urls == "s3://b/shard-{000..009}.tar" and cfg.data.channels == 1
    assert cfg.data.labels is True and cfg.data.storage_options == {"anon": True}
    with pytest.raises(Exception, match="channels"):
        parser.parse_args(["--data.urls=a.tar", "--data.channels=2"])


# ---- decoding ---------------------------------------------------------------------------------------------
def test_decode_resizes_with_antialiasing_converts_channels_and_crops():
    stripes = np.zeros((64, 96), np.uint8)
    stripes[:, ::2] = 255  # 1-pixel stripes: point sampling would give all-black or all-white
    small = decode_image(png(stripes), resolution=16, channels=3)
    assert small.shape == (3, 16, 16) and small.dtype == torch.float32
    assert abs(small.mean().item()) < 0.05 and small.std().item() < 0.05  # averaged to mid-grey
    assert small.min() >= -1 and small.max() <= 1
    gradient = np.tile(np.arange(0, 256, 2, dtype=np.uint8), (64, 1))  # 64 x 128, brighter to the right
    center = decode_image(png(gradient), 64, 1, crop="center")
    assert to_uint8(center)[0, 0, 0] == 64  # the middle 64 columns: x from 32
    rng_a, rng_b = random.Random(3), random.Random(3)
    crops = [decode_image(png(gradient), 64, 1, crop="random", hflip=True, rng=rng_a) for _ in range(8)]
    again = [decode_image(png(gradient), 64, 1, crop="random", hflip=True, rng=rng_b) for _ in range(8)]
    assert all(torch.equal(a, b) for a, b in zip(crops, again, strict=True))  # same rng, same views
    starts = {int(to_uint8(c)[0, 0, [0, -1]].min()) // 2 for c in crops}
    assert len(starts) > 1 and all(0 <= s <= 64 for s in starts)  # crops at different offsets
    flipped = [c for c in crops if to_uint8(c)[0, 0, 0] > to_uint8(c)[0, 0, -1]]
    assert 0 < len(flipped) < 8


def test_nothing_in_a_shard_is_ever_unpickled(tmp_path):
    marker = tmp_path / "unpickled"

    class Trap:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with wds.TarWriter(str(tmp_path / "trap.tar")) as sink:
        for i in range(8):
            traps = {field: pickle.dumps(Trap()) for field in ("pyd", "pickle", "pth")}
            sink.write({"__key__": f"{i:03d}", "png": png(id_images(8)[i]), "cls": "1", **traps})
    with open(tmp_path / "trap.tar", "rb") as stream:
        fields = {name for sample in read_tar_samples(stream) for name in sample}
    assert fields == {"__key__", "png", "cls"}  # the rest is not even read
    (x, y), = one_epoch(data(urls=str(tmp_path / "trap.tar"), labels=True, batches_per_epoch=1))
    assert sorted(ids_of(x)) == list(range(8)) and y.tolist() == [1] * 8
    assert not marker.exists()


# ---- ranks, epochs, resume -------------------------------------------------------------------------------
def rank_epochs(index: str, rank: int, world_size: int, epochs: int, monkeypatch, **kwargs) -> list:
    """The sample ids one rank sees in each epoch (2 worker processes)."""
    dm = data(index=index, num_workers=2, **kwargs)
    monkeypatch.setattr(dm, "_rank_and_world_size", lambda: (rank, world_size))
    loader = dm.train_dataloader()
    seen = []
    for _ in range(epochs):
        batches = list(loader)
        assert len(batches) == len(loader)
        seen.append([i for x in batches for i in ids_of(x)])
    return seen


@pytest.mark.parametrize("max_count", [30, 80])  # 8 shards; 3 shards for 2 ranks x 2 workers
def test_ranks_see_disjoint_samples_and_the_same_number_of_batches(tmp_path, monkeypatch, max_count):
    index = write_id_shards(tmp_path, max_count)
    ranks = [rank_epochs(index, rank, 2, 2, monkeypatch, batch_size=10) for rank in range(2)]
    for epoch in range(2):
        a, b = ranks[0][epoch], ranks[1][epoch]
        assert len(a) == len(b) == N // 2  # 12 batches of 10 on each rank
        assert not set(a) & set(b)
        if max_count == 30:  # enough shards: one epoch is one pass over the data
            assert sorted(a + b) == list(range(N))
    assert set(ranks[0][0]) != set(ranks[0][1])  # shards are dealt afresh each epoch
    assert rank_epochs(index, 0, 2, 1, monkeypatch, batch_size=10)[0] == ranks[0][0]  # reproducible


def test_the_data_seed_defaults_to_the_runs_global_seed(id_index, monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")  # what seed_everything(7) exports, on every rank
    assert data(index=id_index).seed == 7 and data(index=id_index, seed=3).seed == 3
    orders = [torch.cat(one_epoch(data(index=id_index, seed=seed))) for seed in (None, 7, 8)]
    assert torch.equal(orders[0], orders[1]) and not torch.equal(orders[0], orders[2])
    monkeypatch.delenv("PL_GLOBAL_SEED")
    assert data(index=id_index).seed == 0


class Recorder(pl.LightningModule):
    """Keeps every batch it trains on."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.batches: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        self.batches.append(batch[0] if isinstance(batch, (list, tuple)) else batch)
        return (self.weight * self.batches[-1].mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def fit(dm: WebDataModule, max_steps: int, root, ckpt_path=None, every: int = 0, **trainer_kwargs):
    model = Recorder()
    callbacks = [ModelCheckpoint(dirpath=root, every_n_train_steps=every, save_top_k=-1)] if every else []
    options = dict(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, enable_checkpointing=bool(every), callbacks=callbacks)
    pl.Trainer(**{**options, **trainer_kwargs}).fit(model, dm, ckpt_path=ckpt_path)
    return model


@pytest.mark.parametrize("stop_at", [13, 37])  # mid-epoch 0 at an odd batch (other worker first); epoch 1
def test_a_resumed_run_trains_on_exactly_the_batches_of_an_uninterrupted_one(id_index, tmp_path, stop_at):
    def make():
        return data(index=id_index, num_workers=2, hflip=True, crop="random")  # 30 batches per epoch

    full = fit(make(), 60, tmp_path, every=stop_at)
    checkpoint = next(tmp_path.glob(f"*step={stop_at}.ckpt"))
    resumed = fit(make(), 60, tmp_path / "resumed", ckpt_path=str(checkpoint))
    assert len(full.batches) == 60 and len(resumed.batches) == 60 - stop_at
    for k, (a, b) in enumerate(zip(full.batches[stop_at:], resumed.batches, strict=True)):
        assert torch.equal(a, b), f"batch {stop_at + k}"


def break_shards(index: str) -> int:
    """Cut shards 1 (inside a header) and 2 (inside a member's data), overwrite shard 5 with noise, and
    make one image of shard 4 garbage; returns the samples lost."""
    folder = os.path.dirname(index)
    readable = 0
    for shard, cut in ((1, 20 * 2048 + 100), (2, 10 * 2048 + 600)):  # a sample: 2 x (header + 1 data block)
        truncated = os.path.join(folder, f"shard-{shard:06d}.tar")
        with open(truncated, "r+b") as f:
            f.truncate(cut)
        with open(truncated, "rb") as stream, pytest.raises(EOFError, match="unexpected end of data"):
            for _ in read_tar_samples(stream):
                readable += 1
    assert readable == 19 + 9  # the sample before a cut may lack members: it is dropped too
    noise = os.path.join(folder, "shard-000005.tar")
    with open(noise, "r+b") as f:
        f.write(np.random.default_rng(0).bytes(4096))
    path = os.path.join(folder, "shard-000004.tar")
    with open(path, "rb") as stream:
        samples = list(read_tar_samples(stream))
    samples[5]["png"] = b"\x89PNG but not really"
    with wds.TarWriter(path) as sink:
        for sample in samples:
            sink.write(sample)
    return 80 - readable + 40 + 1


def test_a_corrupt_shard_is_skipped_counted_and_logged_while_training_goes_on(tmp_path):
    index = write_id_shards(tmp_path / "ids", 40)
    lost = break_shards(index)
    assert lost == 93
    good_batches = (N - lost) // 8
    dm = data(index=index, labels=True, shuffle_buffer=N, batches_per_epoch=good_batches,
              max_bad_fraction=0.7)
    with pytest.warns(RuntimeWarning, match="skipped the rest of shard .*shard-000002.tar"):
        model = fit(dm, good_batches, tmp_path, logger=CSVLogger(tmp_path, name="log"), log_every_n_steps=1)
    assert len(model.batches) == good_batches
    assert dm.data_health() == {"samples_read": N - lost + 1, "skipped_samples": lost, "broken_shards": 3}
    with open(next(tmp_path.glob("log/*/metrics.csv"))) as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["data/skipped_samples"]) == lost and float(rows[-1]["data/broken_shards"]) == 3

    strict = data(index=index, labels=True, shuffle_buffer=N, batches_per_epoch=good_batches)
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="than data.max_bad_fraction=0.01"):
        one_epoch(strict)
