"""A real offline W&B run (no mock) made by `ganforge fit`, read back from its .wandb file with wandb's own
reader: the resolved config and run record, the metric series, an image, the summary; no secret anywhere."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import wandb
import yaml
from PIL import Image

from datamodules.mixture_datamodule import MixtureDataModule
from pipeline.commands.cli import main
from pipeline.tracking.redact import REDACTED
from pipeline.tracking.run_reader import read_local_runs

BATCH = 64
STEPS = 40
CHECKPOINTS = """
    - class_path: pytorch_lightning.callbacks.ModelCheckpoint
      init_args: {every_n_train_steps: 20, save_last: true}
"""
EVALUATION = """
    - class_path: pipeline.callbacks.mode_coverage.ModeCoverageCallback
      init_args: {every_n_steps: 20, num_samples: 500}
"""
SECRETS = {"WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567",
           "AWS_SECRET_ACCESS_KEY": "env-aws-secret-93f1c"}
CONFIG_SECRETS = {"key": "AKIACONFIGKEY77", "secret": "cfg-secret-5521x"}


class MixtureWithCredentials(MixtureDataModule):
    """Stands in for a datamodule that reads object storage with credentials (they are hyper-parameters)."""

    def __init__(self, name: str = "ring8", batch_size: int = 256, batches_per_epoch: int = 500, seed: int = 0,
                 storage_options: dict[str, str] | None = None):
        super().__init__(name, batch_size, batches_per_epoch, seed)


def fit_args(root: Path, *args: str, steps: int = STEPS, evaluate: bool = True) -> list[str]:
    """ring8 tracked with configs/wandb.yaml, short, checkpointed (and evaluated) every 20 generator steps."""
    overlay = root / "callbacks.yaml"
    overlay.parent.mkdir(parents=True, exist_ok=True)
    overlay.write_text("trainer:\n  callbacks:" + CHECKPOINTS + (EVALUATION if evaluate else ""))
    return ["fit", "--config", "configs/ring8.yaml", "--config", str(overlay), "--config", "configs/wandb.yaml",
            "--trainer.max_steps", str(steps), "--trainer.log_every_n_steps", "10",
            "--trainer.default_root_dir", str(root), "--trainer.logger.init_args.save_dir", str(root),
            "--data.init_args.batch_size", str(BATCH), "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", *args]


def fit_ring8(monkeypatch, root: Path, *args: str, steps: int = STEPS) -> None:
    """`ganforge fit ...` in this process, with sys.argv as the command would have it (W&B records it)."""
    argv = fit_args(root, *args, steps=steps)
    monkeypatch.setattr(sys, "argv", ["ganforge", *argv])
    main(argv)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One run with secrets in the environment, on the command line and in the config; W&B mode left to
    ganforge (an API key is set, but the W&B host cannot be reached from the test machine)."""
    root = tmp_path_factory.mktemp("wandb_run")
    args = ["--data.class_path", "test_wandb_run.MixtureWithCredentials",
            "--data.init_args.storage_options", json.dumps(CONFIG_SECRETS),
            "--trainer.logger.init_args.group", "ring8-test", "--trainer.logger.init_args.tags", "[test]",
            "--trainer.logger.init_args.notes", f"pulled with {SECRETS['AWS_SECRET_ACCESS_KEY']}",
            "--model.init_args.n_critic", "1"]
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("WANDB_MODE", raising=False)
        mp.setenv("WANDB_BASE_URL", "https://api.wandb.invalid")  # unreachable by construction
        for name, value in SECRETS.items():
            mp.setenv(name, value)
        for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            mp.setenv(name, str(root / "wandb_home"))
        capture = root / "stderr.txt"
        with capture.open("w") as stderr:
            mp.setattr(sys, "stderr", stderr)
            fit_ring8(mp, root, *args)
        print_config = fit_args(root, *args) + ["--print_config"]
        wandb.teardown()  # W&B keeps the first run's settings (host, key) for the process: not for later tests
    (run,) = read_local_runs(root / "wandb")
    return {"root": root, "run": run, "stderr": capture.read_text(), "print_config": print_config}


def test_offline_is_chosen_with_one_line_and_the_run_id_names_the_folders(recorded):
    root, run = recorded["root"], recorded["run"]
    lines = [line for line in recorded["stderr"].splitlines() if line.startswith("ganforge: W&B is offline")]
    assert len(lines) == 1 and "api.wandb.invalid is unreachable" in lines[0]
    (folder,) = (root / "wandb").glob(f"offline-run-*-{run.id}")
    assert (folder / f"run-{run.id}.wandb").is_file() and f"wandb sync {folder}" in lines[0]
    ckpt = torch.load(root / "ganforge" / run.id / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["run_record"]["wandb"]["run_id"] == run.id
    assert (run.group, run.state, run.config["trainer"]["logger"]["init_args"]["tags"]) == (
        "ring8-test", "finished", ["test"])


def test_config_is_the_resolved_config_with_secrets_redacted(recorded, capsys):
    with pytest.raises(SystemExit):
        main(recorded["print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    printed["data"]["init_args"]["storage_options"] = {"key": REDACTED, "secret": REDACTED}
    printed["trainer"]["logger"]["init_args"]["notes"] = f"pulled with {REDACTED}"
    logged = {key: value for key, value in recorded["run"].config.items() if key != "run"}
    assert logged == printed
    assert logged["model"]["init_args"]["lr_g"] == 1e-3 and logged["trainer"]["max_steps"] == STEPS
    files = Path(recorded["run"].source) / "files"
    assert yaml.safe_load((files / "ganforge-config.yaml").read_text()) == printed


def test_run_record(recorded):
    record = recorded["run"].config["run"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert record["git"]["commit"] == head and isinstance(record["git"]["dirty"], bool)
    assert record["packages"]["wandb"] == wandb.__version__ and record["packages"]["torch"] == torch.__version__
    assert record["distributed"] == {"world_size": 1, "num_nodes": 1, "devices": 1, "accelerator": "CPUAccelerator",
                                     "strategy": "SingleDeviceStrategy", "precision": "32-true"}
    assert record["command"][:2] == ["ganforge", "fit"] and "slurm" not in record


def test_metric_series(recorded):
    history = recorded["run"].history
    train = [row for row in history if "loss/d" in row]
    steps = [row["trainer/global_step"] for row in train]
    assert steps == [9, 19, 29, 39]  # every 10th batch, one generator step each (n_critic 1)
    assert [row["kimg"] for row in train] == pytest.approx([(s + 1) * BATCH / 1000 for s in steps])
    for row in train:
        assert {"loss/g", "D(x)", "D(G(z))", "gradnorm/d", "gradnorm/g", "lr/g", "perf/images_per_s"} <= row.keys()
        assert 0 < row["D(x)"] < 1 and 0 < row["D(G(z))"] < 1
        assert row["lr/g"] == pytest.approx(1e-3 * (1 - row["trainer/global_step"] / STEPS))
        assert row["perf/images_per_s"] > 0
    evaluations = [row for row in history if "modes/captured" in row]
    # generator steps 20 and 40 are the batches 19 and 39: evaluations share the rows of the module's metrics
    assert [row["trainer/global_step"] for row in evaluations] == [19, 39]
    assert all(0 <= row["modes/captured"] <= 8 for row in evaluations)


def test_scatter_image(recorded):
    run = recorded["run"]
    rows = [row for row in run.history if row.get("samples/scatter._type") == "images/separated"]
    assert len(rows) == 2  # one per evaluation
    image = Path(run.source) / "files" / rows[-1]["samples/scatter.filenames"][0]
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(image) as png:
        assert png.size == (rows[-1]["samples/scatter.width"], rows[-1]["samples/scatter.height"])


def test_summary(recorded):
    run = recorded["run"]
    captured = [(row["modes/captured"], row["trainer/global_step"]) for row in run.history if "modes/captured" in row]
    best = max(value for value, _ in captured)
    assert run.summary["best/modes/captured"] == best
    assert run.summary["best_step/modes/captured"] == next(step for value, step in captured if value == best)
    assert run.summary["run/final_kimg"] == pytest.approx(STEPS * BATCH / 1000)
    assert 0 < run.summary["run/wall_time_s"] < 600


def test_no_secret_in_any_run_file(recorded):
    """Every file of the W&B run, the checkpoints (artifacts when log_model is on) and the saved config."""
    root = recorded["root"]
    files = [path for folder in ("wandb", "ganforge") for path in (root / folder).rglob("*") if path.is_file()]
    files.append(root / "config.yaml")
    assert len(files) > 5 and any(path.suffix == ".ckpt" for path in files)
    for secret in [*SECRETS.values(), *CONFIG_SECRETS.values()]:
        leaks = [str(path) for path in files if secret.encode() in path.read_bytes()]
        assert not leaks, f"{secret} found in {leaks}"
