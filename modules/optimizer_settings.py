"""A resumed run steps with the optimizer settings its config gives, not the checkpoint's.

Restoring an optimizer's state also restores its param groups (learning rate, betas, ...) and a scheduler's
base learning rates, so a learning rate changed on resume (an allowed change, see pipeline/commands/
resume_config.py) would silently not apply. The settings the freshly configured optimizers and schedulers
hold are taken before the checkpoint is restored and put back after it; the moments, step counts and the
scheduler's position stay the checkpoint's.
"""

from __future__ import annotations

from typing import Any

import torch

_SETTINGS = ("lr", "initial_lr", "betas", "momentum", "alpha", "eps", "weight_decay")


def configured_settings(optimizers: list, schedulers: list) -> dict[str, Any]:
    """The param-group settings of each optimizer and the base learning rates of each scheduler."""
    return {"groups": [[{k: group[k] for k in _SETTINGS if k in group} for group in opt.param_groups]
                       for opt in optimizers],
            "base_lrs": [list(getattr(scheduler, "base_lrs", [])) for scheduler in schedulers]}


def reapply_settings(settings: dict[str, Any], optimizers: list, schedulers: list) -> None:
    """Puts ``configured_settings`` back; a LambdaLR's rate is recomputed at its restored step."""
    for opt, groups in zip(optimizers, settings["groups"], strict=True):
        for group, configured in zip(opt.param_groups, groups, strict=True):
            group.update(configured)
    for scheduler, base_lrs in zip(schedulers, settings["base_lrs"], strict=True):
        if not base_lrs:
            continue
        scheduler.base_lrs = list(base_lrs)
        if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            for group, base, factor in zip(scheduler.optimizer.param_groups, base_lrs, scheduler.lr_lambdas,
                                           strict=True):
                group["lr"] = base * factor(scheduler.last_epoch)
