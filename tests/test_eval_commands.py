"""`ganforge validate / test / predict` on trained checkpoints: validate repeats the end-of-fit evaluation
exactly, D's held-out metrics follow the loss formulas, fit still never validates by default, and predicted
sample i is the same whatever the batch it was made in."""

import json
import math
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from datamodules.sample_indices import sample_index_loader
from modules.bigan import BiGAN
from modules.gan import GAN
from modules.icgan import IcGAN
from modules.losses import NonSaturatingLoss, RelativisticPairingLoss, WassersteinLoss
from modules.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from pipeline.callbacks.image_metrics import ImageMetricsCallback
from pipeline.callbacks.mode_coverage import ModeCoverageCallback
from pipeline.callbacks.prediction_writer import PredictionWriter
from pipeline.commands import shards as shards_command
from pipeline.commands.cli import main, run_cli
from pipeline.metrics.feature_net import FeatureNet, save_feature_net

STEPS = 200
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false"]
EVAL = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny nets on a shared 2-core machine run fastest without intra-op threads (module scope: the trained
    run is made on one thread too)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ring8_args(root, steps: int) -> list[str]:
    """configs/gan.yaml on ring8, mode coverage at the end only, one checkpoint at the last step."""
    callbacks = [{"class_path": "pipeline.callbacks.mode_coverage.ModeCoverageCallback",
                  "init_args": {"every_n_steps": 0, "plot": False}},
                 {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": str(root / "checkpoints"), "every_n_train_steps": steps}}]
    return ["--config", "configs/gan.yaml", "--trainer.max_steps", str(steps), "--trainer.default_root_dir",
            str(root), "--trainer.callbacks", json.dumps(callbacks), *QUIET]


def fit_ring8(root, steps: int) -> SimpleNamespace:
    args = ring8_args(root, steps)
    cli = run_cli(["fit", *args])
    return SimpleNamespace(args=args, ckpt=str(next((root / "checkpoints").glob("*.ckpt"))),
                           history=coverage(cli).history)


def coverage(cli) -> ModeCoverageCallback:
    return next(c for c in cli.trainer.callbacks if isinstance(c, ModeCoverageCallback))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return fit_ring8(tmp_path_factory.mktemp("trained"), STEPS)


def test_validate_and_test_repeat_the_end_of_fit_evaluation_exactly(trained):
    val = run_cli(["validate", *trained.args, "--ckpt_path", trained.ckpt])
    test = run_cli(["test", *trained.args, "--ckpt_path", trained.ckpt])
    again = run_cli(["validate", *trained.args, "--ckpt_path", trained.ckpt])

    assert trained.history[-1][0] == STEPS
    for cli in (val, test):  # same weights, same seed: the same numbers, at the checkpoint's step
        assert coverage(cli).history == trained.history[-1:]
        metrics = cli.trainer.callback_metrics  # what Lightning printed and returned
        assert metrics["modes/captured"] == trained.history[-1][1].modes
    v, t = val.trainer.callback_metrics, test.trainer.callback_metrics
    assert torch.isfinite(v["val/loss_d"]) and 0 < v["val/D(x)"] < 1 and 0 < v["val/D(G(z))"] < 1
    assert v["val/loss_d"] != t["test/loss_d"]  # validate and test hold out different points
    assert torch.equal(again.trainer.callback_metrics["val/loss_d"], v["val/loss_d"])  # reproducible


def test_a_trained_checkpoint_validates_better_than_an_untrained_one(trained, tmp_path):
    barely = fit_ring8(tmp_path, steps=1)
    before = coverage(run_cli(["validate", *barely.args, "--ckpt_path", barely.ckpt])).history[-1][1]
    after = coverage(run_cli(["validate", *trained.args, "--ckpt_path", trained.ckpt])).history[-1][1]
    assert before.modes <= 2 and after.modes >= 6
    assert after.high_quality > before.high_quality and after.reverse_kl < before.reverse_kl


def test_validate_on_digits_repeats_the_image_metrics_of_the_fit(tmp_path):
    """BiGAN (pairs for D, reconstructions in the grid) on shards: the reference set is the evaluation set."""
    shards_command.main(["--source", "sklearn-digits", "--resolution", "32", "--out", str(tmp_path / "digits")])
    torch.manual_seed(0)
    save_feature_net(FeatureNet(resolution=32, channels=1, num_classes=10, width=8), str(tmp_path / "net.pt"))
    callbacks = [{"class_path": "pipeline.callbacks.sample_grid.SampleGridCallback", "init_args": {"every_n_steps": 0}},
                 {"class_path": "pipeline.callbacks.image_metrics.ImageMetricsCallback",
                  "init_args": {"feature_net": str(tmp_path / "net.pt"), "every_n_steps": 0, "num_samples": 200,
                                "cache_dir": str(tmp_path / "cache")}},
                 {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": str(tmp_path / "checkpoints"), "every_n_train_steps": 5}}]
    args = ["--config", "configs/bigan.yaml", "--trainer.max_steps", "5", "--trainer.default_root_dir", str(tmp_path),
            "--trainer.callbacks", json.dumps(callbacks), *QUIET, "--data.init_args.index",
            str(tmp_path / "digits" / "shards.json"), "--data.init_args.num_workers", "0",
            "--data.init_args.eval_samples", "128", *[f"--model.init_args.{net}.init_args.base_width=8"
                                                      for net in ("generator", "discriminator", "encoder")]]
    fit = run_cli(["fit", *args])
    val = run_cli(["validate", *args, "--ckpt_path", str(tmp_path / "checkpoints" / "epoch=0-step=5.ckpt")])

    def history(cli):
        return next(c for c in cli.trainer.callbacks if isinstance(c, ImageMetricsCallback)).evaluations

    assert history(val) == history(fit)[-1:] and history(val)[0][0] == 5
    metrics = val.trainer.callback_metrics
    assert metrics["metrics/fd_indomain"] == pytest.approx(history(fit)[-1][1]["metrics/fd_indomain"])
    assert torch.isfinite(metrics["val/loss_d"])
    assert {p.name for p in (tmp_path / "samples").iterdir()} == {"grid_0000005.png", "grid_0000005_validate.png"}


@pytest.mark.parametrize(("extra", "expected_calls"), [([], 0), (["--trainer.limit_val_batches", "2"], 2 * 3)],
                         ids=["default", "asked"])
def test_fit_validates_only_when_asked(tmp_path, monkeypatch, extra, expected_calls):
    calls = []
    step = GAN.validation_step
    monkeypatch.setattr(GAN, "validation_step", lambda self, *a: calls.append(1) or step(self, *a))
    # 1-batch epochs: Lightning would validate after every one of the 3
    run_cli(["fit", *ring8_args(tmp_path, 3), "--data.init_args.batches_per_epoch", "1", *extra])
    assert len(calls) == expected_calls


class Constant(nn.Module):
    """G(z) = c whatever z (and y)."""

    latent_dim = 2

    def __init__(self, c: list[float]):
        super().__init__()
        self.register_buffer("c", torch.tensor(c))

    def forward(self, z, y=None):
        return self.c.expand(len(z), -1)


class FirstCoordinate(nn.Module):
    """D(x) = x[:, 0] as the raw score."""

    def forward(self, x, y=None):
        return x[:, 0]


def test_held_out_metrics_follow_the_loss_formulas():
    x = torch.randn(12, 2, generator=torch.Generator().manual_seed(0))
    data = DataLoader(TensorDataset(x), batch_size=4)  # equal batches: the mean of batch means is the mean
    c = 0.7
    gan = GAN(Constant([c, 0.0]), FirstCoordinate(), loss=NonSaturatingLoss())
    m = pl.Trainer(**EVAL).validate(gan, data, verbose=False)[0]
    assert m["val/loss_d"] == pytest.approx(float(F.softplus(-x[:, 0]).mean() + F.softplus(torch.tensor(c))))
    assert m["val/D(x)"] == pytest.approx(float(torch.sigmoid(x[:, 0]).mean()))
    assert m["val/D(G(z))"] == pytest.approx(float(torch.sigmoid(torch.tensor(c))))

    wgan = GAN(Constant([c, 0.0]), FirstCoordinate(), loss=WassersteinLoss())
    m = pl.Trainer(**EVAL).test(wgan, data, verbose=False)[0]
    assert m["test/critic_gap"] == pytest.approx(float(x[:, 0].mean()) - c)
    assert m["test/loss_d"] == pytest.approx(-m["test/critic_gap"])

    rpgan = GAN(Constant([c, 0.0]), FirstCoordinate(), loss=RelativisticPairingLoss())
    m = pl.Trainer(**EVAL).validate(rpgan, data, verbose=False)[0]
    assert m["val/loss_d"] == pytest.approx(float(F.softplus(-(x[:, 0] - c)).mean()))  # each real paired with a fake
    assert m["val/critic_gap"] == pytest.approx(float(x[:, 0].mean()) - c)


class Identity(nn.Module):
    latent_dim = 2

    def forward(self, x, y=None):
        return x


class PairGap(nn.Module):
    """D(x, z) = x[:, 0] - z[:, 0]: zero on exactly the pairs BiGAN's D must see, (x, E(x)) and (G(z), z)."""

    def forward(self, x, z, y=None):
        return x[:, 0] - z[:, 0]


def test_bigan_validation_scores_its_pairs():
    bigan = BiGAN(Identity(), PairGap(), Identity())  # G(z) = z and E(x) = x
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0)) * 3
    m = pl.Trainer(**EVAL).validate(bigan, DataLoader(TensorDataset(x), batch_size=4), verbose=False)[0]
    assert m["val/D(x)"] == m["val/D(G(z))"] == pytest.approx(0.5)
    assert m["val/loss_d"] == pytest.approx(2 * math.log(2))


class Slice(nn.Module):
    def __init__(self, start: int, stop: int, scale: float = 1.0):
        super().__init__()
        self.start, self.stop, self.scale = start, stop, scale

    def forward(self, x):
        return x[:, self.start:self.stop] * self.scale


class Tagged(nn.Module):
    """G(z, y) = [z, one_hot(y)]: z and y can be read back exactly."""

    latent_dim = 2

    def forward(self, z, y):
        return torch.cat([z, F.one_hot(y, 3).to(z)], dim=1)


def test_icgan_validates_its_encoders_on_fresh_draws():
    icgan = IcGAN(Tagged(), Slice(0, 2), Slice(2, 5, scale=30.0), num_classes=3)  # exact inverses of G
    data = DataLoader(TensorDataset(torch.zeros(16, 5)), batch_size=8)
    m = pl.Trainer(**EVAL).validate(icgan, data, verbose=False)[0]
    assert m["val/loss_e_z"] == 0.0 and m["val/acc_e_y"] == 1.0
    assert m["val/loss_e_y"] == pytest.approx(float(F.cross_entropy(torch.tensor([[30.0, 0, 0]]), torch.tensor([0]))))


def predicted(folder) -> dict[str, torch.Tensor]:
    batches = [torch.load(f) for f in sorted(folder.glob("*.pt"))]
    index = torch.cat([b["index"] for b in batches])
    order = index.argsort()
    return {key: torch.cat([b[key] for b in batches])[order] for key in ("index", "samples")}


def test_predicted_samples_depend_on_their_index_only(trained, tmp_path):
    runs = {}
    for batch_size in (8, 5):
        out = tmp_path / str(batch_size)
        run_cli(["predict", *trained.args, "--ckpt_path", trained.ckpt, "--data.init_args.predict_samples", "13",
                 "--data.init_args.batch_size", str(batch_size), "--trainer.default_root_dir", str(out)])
        assert len(list((out / "predictions").glob("*.pt"))) == -(-13 // batch_size)  # the default writer
        runs[batch_size] = predicted(out / "predictions")
    assert torch.equal(runs[8]["index"], torch.arange(13))
    # the same z_i; the generator's matrix products round differently for other batch sizes, by ~1e-7
    assert runs[8]["samples"].shape == (13, 2)
    torch.testing.assert_close(runs[8]["samples"], runs[5]["samples"], rtol=0, atol=1e-6)
    assert not torch.equal(runs[8]["samples"][0], runs[8]["samples"][1])


def test_conditional_predictions_cycle_through_the_classes_and_write_images(tmp_path):
    torch.manual_seed(0)
    small = {"resolution": 8, "channels": 1, "base_width": 8, "num_classes": 3}
    gan = GAN(DCGANGenerator(latent_dim=4, **small), DCGANDiscriminator(**small), noise_seed=1)
    writers = {size: PredictionWriter(str(tmp_path / str(size))) for size in (4, 3)}
    for size, writer in writers.items():
        pl.Trainer(**EVAL, callbacks=[writer]).predict(gan, sample_index_loader(7, size), return_predictions=False)
    first = torch.load(tmp_path / "4" / "batch_r0_000000.pt")
    assert first["labels"].tolist() == [0, 1, 2, 0] and first["samples"].shape == (4, 1, 8, 8)
    assert sorted(p.name for p in (tmp_path / "3").glob("*.png")) == [f"{i:08d}.png" for i in range(7)]
    a, b = predicted(tmp_path / "4"), predicted(tmp_path / "3")
    torch.testing.assert_close(a["samples"], b["samples"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("command", ["validate", "test", "predict"])
def test_evaluating_without_a_checkpoint_is_one_clear_line(command, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main([command, *ring8_args(tmp_path, 1)])
    message = str(exit_info.value.code)
    assert message.startswith(f"ganforge {command}: error: pass --ckpt_path") and "\n" not in message
    assert not any(tmp_path.iterdir())  # nothing was built or written
