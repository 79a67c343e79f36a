"""The sweep template launches `ganforge fit` with options the CLI takes, and optimises a summary key that
GanForgeWandbLogger writes."""

from pathlib import Path

import pytest
import yaml

from pipeline.commands.cli import main
from pipeline.tracking.wandb_logger import METRIC_GOALS

SWEEP = Path(__file__).parents[1] / "configs" / "sweep_lr_ncritic.yaml"


def test_sweep_command_parses_with_the_agents_arguments(capsys):
    sweep = yaml.safe_load(SWEEP.read_text())
    assert sweep["command"][:3] == ["${env}", "${program}", "fit"] and sweep["program"] == "ganforge"
    trial = {name: spec["values"][-1] for name, spec in sweep["parameters"].items()}
    args = [f"--{name}={value}" for name, value in trial.items()]  # how the agent expands ${args}
    command = [arg for part in sweep["command"][3:] for arg in (args if part == "${args}" else [part])]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *command, "--print_config"])
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["init_args"]["lr_g"] == trial["model.init_args.lr_g"] == 1e-3
    assert config["model"]["init_args"]["n_critic"] == 5
    assert config["trainer"]["logger"]["class_path"] == "pipeline.tracking.wandb_logger.GanForgeWandbLogger"
    assert config["trainer"]["logger"]["init_args"]["group"] == "sweep-lr-ncritic"
    assert config["trainer"]["logger"]["init_args"]["project"] == sweep["project"]


def test_sweep_metric_is_a_best_value_in_the_run_summary():
    metric = yaml.safe_load(SWEEP.read_text())["metric"]
    name = metric["name"].removeprefix("best/")
    assert metric["name"].startswith("best/") and {"max": "maximize", "min": "minimize"}[METRIC_GOALS[name]] == (
        metric["goal"])
