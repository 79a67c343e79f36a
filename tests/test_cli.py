"""The `ganforge` command: resolved config, early config errors, fit -> checkpoint -> sample."""

import pytest
import torch
import yaml

from pipeline.commands.cli import main

FAST = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def test_print_config_shows_the_resolved_config(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "configs/ring8.yaml", "--model.init_args.n_critic", "3", "--print_config"])
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["init_args"]["n_critic"] == 3
    assert config["model"]["init_args"]["generator"]["class_path"] == "modules.nets.mlp.MLPGenerator"
    assert config["data"]["init_args"]["name"] == "ring8"
    assert config["trainer"]["max_steps"] == 2000


def test_typo_in_a_key_fails_before_any_compute(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "configs/ring8.yaml", "--model.init_args.n_critc", "3",
              "--trainer.default_root_dir", str(tmp_path)])
    assert exit_info.value.code != 0
    assert "n_critc" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was trained or written


def test_fit_then_sample_from_the_checkpoint(tmp_path, capsys):
    main(["fit", "--config", "configs/ring8.yaml", "--trainer.max_steps", "30",
          "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path),
          *FAST])
    ckpt = next(tmp_path.rglob("last.ckpt"))
    out = tmp_path / "s.pt"
    main(["sample", "--ckpt", str(ckpt), "--num", "100", "--out", str(out), "--seed", "1"])
    samples = torch.load(out)
    assert samples.shape == (100, 2) and torch.isfinite(samples).all()
    again = tmp_path / "again.pt"
    main(["sample", "--ckpt", str(ckpt), "--num", "100", "--out", str(again), "--seed", "1"])
    assert torch.equal(samples, torch.load(again))  # the seed fixes the latent codes
    main(["sample", "--ckpt", str(ckpt), "--num", "100", "--out", str(tmp_path / "s.png")])
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_sample_with_a_missing_checkpoint_is_one_clear_line(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--ckpt", str(tmp_path / "nope.ckpt")])
    message = str(exit_info.value.code)
    assert message.startswith("ganforge sample: error: checkpoint") and "nope.ckpt" in message
    assert "\n" not in message
