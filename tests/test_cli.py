"""The `ganforge` command: resolved config, early config errors, fit -> checkpoint -> sample; help and config
errors without importing torch; one-line errors for bad input, DataLoader workers' included."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml

from pipeline.commands import shards as shards_command
from pipeline.commands.cli import LIGHTNING_SUBCOMMANDS, main, run_cli
from pipeline.commands.config_check import _CLI_KEYS, _SKIPPED, _TRAINER, _method_parameters

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


def test_typo_in_a_key_fails_before_any_compute(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "configs/ring8.yaml", "--model.init_args.n_critc", "3",
              "--trainer.default_root_dir", str(tmp_path)])
    assert exit_info.value.code == ("ganforge fit: error: the command line: model.init_args.n_critc is not an option "
                                    "of modules.gan.GAN; did you mean n_critic?")
    assert not any(tmp_path.iterdir())  # nothing was trained or written


@pytest.mark.parametrize("edit, message", [
    (("max_steps: 2000", "max_step: 2000"),
     "{config}: trainer.max_step is not an option of pytorch_lightning.trainer.trainer.Trainer; did you mean "
     "max_steps?"),
    (("layers: 3, fourier", "layer: 3, fourier"),
     "{config}: model.init_args.discriminator.init_args.layer is not an option of modules.nets.mlp.MLPDiscriminator; "
     "did you mean layers?"),
    (("every_n_train_steps: 500", "every_n_train_step: 500"),
     "{config}: trainer.callbacks.2.init_args.every_n_train_step is not an option of "
     "pytorch_lightning.callbacks.ModelCheckpoint; did you mean every_n_train_steps?"),
])
def test_a_typo_in_a_config_file_names_the_file_the_key_and_the_nearest_option(tmp_path, edit, message):
    config = tmp_path / "typo.yaml"
    config.write_text(open("configs/ring8.yaml").read().replace(*edit))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config)])
    assert exit_info.value.code == "ganforge fit: error: " + message.format(config=config)


@pytest.mark.parametrize("option, message", [
    (("--model.init_args.lr_schedule", "cosine"),
     "model.init_args.lr_schedule: Expected a typing.Literal['constant', 'linear']. Got value: cosine"),
    (("--trainer.max_steps", "many"), "trainer.max_steps: Expected a <class 'int'>. Got value: many"),
    (("--model.init_args.generator.class_path", "modules.nets.mlp.MLPGeneratr"),
     "model.init_args.generator: module 'modules.nets.mlp' has no attribute 'MLPGeneratr'"),
])
def test_a_value_the_parser_refuses_is_one_line_with_its_full_key(capsys, option, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "configs/ring8.yaml", *option])
    assert exit_info.value.code == f"ganforge fit: error: {message}"
    assert "usage:" not in capsys.readouterr().err  # no usage dump


def test_the_key_check_knows_every_top_level_key_of_the_real_parser(capsys):
    for subcommand in LIGHTNING_SUBCOMMANDS:
        with pytest.raises(SystemExit):
            run_cli([subcommand, "--help"])
        options = set(re.findall(r"--(\w+)\b(?![.\w])", capsys.readouterr().out)) - {"help", "print_config"}
        assert options == _CLI_KEYS | (_method_parameters(_TRAINER, subcommand) - _SKIPPED[subcommand]), subcommand


HEAVY = ("torch", "pytorch_lightning", "wandb", "deepspeed", "matplotlib")
PROBE = """
import json, sys
from pipeline.commands.cli import main
answers = []
for args in json.loads(sys.argv[1]):
    try:
        main(args)
    except SystemExit as exit_info:
        answers.append(exit_info.code)
    else:
        answers.append(None)
print(json.dumps({"answers": answers, "heavy": sorted(m for m in sys.argv[2:] if m in sys.modules)}))
"""


def probe(*commands: list[str], env: dict[str, str] | None = None) -> tuple[dict, str]:
    """Run ``ganforge`` commands in a fresh interpreter: their exit answers, which heavy modules got imported."""
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(commands), *HEAVY], capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    return json.loads(lines[-1]), "\n".join(lines[:-1])


def test_help_and_config_errors_answer_without_importing_torch(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text(open("configs/dcgan.yaml").read().replace("batch_size: 64", "batchsize: 64"))
    found, out = probe(["--help"], ["sample", "--help"], ["shards", "--help"], ["launch", "--help"],
                       ["compare", "--help"], ["fit", "--config", str(typo)], ["fti"])
    assert found["heavy"] == []
    assert found["answers"][:5] == [None, 0, 0, 0, 0]
    assert found["answers"][5] == (f"ganforge fit: error: {typo}: data.init_args.batchsize is not an option of "
                                   "datamodules.webdataset_datamodule.WebDataModule; did you mean batch_size?")
    assert found["answers"][6].startswith("ganforge: error: no command 'fti'; the commands are fit, validate")
    assert out.startswith("usage: ganforge COMMAND") and "usage: ganforge sample" in out


def test_fit_help_is_lightnings_own_text_from_a_cache(tmp_path, capsys, monkeypatch):
    env = {"GANFORGE_CACHE": str(tmp_path), "COLUMNS": "100"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit):
        main(["fit", "--help"])  # generated by LightningCLI here, and kept
    generated = capsys.readouterr().out
    assert "--trainer.max_steps MAX_STEPS" in generated and len(list((tmp_path / "help").iterdir())) == 1
    found, out = probe(["fit", "--help"], env={**os.environ, **env})
    assert found == {"answers": [0], "heavy": []} and out + "\n" == generated


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


@pytest.fixture(scope="module")
def digit_shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    shards_command.main(["--source", "sklearn-digits", "--limit", "64", "--max-count", "32", "--resolution", "32",
                         "--out", str(folder)])
    return folder


def fit_digits(index, *args):
    main(["fit", "--config", "configs/dcgan.yaml", "--trainer.callbacks", "[]", "--trainer.max_steps", "2",
          "--trainer.enable_checkpointing", "false", "--trainer.logger", "false", "--data.init_args.index", index,
          *FAST, *args])


def test_a_corrupt_shard_read_by_a_dataloader_worker_is_one_line_naming_it(digit_shards, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "shards.json").write_text((digit_shards / "shards.json").read_text())
    for shard in ("shard-000000.tar", "shard-000001.tar"):
        (broken / shard).write_bytes(b"not a tar file " * 200)
    with pytest.raises(SystemExit) as exit_info:
        fit_digits(str(broken / "shards.json"), "--trainer.default_root_dir", str(tmp_path))
    message = str(exit_info.value.code)
    assert message.startswith("ganforge fit: error: data: ") and "\n" not in message
    assert str(broken / "shard-00000") in message and "(DataLoader worker process 0)" in message


def test_a_missing_index_is_one_line_naming_it_and_the_fix(tmp_path):
    missing = tmp_path / "nope" / "shards.json"
    with pytest.raises(SystemExit) as exit_info:
        fit_digits(str(missing), "--trainer.default_root_dir", str(tmp_path))
    assert exit_info.value.code == (f"ganforge fit: error: {missing}: no such file; check the path, or write it "
                                    "with ganforge shards")
