"""Storage that stalls, resets, answers 5xx or fills up, with real parts: a proxy on 127.0.0.1 that breaks
responses of the static HTTP server and of moto's S3 server on purpose, and a small tmpfs that fills up."""

import os
import re
import shutil
import subprocess
import time
from contextlib import contextmanager

import fsspec
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from fault_proxy import Faults, fault_proxy
from pytorch_lightning.callbacks import ModelCheckpoint
from s3fs import S3FileSystem
from servers import http_server, s3_server
from small_filesystem import small_filesystem
from test_webdata import N, data, ids_of, write_id_shards

from datamodules.atomic_write import PARTIAL_SUFFIX, StorageFullError, StorageWriteError
from datamodules.tar_reader import read_tar_samples
from pipeline.commands.cli import main as ganforge
from pipeline.plugins.atomic_checkpoint_io import AtomicCheckpointIO

CUT = 30_000  # bytes of a 92,160-byte shard sent before a fault
BACKOFF = 0.5  # RetryPolicy's first wait


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    """240 id images in 6 shards of 40; returns their folder."""
    return os.path.dirname(write_id_shards(tmp_path_factory.mktemp("ids"), 40))


def epoch_ids(dm) -> list[int]:
    return [i for x, _ in dm.train_dataloader() for i in ids_of(x)]


def only(name: str):
    return lambda method, path: method == "GET" and path.endswith(name)


def complete_samples(path: str, cut: int) -> int:
    """Samples of a shard that lie wholly in its first ``cut`` bytes (what a reader stopped there has read)."""
    with open(path, "rb") as f:
        head = f.read(cut)
    samples = 0
    with open(path + ".head", "wb") as f:
        f.write(head)
    with open(path + ".head", "rb") as f, pytest.raises(EOFError):
        for _ in read_tar_samples(f):
            samples += 1
    os.remove(path + ".head")
    return samples


# ---- HTTP: stalls, resets and 5xx are retried from the byte where the stream stopped --------------------
@pytest.mark.parametrize("fault, ranges", [("stall", True), ("stall", False), ("reset", True), ("status", True)])
def test_a_faulty_http_read_is_resumed_where_it_stopped_and_no_sample_is_lost(shards, fault, ranges):
    faults = Faults(matches=only("shard-000003.tar"), ranges=ranges, **{
        "stall": {"stall_after": CUT}, "reset": {"reset_after": CUT}, "status": {"status": 503}}[fault])
    local = epoch_ids(data(index=f"{shards}/shards.json", labels=True, shuffle_buffer=0))
    with http_server(shards) as base, fault_proxy(base, faults) as proxy:
        dm = data(index=f"{proxy.url}/shards.json", labels=True, shuffle_buffer=0, read_timeout=1.0)
        with pytest.warns(RuntimeWarning, match=r"shard-000003.tar: .* retry 1/3 in 0.5 s"):
            over_proxy = epoch_ids(dm)
    assert over_proxy == local  # the same samples in the same order: nothing lost, nothing read twice
    assert dm.data_health() == {"samples_read": N, "skipped_samples": 0, "broken_shards": 0,
                                "uncounted_shards": 0, "read_retries": 1}
    first, second = proxy.requests("shard-000003.tar")
    assert first.outcome == fault and second.outcome == "ok"
    # the retry asks for the rest from the byte delivered last (a stall: all CUT bytes sent; a reset: aiohttp
    # drops what it had buffered); without range support the shard is sent whole and those bytes skipped
    resumed_at = int(second.range[6:-1]) if second.range else 0
    assert resumed_at == CUT if fault == "stall" else 0 <= resumed_at <= CUT if fault == "reset" else resumed_at == 0
    if fault == "stall":  # detected after read_timeout (1 s) without a byte, then the first backoff
        detected = second.time - first.stalled_at - BACKOFF
        assert 0.9 < detected < 2.0, detected


def test_a_shard_that_keeps_failing_is_skipped_counted_exactly_and_not_waited_on_again(shards):
    """Two stalls (one retry) give the shard up at byte 2 * CUT: with the index the loss is exact; the epoch
    goes round its shards twice but the broken one is not requested again."""
    broken = "shard-000002.tar"
    read_before_cut = complete_samples(os.path.join(shards, broken), 2 * CUT)
    lost = 40 - read_before_cut
    faults = Faults(matches=only(broken), stall_after=CUT, times=99)
    with http_server(shards) as base, fault_proxy(base, faults) as proxy:
        started = time.monotonic()
        dm = data(index=f"{proxy.url}/shards.json", labels=True, shuffle_buffer=0, read_timeout=1.0,
                  read_retries=1, batches_per_epoch=2 * N // 8, max_bad_fraction=0.5)
        with pytest.warns(RuntimeWarning, match=f"skipped the rest of shard .*{broken} after {read_before_cut} "
                                                f"samples \\({lost} samples lost\\): ShardReadError: .* stalled at "
                                                f"byte {2 * CUT}, gave up after 1 retries"):
            ids = epoch_ids(dm)
        took = time.monotonic() - started
    assert len(ids) == 2 * N
    health = dm.data_health()
    assert health == {"samples_read": health["samples_read"], "skipped_samples": lost, "broken_shards": 1,
                      "uncounted_shards": 0, "read_retries": 1}
    assert health["samples_read"] >= 2 * N and len(proxy.requests(broken)) == 2  # not read in the second round
    assert took < 2 * 1.0 + BACKOFF + 5, took  # two stalls of read_timeout, one backoff, then no more waiting


def test_without_an_index_the_samples_lost_are_said_to_be_unknown(shards):
    read_before_cut = complete_samples(os.path.join(shards, "shard-000001.tar"), CUT)
    faults = Faults(matches=only("shard-000001.tar"), stall_after=CUT, times=99)
    with http_server(shards) as base, fault_proxy(base, faults) as proxy:
        dm = data(urls=f"{proxy.url}/shard-{{000000..000005}}.tar", batches_per_epoch=(N - 40) // 8,
                  read_timeout=1.0, read_retries=0, max_bad_fraction=0.5)
        with pytest.warns(RuntimeWarning, match=f"shard-000001.tar after {read_before_cut} samples \\(an unknown "
                                                "number of samples lost: no data.index gives its count\\)"):
            ids = [i for x in dm.train_dataloader() for i in ids_of(x)]
    assert len(ids) == len(set(ids)) == N - 40
    # not "1 sample lost" (as before) nor a guess: the count says what is known, the shard says it is partial
    assert dm.data_health() == {"samples_read": dm.data_health()["samples_read"], "skipped_samples": 0,
                                "broken_shards": 1, "uncounted_shards": 1, "read_retries": 0}
    assert len(proxy.requests("shard-000001.tar")) == 1


@contextmanager
def s3_bucket(name: str, endpoint: str, monkeypatch):
    """A bucket, removed at the end (moto keeps its buckets in this process, beyond its server's life)."""
    fsspec.filesystem("s3").mkdir(name)
    try:
        yield
    finally:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        S3FileSystem.clear_instance_cache()
        fsspec.filesystem("s3").rm(name, recursive=True)


# ---- S3: transient 5xx answers and stalls are retried the same way ---------------------------------------
def test_transient_s3_errors_and_stalls_are_retried_with_backoff_and_counted(shards, monkeypatch):
    local = epoch_ids(data(index=f"{shards}/shards.json", labels=True, shuffle_buffer=0))
    shard_4 = set(epoch_ids(data(urls=f"{shards}/shard-000004.tar", labels=True, batches_per_epoch=5)))
    cases = [(3, {"status": 503, "times": 2}, {"skipped_samples": 0, "broken_shards": 0, "read_retries": 2}),
             (0, {"status": 503, "times": 2}, {"skipped_samples": 40, "broken_shards": 1, "read_retries": 0}),
             (3, {"stall_after": CUT}, {"skipped_samples": 0, "broken_shards": 0, "read_retries": 1})]
    with s3_server(monkeypatch) as endpoint, s3_bucket("faults", endpoint, monkeypatch):
        write_id_shards(os.path.dirname(shards) + "/s3-src", 40, out="s3://faults/ids")
        for retries, fault, expected in cases:
            with fault_proxy(endpoint, Faults(matches=only("shard-000004.tar"), **fault)) as proxy:
                monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
                S3FileSystem.clear_instance_cache()
                dm = data(index="s3://faults/ids/shards.json", labels=True, shuffle_buffer=0, read_timeout=1.0,
                          read_retries=retries, max_bad_fraction=0.5)
                with pytest.warns(RuntimeWarning, match="shard-000004.tar"):
                    ids = epoch_ids(dm)
            health = dm.data_health()
            assert {k: health[k] for k in expected} == expected, fault
            gets = proxy.requests("shard-000004.tar")
            if not retries:  # the shard is skipped and counted after one request; the epoch is made up elsewhere
                assert len(gets) == 1 and len(ids) == N and not set(ids) & shard_4
                continue
            assert ids == local, fault  # every sample, in order
            if "status" in fault:  # two 503s, then the read: botocore's own retries are off, so the waits are ours
                assert [g.outcome for g in gets] == ["status", "status", "ok"]
                assert BACKOFF * 0.9 < gets[1].time - gets[0].time < BACKOFF + 1.0
                assert 2 * BACKOFF * 0.9 < gets[2].time - gets[1].time < 2 * BACKOFF + 1.0
            else:  # one stall, detected after read_timeout, not after s3fs's own retries (5 x read_timeout)
                assert [g.outcome for g in gets] == ["stall", "ok"]
                assert 0.9 < gets[1].time - gets[0].stalled_at - BACKOFF < 2.0


# ---- a full disk: checkpoints and shards ----------------------------------------------------------------
@contextmanager
def small_disk(folder, size_kib: int, options: str = ""):
    try:
        with small_filesystem(folder, size_kib, options) as mount:
            yield mount
    except OSError as err:
        if "cannot mount" not in str(err):
            raise
        pytest.skip(str(err))


class Wide(pl.LightningModule):
    """A linear map with Adam: a checkpoint of ~400 KB."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(160, 160)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).square().mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class FillDisk(pl.Callback):
    """Another tenant fills the disk right before the checkpoint of step ``at``, leaving ``leave`` bytes."""

    def __init__(self, folder: str, at: int, leave: int = 4096):
        self.folder, self.at, self.leave = folder, at, leave
        self.weights_before: dict[int, torch.Tensor] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.weights_before[trainer.global_step] = pl_module.layer.weight.detach().clone()
        if trainer.global_step == self.at:
            with open(os.path.join(self.folder, "filler"), "wb") as f:
                f.write(b"\0" * (shutil.disk_usage(self.folder).free - self.leave))


def train(folder, max_steps: int, callbacks=(), ckpt_path=None) -> pl.Trainer:
    batches = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 160)), batch_size=8)
    trainer = pl.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, plugins=[AtomicCheckpointIO()], callbacks=[
                             *callbacks, ModelCheckpoint(dirpath=folder, every_n_train_steps=1, save_last=True)])
    trainer.fit(Wide(), batches, ckpt_path=ckpt_path)
    return trainer


def test_a_full_disk_stops_the_run_naming_the_checkpoint_and_keeps_last_ckpt_loadable(tmp_path):
    with small_disk(tmp_path, 1536) as disk:
        fill = FillDisk(disk, at=3)
        with pytest.raises(StorageFullError) as raised:
            train(disk, 6, [fill])
        message = str(raised.value)
        assert "\n" not in message
        assert message.startswith(f"{disk}/epoch=0-step=3.ckpt: not written, no space left: it needs ")
        needed, free = raised.value.needed, raised.value.free
        assert 300_000 < needed < 600_000 and free < 4096 + 4096  # the tmpfs counts whole pages
        assert f"it needs {needed:,} bytes and {disk} has {free:,} bytes free" in message
        # the step before is intact, last.ckpt still holds it, and nothing else a resume could pick is there
        assert sorted(os.listdir(disk)) == ["epoch=0-step=2.ckpt", "filler", "last.ckpt"]
        last = torch.load(os.path.join(disk, "last.ckpt"), weights_only=False)
        assert last["global_step"] == 2
        assert torch.equal(last["state_dict"]["layer.weight"], fill.weights_before[2])
        os.remove(os.path.join(disk, "filler"))  # space again: the run resumes from last.ckpt
        resumed = train(disk, 6, ckpt_path=os.path.join(disk, "last.ckpt"))
        assert resumed.global_step == 6
        assert torch.load(os.path.join(disk, "last.ckpt"), weights_only=False)["global_step"] == 6
        assert not [name for name in os.listdir(disk) if name.endswith(PARTIAL_SUFFIX)]


def test_the_fit_command_writes_checkpoints_atomically():
    from pipeline.commands.cli import run_cli

    cli = run_cli(["--config", "configs/ring8.yaml", "--trainer.logger=false"], run=False)
    assert type(cli.trainer.strategy.checkpoint_io) is AtomicCheckpointIO


def test_a_store_that_refuses_the_write_is_named_in_one_line_and_the_old_checkpoint_stays(tmp_path):
    with small_disk(tmp_path, 256) as disk:
        last = os.path.join(disk, "last.ckpt")
        AtomicCheckpointIO().save_checkpoint({"global_step": 1}, last)
        subprocess.run(["mount", "-o", "remount,ro", disk], check=True)  # the store turns read-only
        with pytest.raises(StorageWriteError) as raised:
            AtomicCheckpointIO().save_checkpoint({"global_step": 2}, last)
        assert str(raised.value) == (f"{last}: not written, the store refused it (Read-only file system); the "
                                     "previous checkpoints are untouched; free space there, or point the "
                                     "checkpoints elsewhere (ModelCheckpoint dirpath), then resume from last.ckpt")
        assert os.listdir(disk) == ["last.ckpt"] and torch.load(last)["global_step"] == 1


def test_a_full_disk_while_writing_shards_names_the_shard_and_leaves_only_complete_ones(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(100, 64, 64), dtype=np.uint8)  # ~12 KB as PNG
    np.savez(tmp_path / "noise.npz", images=images, labels=np.zeros(100, dtype=np.int64))
    with small_disk(tmp_path, 256) as disk:
        with pytest.raises(SystemExit) as raised:
            ganforge(["shards", "--source", str(tmp_path / "noise.npz"), "--out", disk, "--max-count", "3"])
        names = sorted(os.listdir(disk))
        shard = f"{disk}/shard-{len(names):06d}.tar"
        message = str(raised.value)
        assert message.startswith(f"ganforge shards: error: {shard}: not written, no space left: it needs at "
                                  "least ") and "\n" not in message
        needed, free = (int(number.replace(",", "")) for number in re.findall(r"([\d,]+) bytes", message))
        assert needed > free and free < 12 * 4096
        assert names == [f"shard-{k:06d}.tar" for k in range(len(names))] and len(names) >= 3  # no index, no partial
        for name in names:  # every shard there is complete
            with open(os.path.join(disk, name), "rb") as f:
                assert len(list(read_tar_samples(f))) == 3
