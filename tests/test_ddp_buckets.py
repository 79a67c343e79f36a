"""ddp_gan's gradient buckets: grouped by dtype, in parameter order, capped in bytes; and the strategy is
reachable by name from configs and the command line."""

import pytorch_lightning as pl
import torch

import pipeline.commands.cli  # noqa: F401  the CLI's import registers the strategies
from pipeline.strategies.two_player_ddp import TwoPlayerDDPStrategy, buckets


def test_buckets_keep_order_split_at_the_cap_and_never_mix_dtypes():
    a, b, c, d = (torch.zeros(n) for n in (10, 10, 300, 5))  # float32: 40, 40, 1200, 20 bytes
    steps = torch.zeros(3, dtype=torch.int64)
    groups = list(buckets([a, steps, b, c, d], cap_bytes=100))
    assert [[t.numel() for t in g] for g in groups] == [[10, 10], [300], [5], [3]]
    assert groups[0][0] is a and groups[0][1] is b and groups[3][0] is steps


def test_ddp_gan_is_a_registered_strategy():
    trainer = pl.Trainer(strategy="ddp_gan", accelerator="cpu", devices=1, logger=False)
    assert isinstance(trainer.strategy, TwoPlayerDDPStrategy)
