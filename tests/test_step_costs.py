"""What a training step spends besides the game: the EMA update in fused kernels, metrics only on logging steps,
and logged values fetched to the host in one copy."""

import inspect

import pytorch_lightning as pl
import torch
from torch import nn

from datamodules.mixture_datamodule import MixtureDataModule
from modules.ema import make_ema_copy, update_ema
from modules.gan import GAN
from modules.host_metrics import host_scalars
from modules.nets.mlp import MLPDiscriminator, MLPGenerator


def test_update_ema_is_the_running_average_of_parameters_and_copies_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = make_ema_copy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model(torch.randn(8, 3))  # moves the running statistics and num_batches_tracked
    expected = [0.9 * e + 0.1 * p for e, p in zip(ema.parameters(), model.parameters(), strict=True)]
    update_ema(ema, model, beta=0.9)
    for got, want in zip(ema.parameters(), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-7)
    for got, want in zip(ema.buffers(), model.buffers(), strict=True):
        assert torch.equal(got, want)
    assert ema.state_dict()["1.num_batches_tracked"].item() == 1


def test_host_scalars_keeps_names_order_and_values():
    metrics = {"loss/d": torch.tensor(1.5, dtype=torch.float64), "kimg": 0.256, "D(x)": torch.tensor([0.25])}
    out = host_scalars(metrics)
    assert list(out) == ["loss/d", "kimg", "D(x)"]
    assert [v.item() for v in out.values()] == [1.5, torch.tensor(0.256).item(), 0.25]
    assert all(v.device.type == "cpu" and v.dtype == torch.float32 and v.dim() == 0 for v in out.values())


class ScoreMetricsProbe(pl.Callback):
    """Records, per batch, whether the module computed its score metrics (mean D(x), D(G(z)))."""

    def __init__(self):
        self.computed = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.computed.append(bool(pl_module._score_metrics(torch.zeros(2), torch.zeros(2))))


def test_score_metrics_are_computed_only_on_logging_steps_and_logged_from_the_host():
    torch.manual_seed(0)
    model = GAN(MLPGenerator(latent_dim=2, hidden=8, layers=2), MLPDiscriminator(hidden=8, layers=2))
    probe = ScoreMetricsProbe()
    trainer = pl.Trainer(accelerator="cpu", max_steps=6, log_every_n_steps=3, logger=False, callbacks=[probe],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, MixtureDataModule(batch_size=8, batches_per_epoch=50))
    assert probe.computed == [False, False, True, False, False, True]
    logged = trainer.callback_metrics
    assert {"loss/d", "loss/g", "D(x)", "D(G(z))", "kimg"} <= set(logged)
    assert logged["kimg"].item() == torch.tensor(6 * 8 / 1000).item()


def test_lightning_reads_the_precomputed_training_step_signature():
    from pytorch_lightning.utilities.signature_utils import is_param_in_hook_signature

    model = GAN(MLPGenerator(latent_dim=2, hidden=8, layers=2), MLPDiscriminator(hidden=8, layers=2))
    assert list(inspect.signature(model.training_step).parameters) == ["batch", "batch_idx"]
    assert is_param_in_hook_signature(model.training_step, "batch_idx", min_args=2)
    assert inspect.signature(GAN.training_step) is GAN.training_step.__signature__
