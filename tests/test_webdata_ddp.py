"""Two real DDP processes (gloo, CPU) x 2 dataloader workers over 3 shards: no hang, equal steps,
disjoint samples per epoch."""

import json
import os
import signal
import subprocess
import sys

import numpy as np

from pipeline.commands import shards as shards_command

N = 240
TRAIN = '''
import json, sys
import pytorch_lightning as pl
import torch
from datamodules.webdataset_datamodule import WebDataModule


class SampleIds(pl.LightningModule):
    """Records which samples each step trained on (their index is spelled by their first two pixels)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen = {}

    def training_step(self, batch, batch_idx):
        images, labels = batch
        pixels = ((images[:, 0, 0, :2] + 1) * 127.5).round().long()
        ids = (pixels[:, 0] * 256 + pixels[:, 1]).tolist()
        assert labels.tolist() == [i % 5 for i in ids]
        self.seen.setdefault(self.current_epoch, []).append(ids)
        return (self.weight * images.mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


index, out = sys.argv[1], sys.argv[2]
model = SampleIds()
data = WebDataModule(index=index, resolution=8, channels=1, labels=True, batch_size=10, num_workers=2,
                     shuffle_buffer=20)
trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
trainer.fit(model, data)
with open(f"{out}/rank{trainer.global_rank}.json", "w") as f:
    json.dump({"seen": model.seen, "global_step": trainer.global_step}, f)
'''


def test_two_ddp_ranks_with_two_workers_over_three_shards(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(N, 8, 8), dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = np.arange(N) // 256, np.arange(N) % 256
    np.savez(tmp_path / "ids.npz", images=images, labels=np.arange(N) % 5)
    shards_command.main(["--source", str(tmp_path / "ids.npz"), "--out", str(tmp_path), "--max-count", "80"])
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    # Its own session, so that a hang kills both ranks and their workers.
    command = [sys.executable, str(script), str(tmp_path / "shards.json"), str(tmp_path)]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        output, _ = job.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        raise AssertionError("DDP run over 3 shards on 2 ranks x 2 workers hung") from None
    assert job.returncode == 0, output[-3000:]

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 2 * 12  # 240 // (2 ranks x 10) per epoch
    for epoch in ("0", "1"):
        batches = [rank["seen"][epoch] for rank in ranks]
        assert [len(b) for b in batches] == [12, 12] and all(len(ids) == 10 for b in batches for ids in b)
        seen = [{i for ids in b for i in ids} for b in batches]
        assert not seen[0] & seen[1], f"epoch {epoch}: ranks shared samples"
    assert ranks[0]["seen"]["0"] != ranks[0]["seen"]["1"]  # a new plan and order each epoch
