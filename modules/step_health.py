"""Step health: a player's step whose loss or gradient norm is NaN/Inf is skipped, counted, and, when the skips
do not stop or the weights themselves go non-finite, the run stops before a checkpoint can hold that state.

Skipping means the optimizer does not see the step at all: the gradients are dropped (``grad = None``), and
PyTorch's optimizers leave a parameter without a gradient untouched, weights and state alike (Adam's step
count, moments). Under 16-mixed the GradScaler has unscaled the gradients already and skips the step by its
own inf check (then lowers the scale); the same check here counts that step as skipped. One rule decides for
every rank: the non-finite flags are summed over ranks before anyone reads them, so a rank whose own loss
alone is NaN makes every rank skip (gradients are all-reduced and agree, per-rank losses do not).

Cost: the decision is Python control flow, so each player step reads one flag from the device (one host sync;
under DDP after one 1-element all-reduce). That is what GradScaler already costs per step with a non-fused
optimizer; on a GPU it drains the launch queue once per player step (the CPU cannot run ahead of the GPU
across steps), which matters for small networks with millisecond steps and not for large ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor

PLAYERS = {"g": "generator", "d": "discriminator"}
LIKELY_CAUSES = ("likely causes: a learning rate too high (model.lr_g / model.lr_d), 16-bit precision overflowing "
                 "(trainer.precision; try bf16-mixed or 32-true), or a regularizer weight too large "
                 "(model.r1_gamma / model.gp_weight)")


class NonFiniteTrainingError(RuntimeError):
    """Training diverged: the run stops, and the checkpoints on disk keep the last finite state."""


class StepHealth:
    """Per-player counts of skipped steps and the stop rule.

    Args:
        max_consecutive: consecutive skipped steps of one player after which the run stops.
    """

    def __init__(self, max_consecutive: int = 50):
        if max_consecutive < 1:
            raise ValueError(f"model.max_skipped_steps must be >= 1, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.skipped = dict.fromkeys(PLAYERS, 0)
        self.consecutive = dict.fromkeys(PLAYERS, 0)
        self._loss_bad: Tensor | None = None
        self._warned: set[str] = set()

    def note_loss(self, loss: Tensor) -> None:
        """Remembers, on the device, whether the loss about to be backpropagated is finite."""
        self._loss_bad = ~torch.isfinite(loss.detach()).all()

    def should_skip(self, grad_norm: Tensor, reduce_sum: Callable[[Tensor], Tensor]) -> bool:
        """Whether this step's loss (see ``note_loss``) or ``grad_norm`` is non-finite on any rank (one sync)."""
        bad = ~torch.isfinite(grad_norm)
        if self._loss_bad is not None:
            bad = bad | self._loss_bad.to(bad.device)
        self._loss_bad = None
        return reduce_sum(bad.to(torch.int32)).item() > 0

    def record(self, player: str, skipped: bool, step: str, weights: Iterable[Tensor] = ()) -> None:
        """Counts a step of ``player`` ("g" or "d"); on a skip warns once and raises NonFiniteTrainingError
        when the player's ``weights`` are non-finite or it skipped ``max_consecutive`` steps in a row.
        ``step`` says where the run is, for the messages."""
        if not skipped:
            self.consecutive[player] = 0
            return
        self.skipped[player] += 1
        self.consecutive[player] += 1
        name = PLAYERS[player]
        if player not in self._warned:
            self._warned.add(player)
            rank_zero_warn(f"ganforge: skipped the {name}'s step at {step}: its loss or gradient norm is NaN/Inf "
                           f"(the weights and optimizer state stay as they were; counted in "
                           f"health/skipped_steps_{player}; warned once)")
        bad_weights = not all_finite(weights)
        if bad_weights or self.consecutive[player] >= self.max_consecutive:
            what = ("its weights are NaN/Inf" if bad_weights else
                    f"{self.consecutive[player]} consecutive steps had a NaN/Inf loss or gradient norm "
                    f"(model.max_skipped_steps={self.max_consecutive})")
            raise NonFiniteTrainingError(f"training diverged: the {name} at {step}: {what}; stopped without "
                                         f"saving, the last checkpoint on disk is finite; {LIKELY_CAUSES}")

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": dict(self.skipped), "consecutive": dict(self.consecutive)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.skipped.update(state.get("skipped", {}))
        self.consecutive.update(state.get("consecutive", {}))


def all_finite(tensors: Iterable[Tensor]) -> bool:
    """True when every floating-point tensor holds only finite values."""
    return not nonfinite_names((str(i), t) for i, t in enumerate(tensors))


def nonfinite_names(named: Iterable[tuple[str, Tensor]]) -> list[str]:
    """The names whose floating-point tensor holds a NaN/Inf (one device-to-host copy per device)."""
    flags: dict[torch.device, list[tuple[str, Tensor]]] = {}
    for name, tensor in named:
        if torch.is_tensor(tensor) and torch.is_floating_point(tensor):
            flags.setdefault(tensor.device, []).append((name, torch.isfinite(tensor.detach()).all()))
    bad = []
    for entries in flags.values():
        finite = torch.stack([flag for _, flag in entries]).tolist()
        bad += [name for (name, _), ok in zip(entries, finite, strict=True) if not ok]
    return bad


def refuse_nonfinite_checkpoint(checkpoint: Mapping[str, Any], where: str,
                                reduce_sum: Callable[[Tensor], Tensor] | None = None) -> None:
    """Raises NonFiniteTrainingError when a checkpoint dict about to be written holds NaN/Inf, so that a diverged
    state never replaces the files on disk (``last`` included). With ``reduce_sum`` (the strategy's reduce, run
    by every rank of the save) every rank takes the same decision."""
    bad = nonfinite_entries(checkpoint)
    count = torch.tensor(len(bad), dtype=torch.int32)
    if reduce_sum is not None:
        count = reduce_sum(count)
    if count.item() > 0:
        what = f"{bad[0]}{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}" if bad else "another rank's state"
        raise NonFiniteTrainingError(f"training diverged: refusing to save a checkpoint at {where}: NaN/Inf in "
                                     f"{what}; the last checkpoint on disk is finite; {LIKELY_CAUSES}")


def nonfinite_entries(checkpoint: Mapping[str, Any]) -> list[str]:
    """Names of the state_dict entries and optimizer states of a Lightning checkpoint dict that hold NaN/Inf.

    The guard that keeps a diverged state out of the checkpoint files: the module's ``on_save_checkpoint`` runs
    it on every save, and a checkpoint writer (CheckpointIO) may run it on the dict it is handed.
    """
    named = list(checkpoint.get("state_dict", {}).items())
    for i, optimizer in enumerate(checkpoint.get("optimizer_states", [])):
        for param_id, state in optimizer.get("state", {}).items():
            named += [(f"optimizer_states[{i}][{param_id}].{key}", value) for key, value in state.items()]
    return nonfinite_names(named)
