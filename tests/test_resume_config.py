"""Resuming with a different config, through the real `ganforge fit`: another model or data shape is refused
before any compute in one line; changes a user may make on purpose are allowed, logged once and recorded."""

import logging
import shutil

import pytest
import torch
import yaml

from pipeline.commands.cli import main
from pipeline.commands.resume_config import config_changes

TINY = ["--config", "configs/ring8.yaml", "--model.init_args.generator.init_args.hidden", "16",
        "--model.init_args.discriminator.init_args.hidden", "16",
        "--model.init_args.discriminator.init_args.fourier_features", "8", "--data.init_args.batch_size", "32",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def fit(run_dir, *extra):
    main(["fit", *TINY, "--trainer.default_root_dir", str(run_dir), "--trainer.logger.init_args.save_dir",
          str(run_dir), *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("trained")
    fit(run_dir, "--trainer.max_steps", "4")
    return next(run_dir.rglob("last.ckpt"))


def refusal(run_dir, *extra) -> str:
    with pytest.raises(SystemExit) as refused:
        fit(run_dir, *extra)
    return str(refused.value.code)


def test_another_network_width_is_refused_before_any_compute(trained, tmp_path):
    message = refusal(tmp_path, "--trainer.max_steps", "8", "--model.init_args.generator.init_args.hidden", "32",
                      "--ckpt_path", str(trained))
    assert message.startswith(f"ganforge fit: error: --ckpt_path {trained} was trained with another model")
    assert "model.init_args.generator.init_args.hidden: 16 -> 32" in message and "\n" not in message
    assert "resume with the config the checkpoint was trained with" in message and "start a new run" in message
    assert "max_steps" not in message  # an allowed change is not a reason
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("metrics.csv"))  # nothing ran


def test_another_loss_and_another_network_class_are_both_named(trained, tmp_path):
    message = refusal(tmp_path, "--model.init_args.loss", "modules.losses.HingeLoss",
                      "--model.init_args.spectral_norm", "true", "--ckpt_path", str(trained))
    assert "model.init_args.loss.class_path: modules.losses.NonSaturatingLoss -> modules.losses.HingeLoss" in message
    assert "model.init_args.spectral_norm: False -> True" in message


def test_allowed_changes_resume_and_are_logged_once_and_recorded(trained, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        fit(tmp_path, "--trainer.max_steps", "6", "--model.init_args.lr_d", "5e-4", "--ckpt_path", str(trained))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ganforge: resuming")]
    assert len(lines) == 1
    assert "trainer.max_steps: 4 -> 6" in lines[0] and "model.init_args.lr_d: 0.001 -> 0.0005" in lines[0]
    last = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=True)
    assert last["global_step"] == 6  # resumed at 4, trained to 6
    assert last["lr_schedulers"][1]["base_lrs"] == [0.0005]  # the resumed run stepped D with the new rate
    assert last["lr_schedulers"][0]["base_lrs"] == [0.001]
    changes = last["run_record"]["resumed_with_changes"]
    assert changes["trainer.max_steps"] == [4, 6] and changes["model.init_args.lr_d"] == [0.001, 0.0005]
    hparams = yaml.safe_load(next(tmp_path.rglob("hparams.yaml")).read_text())
    assert hparams["run"]["resumed_with_changes"]["trainer.max_steps"] == [4, 6]  # in the logged run record


def test_a_checkpoint_without_a_recorded_config_is_compared_on_its_hyperparameters(trained, tmp_path):
    old = torch.load(trained, weights_only=True)
    del old["run_record"]["config"]  # as written before runs recorded their config
    torch.save(old, tmp_path / "old.ckpt")
    message = refusal(tmp_path / "run", "--model.init_args.discriminator.init_args.hidden", "8",
                      "--ckpt_path", str(tmp_path / "old.ckpt"))
    assert "model.init_args.discriminator.init_args.hidden: 16 -> 8" in message


def test_slurm_auto_resume_from_an_hpc_checkpoint_goes_through_the_same_check(trained, tmp_path, monkeypatch):
    for name, value in {"SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_NAME": "fit",
                        "SLURM_JOB_ID": "7", "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
                        "SLURM_NODELIST": "localhost"}.items():
        monkeypatch.setenv(name, value)
    tmp_path.mkdir(exist_ok=True)
    shutil.copyfile(trained, tmp_path / "hpc_ckpt_1.ckpt")  # what a requeued job finds in its root dir
    message = refusal(tmp_path, "--model.init_args.generator.init_args.layers", "3")
    assert f"--ckpt_path {tmp_path / 'hpc_ckpt_1.ckpt'} was trained with another model" in message
    assert "model.init_args.generator.init_args.layers: 4 -> 3" in message


def test_the_issues_example_sngan_config_on_a_dcgan_checkpoint_is_refused(capsys):
    """configs/sngan_hinge_resnet.yaml against the config configs/dcgan.yaml records (as resolved by the CLI)."""
    def resolved(preset):
        with pytest.raises(SystemExit):
            main(["fit", "--config", preset, "--print_config"])
        return yaml.safe_load(capsys.readouterr().out)

    refused, allowed = config_changes(resolved("configs/dcgan.yaml"), resolved("configs/sngan_hinge_resnet.yaml"))
    refused_keys = {change.key for change in refused}
    assert {"model.init_args.generator.class_path", "model.init_args.discriminator.class_path",
            "model.init_args.loss.class_path", "model.init_args.spectral_norm"} <= refused_keys
    assert not any(key.startswith("trainer.") for key in refused_keys)
    assert "trainer.default_root_dir" in {change.key for change in allowed}
    dcgan = resolved("configs/dcgan.yaml")
    sharper = {**dcgan, "data": {**dcgan["data"], "init_args": {**dcgan["data"]["init_args"], "resolution": 64,
                                                                 "batch_size": 32}}}
    refused, allowed = config_changes(dcgan, sharper)
    assert [str(change) for change in refused] == ["data.init_args.resolution: 32 -> 64"]  # another data shape
    assert [str(change) for change in allowed] == ["data.init_args.batch_size: 64 -> 32"]
