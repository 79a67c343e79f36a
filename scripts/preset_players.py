"""The players and batch of a preset, built from its YAML alone: benchmarks time exactly the nets a preset trains,
without its data, callbacks or logger."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml
from torch import nn

REPO = Path(__file__).resolve().parents[1]


def build(spec: dict[str, Any]) -> Any:
    """An object from a ``{class_path, init_args}`` entry (LightningCLI's form)."""
    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**spec.get("init_args", {}))


def preset_players(preset: str) -> tuple[nn.Module, nn.Module, dict[str, Any], int]:
    """(generator, discriminator, the GAN's other settings, batch size per rank) of ``configs/<preset>.yaml``."""
    path = REPO / "configs" / f"{preset}.yaml"
    if not path.is_file():
        raise ValueError(f"no preset {preset!r}: expected {path}")
    config = yaml.safe_load(path.read_text())
    settings = dict(config["model"]["init_args"])
    generator, discriminator = build(settings.pop("generator")), build(settings.pop("discriminator"))
    loss = settings.pop("loss", None)
    if loss is not None:
        settings["loss"] = build(loss if isinstance(loss, dict) else {"class_path": loss})
    return generator, discriminator, settings, int(config["data"]["init_args"]["batch_size"])
