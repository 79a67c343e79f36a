"""Non-finite steps: a NaN/Inf loss or gradient norm skips the player's step (weights and optimizer state
bit-identical), is counted and logged; too many in a row, or non-finite weights, stop the run with one line,
and no checkpoint ever holds a non-finite state."""

import copy
import math

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from datamodules.mixture_datamodule import MixtureDataModule
from modules.gan import GAN
from modules.nets.mlp import MLPDiscriminator, MLPGenerator
from modules.step_health import NonFiniteTrainingError, StepHealth, nonfinite_entries
from pipeline.commands.cli import main


class PoisonedGAN(GAN):
    """D's scores are NaN on the D steps in ``nan_d``; G's scores on the generator steps in ``nan_g``."""

    def __init__(self, *args, nan_d=(), nan_g=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.nan_d, self.nan_g = set(nan_d), set(nan_g)

    def discriminator_step(self, opt, real, labels):
        poisoned = self.d_steps in self.nan_d
        return super().discriminator_step(opt, real * math.nan if poisoned else real, labels)

    def critic(self, x, labels, aug_tag):
        scores = super().critic(x, labels, aug_tag)
        return scores * math.nan if aug_tag == "aug_g" and self.global_step in self.nan_g else scores


class Snapshots(pl.Callback):
    """Each player's weights and optimizer state before every batch."""

    def __init__(self):
        self.before: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        opt_g, opt_d = trainer.optimizers
        self.before.append({"d": copy.deepcopy(pl_module.discriminator.state_dict()),
                            "g": copy.deepcopy(pl_module.generator.state_dict()),
                            "opt_d": copy.deepcopy(opt_d.state_dict()), "opt_g": copy.deepcopy(opt_g.state_dict())})


class PoisonWeight(pl.Callback):
    """Writes Inf into one D weight after generator step ``at`` (a diverged update that had finite gradients)."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at:
            with torch.no_grad():
                next(pl_module.discriminator.parameters()).view(-1)[0] = math.inf


def make_gan(**kwargs) -> GAN:
    torch.manual_seed(0)
    return PoisonedGAN(MLPGenerator(latent_dim=2, hidden=16, layers=2), MLPDiscriminator(hidden=16, layers=2),
                       noise_seed=1, ema_kimg=None, **kwargs)


def fit(model, tmp_path, max_steps, callbacks=(), save_every=0):
    checkpoints = [ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=save_every, save_last=True,
                                   save_top_k=-1)] if save_every else []
    trainer = pl.Trainer(accelerator="cpu", max_steps=max_steps, limit_val_batches=0, num_sanity_val_steps=0,
                         logger=False, log_every_n_steps=1, enable_checkpointing=bool(save_every),
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[*callbacks, *checkpoints])
    trainer.fit(model, MixtureDataModule(batch_size=16, batches_per_epoch=50, seed=2))
    return trainer


def same_optimizer_state(a, b) -> bool:
    return all(torch.equal(a["state"][i][k], b["state"][i][k]) if torch.is_tensor(a["state"][i][k])
               else a["state"][i][k] == b["state"][i][k] for i in a["state"] for k in a["state"][i]) \
        and a["state"].keys() == b["state"].keys()


def test_nan_storm_skips_exactly_those_steps_and_leaves_weights_and_optimizer_state_bit_identical(tmp_path):
    snapshots = Snapshots()
    model = make_gan(nan_d={3, 4, 5}, nan_g={6})
    with pytest.warns(UserWarning, match="skipped the discriminator's step at generator step 3") as warned:
        trainer = fit(model, tmp_path, max_steps=10, callbacks=[snapshots])
    assert sum("skipped the discriminator" in str(w.message) for w in warned) == 1  # warned once per player
    assert model.step_health.skipped == {"d": 3, "g": 1}
    assert trainer.logged_metrics["health/skipped_steps_d"] == 3.0
    assert trainer.logged_metrics["health/skipped_steps_g"] == 1.0
    before = snapshots.before
    for step in range(9):  # batch `step` holds D step `step` and generator step `step` (n_critic 1)
        d_kept = all(torch.equal(t, before[step + 1]["d"][k]) for k, t in before[step]["d"].items())
        g_kept = all(torch.equal(t, before[step + 1]["g"][k]) for k, t in before[step]["g"].items())
        assert d_kept == (step in {3, 4, 5}), step
        assert same_optimizer_state(before[step]["opt_d"], before[step + 1]["opt_d"]) == (step in {3, 4, 5}), step
        assert g_kept == (step == 6), step
        assert same_optimizer_state(before[step]["opt_g"], before[step + 1]["opt_g"]) == (step == 6), step
    assert before[6]["opt_d"]["state"][0]["step"] == 3  # Adam's step counter did not count the skipped steps
    assert trainer.global_step == 10 and all(torch.isfinite(p).all() for p in model.parameters())


def test_consecutive_skips_stop_with_one_line_and_last_checkpoint_stays_finite(tmp_path):
    model = make_gan(nan_d=set(range(4, 100)), max_skipped_steps=5)
    with pytest.raises(NonFiniteTrainingError) as stopped:
        fit(model, tmp_path, max_steps=50, save_every=1)
    message = str(stopped.value)
    assert "\n" not in message
    assert "the discriminator at generator step 8 (discriminator step 8): 5 consecutive steps" in message
    assert "learning rate" in message and "precision" in message and "r1_gamma" in message
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert last["global_step"] == 8 and nonfinite_entries(last) == []
    assert last["ganforge"]["step_health"] == {"skipped": {"g": 0, "d": 4}, "consecutive": {"g": 0, "d": 4}}
    fresh = make_gan()
    fresh.load_state_dict(last["state_dict"])  # loadable, and the weights are those of the last finite step
    step4 = torch.load(tmp_path / "epoch=0-step=4.ckpt", weights_only=True)
    assert all(torch.equal(t, step4["state_dict"][k]) for k, t in last["state_dict"].items() if "discriminator" in k)


def test_nonfinite_weights_are_never_saved(tmp_path):
    with pytest.raises(NonFiniteTrainingError, match=r"refusing to save a checkpoint at generator step 3: NaN/Inf "
                                                     r"in discriminator\.net\.0\.weight"):
        fit(make_gan(), tmp_path, max_steps=10, callbacks=[PoisonWeight(at=3)], save_every=1)
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 and nonfinite_entries(last) == []
    assert not (tmp_path / "epoch=0-step=3.ckpt").exists()


def test_nonfinite_weights_stop_at_the_next_step_without_checkpointing(tmp_path):
    with pytest.raises(NonFiniteTrainingError, match=r"the discriminator at generator step 3 \(discriminator step 3"
                                                     r"\): its weights are NaN/Inf"):
        fit(make_gan(), tmp_path, max_steps=10, callbacks=[PoisonWeight(at=3)])


def test_a_diverging_learning_rate_stops_the_run_through_the_cli_in_one_line(tmp_path):
    """The issue's run: ring8 with a learning rate far too high goes to Inf gradient norms; it must stop."""
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", "configs/ring8.yaml", "--model.init_args.lr_d", "1e30", "--model.init_args.lr_g",
              "1e30", "--model.init_args.max_skipped_steps", "3", "--trainer.max_steps", "200",
              "--data.init_args.batch_size", "64", "--trainer.default_root_dir", str(tmp_path),
              "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.callbacks+=ModelCheckpoint",
              "--trainer.callbacks.dirpath", str(tmp_path / "ckpt"), "--trainer.callbacks.every_n_train_steps", "1",
              "--trainer.callbacks.save_last", "true", "--trainer.enable_progress_bar", "false"])
    message = str(stopped.value.code)
    assert message.startswith("ganforge fit: error: training diverged") and "\n" not in message
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert nonfinite_entries(last) == [] and last["global_step"] < 200


def test_max_skipped_steps_must_be_positive():
    with pytest.raises(ValueError, match="model.max_skipped_steps must be >= 1"):
        StepHealth(0)


def test_16_mixed_gradscaler_skips_are_counted_as_skipped_steps(tmp_path):
    """GradScaler's own inf check still skips (and halves its scale) on every overflowing step; each such step
    is counted, and the weights stay as they were."""
    from pytorch_lightning.plugins.precision import MixedPrecision

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40, growth_interval=10_000)
    model = make_gan(max_skipped_steps=100)
    snapshots = Snapshots()
    trainer = pl.Trainer(accelerator="cpu", max_steps=30, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                         plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)], enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[snapshots])
    trainer.fit(model, MixtureDataModule(batch_size=16, batches_per_epoch=50, seed=2))
    skipped = model.step_health.skipped
    assert skipped["d"] > 0 and skipped["g"] > 0  # the first steps overflow at a scale of 2^40
    assert skipped["d"] + skipped["g"] == 40 - math.log2(scaler.get_scale())  # one halving per skipped step
    first = snapshots.before[0]
    assert all(torch.equal(t, snapshots.before[1]["d"][k]) for k, t in first["d"].items())  # step 0 was skipped
    assert all(torch.isfinite(p).all() for p in model.parameters())
