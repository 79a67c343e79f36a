"""ADA as one slot of the game: the pipeline of modules.augment.ada driven by the p of its controller."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from modules.augment.ada import ADAPipeline, ranges_of
from modules.augment.ada_controller import AdaController


class AdaptiveAugment(nn.Module):
    """Adaptive discriminator augmentation (Karras et al., 2020): ``(x, generator) -> x`` like DiffAugment,
    applied to everything D sees, with a probability p that ``observe`` steers from D's scores of reals.

    p is a buffer of ``controller`` (in the GAN's state_dict and checkpoint); ``augment.p = value`` sets it
    (a schedule of fixed p). See modules.augment.ada for the transforms and modules.augment.ada_controller
    for the update.

    Args:
        preset: the transforms on, as NVlabs' --augpipe: "bgc" (blit, geometric, colour; the paper's choice),
            "bgcfnc" (also filter, noise, cutout), "blit", "geom", "color", "bg", "bgcf", "bgcfn", ...
        p: the initial probability (ADA starts at 0).
        adaptive: steer p from r_t = E[sign(D(x_real))]; False keeps p fixed (r_t is still measured).
        target, ada_kimg, interval: the controller's r_t target, adjustment speed (thousands of images for
            p to move by 1) and D steps between updates.
        multipliers: per-transform probability multipliers over the preset's, e.g. {"rotate90": 0}.
        ranges: the transforms' parameter ranges over the paper's, e.g. {"xint_max": 0.25} (names: ADARanges).
    """

    def __init__(self, preset: str = "bgc", p: float = 0.0, adaptive: bool = True, target: float = 0.6,
                 ada_kimg: float = 500.0, interval: int = 4, multipliers: dict[str, float] | None = None,
                 ranges: dict[str, float] | None = None):
        super().__init__()
        self.pipeline = ADAPipeline(preset, multipliers, ranges_of(ranges))
        self.controller = AdaController(p, target, ada_kimg, interval, adaptive)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.pipeline(x, self.controller.p, generator)

    @property
    def p(self) -> float:
        return float(self.controller.p)

    @p.setter
    def p(self, value: float) -> None:
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"augment.p must be in [0, 1], got {value}")
        self.controller.p.fill_(float(value))

    def observe(self, real_scores: Tensor, batch_images: int) -> None:
        """After each D step: D's raw scores of the (augmented) reals, and the images of the global batch."""
        self.controller.observe(real_scores, batch_images)

    def metrics(self) -> dict[str, Tensor]:
        """p, the last r_t, and the share of images each transform group touched in the last call."""
        rates = {f"augment/rate_{group}": share for group, share in self.pipeline.last_rates.items()}
        return {"augment/p": self.controller.p.clone(), "augment/rt": self.controller.rt.clone(), **rates}

    def extra_repr(self) -> str:
        return repr(self.pipeline)
