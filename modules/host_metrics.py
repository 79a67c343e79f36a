"""Step metrics as host (CPU) scalars, fetched from the device in one copy rather than one sync per value."""

from __future__ import annotations

import torch
from torch import Tensor


def host_scalars(metrics: dict[str, Tensor | float]) -> dict[str, Tensor]:
    """The same names with 0-d float32 CPU tensors: device tensors are stacked and copied once (one host sync),
    Python numbers stay on the host."""
    on_device = {name: value for name, value in metrics.items()
                 if isinstance(value, Tensor) and value.device.type != "cpu"}
    scalars = {name: torch.as_tensor(value, dtype=torch.float32).detach().reshape(()) for name, value in metrics.items()
               if name not in on_device}
    if on_device:
        stacked = torch.stack([value.detach().float().reshape(()) for value in on_device.values()]).cpu()
        scalars.update(zip(on_device, stacked.unbind(), strict=True))
    return {name: scalars[name] for name in metrics}
