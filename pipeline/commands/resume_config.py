"""Resuming with a different config: what a checkpoint was trained with against what ``ganforge fit`` is given.

Lightning restores a checkpoint into whatever module the config builds, so a config of another model either
fails deep inside ``load_state_dict`` or, where the shapes happen to agree, silently trains the checkpoint's
weights under another run's name. Before any compute the two configs are compared key by key: a different
model (the module class, any network / loss / other component it is built from, spectral norm, the optimizer
type, EMA on or off) or data shape (``resolution``, ``channels``) is refused in one line; everything else (max_steps,
learning rates, logging, callbacks, devices and nodes, batch size, data paths, ...) is a change a user may
make on purpose, listed once in the log and in the run record.

The checkpoint's config is the resolved config that its run recorded (``run_record.config``); checkpoints
written before that have the model's and datamodule's arguments only (their hyper-parameters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import fsspec
import torch

from pipeline.tracking.run_record import CHECKPOINT_KEY

ABSENT = "(absent)"
STRUCTURAL_MODEL_SETTINGS = ("spectral_norm", "optimizer")  # change the parameters or the optimizer state's layout
DATA_SHAPE = ("resolution", "channels")
_NOT_COMPARED = ("ckpt_path", "config")  # where to resume from, and the files the config was read from
_SHOWN = 4  # differences named in the one-line refusal; the rest are counted


@dataclass(frozen=True)
class Change:
    key: str
    saved: Any
    given: Any

    def __str__(self) -> str:
        return f"{self.key}: {_short(self.saved)} -> {_short(self.given)}"


class ResumeMismatchError(ValueError):
    """The config given to a resumed fit builds another model or reads data of another shape."""


def checkpoint_config(path: str) -> dict[str, Any] | None:
    """The resolved config a checkpoint's run recorded (model and data only for older checkpoints); None when
    the checkpoint cannot be read (Lightning reports that itself when it loads it)."""
    fs, local = fsspec.core.url_to_fs(str(path))
    if fs.isdir(local):  # deepspeed_gan writes a directory; the training state is its lightning.pt
        local = f"{local.rstrip('/')}/lightning.pt"
    if not fs.exists(local):
        return None
    try:
        if fs.protocol in ("file", ("file", "local")):
            checkpoint = torch.load(local, map_location="cpu", weights_only=True, mmap=True)
        else:
            with fs.open(local, "rb") as f:
                checkpoint = torch.load(f, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable checkpoint is Lightning's to report, with its own message
        return None
    recorded = (checkpoint.get(CHECKPOINT_KEY) or {}).get("config")
    if recorded is not None:
        return recorded
    config = {}
    for section, key in (("model", "hyper_parameters"), ("data", "datamodule_hyper_parameters")):
        hparams = checkpoint.get(key)
        if hparams and "_class_path" in hparams:
            config[section] = {"class_path": hparams["_class_path"],
                               "init_args": {k: v for k, v in hparams.items() if not k.startswith("_")}}
    return config


def config_changes(saved: dict[str, Any], given: dict[str, Any]) -> tuple[list[Change], list[Change]]:
    """(refused, allowed): the keys whose values differ between a checkpoint's config and the given one, split
    into what builds another model or data shape and what may change on resume. Sections the checkpoint did
    not record (the trainer's, for older checkpoints) are not compared."""
    sections = [name for name in saved if name not in _NOT_COMPARED]
    before, after = _flatten({k: saved[k] for k in sections}), _flatten({k: given.get(k) for k in sections})
    components = _components(saved.get("model")) | _components(given.get("model"))
    refused, allowed = [], []
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key, ABSENT), after.get(key, ABSENT)
        if old != new:
            (refused if _is_structural(key, old, new, components) else allowed).append(Change(key, old, new))
    return refused, allowed


def check_resume(ckpt_path: str, given: dict[str, Any]) -> list[Change]:
    """The allowed changes from the checkpoint's config to ``given``; raises ResumeMismatchError in one line when
    the given config builds another model or data shape."""
    saved = checkpoint_config(ckpt_path)
    if saved is None:
        return []
    refused, allowed = config_changes(saved, given)
    if refused:
        more = f"; and {len(refused) - _SHOWN} more" if len(refused) > _SHOWN else ""
        raise ResumeMismatchError(
            f"--ckpt_path {ckpt_path} was trained with another model or data shape than the config builds "
            f"({'; '.join(str(c) for c in refused[:_SHOWN])}{more} [checkpoint -> config]): resume with the config "
            f"the checkpoint was trained with (its run's config.yaml), or start a new run without --ckpt_path")
    return allowed


def _is_structural(key: str, old: Any, new: Any, components: set[str]) -> bool:
    parts = key.split(".")
    if parts[0] == "model":
        if parts[1:] == ["class_path"]:
            return True
        setting = parts[2] if len(parts) > 2 and parts[1] == "init_args" else None
        if setting in components or setting in STRUCTURAL_MODEL_SETTINGS:
            return True
        return setting == "ema_kimg" and (old is None) != (new is None)  # the EMA copy is there or not
    return parts[0] == "data" and parts[-1] in DATA_SHAPE


def _components(model: Any) -> set[str]:
    """The model's arguments that are objects (networks, loss, ...): given as ``class_path`` dicts."""
    init_args = (model or {}).get("init_args") or {}
    return {name for name, value in init_args.items() if isinstance(value, dict) and "class_path" in value}


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys to leaf values; lists (callbacks) stay whole values; an empty dict is no value."""
    if not isinstance(config, dict):
        return {prefix: config} if prefix else {}
    flat: dict[str, Any] = {}
    for name, value in config.items():
        flat.update(_flatten(value, f"{prefix}.{name}" if prefix else str(name)))
    return flat


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
