"""Hyper-parameter schedules over training progress, measured in thousands of real images shown to D (kimg).

A schedule maps kimg to a value; the game (modules.gan.GAN's ``schedules``) evaluates its schedules from
``images_seen`` before every step, so a resumed run continues on the same curve. Progress in images rather
than steps keeps a recipe the same when the batch size or the number of GPUs changes (as StyleGAN2-ADA and
R3GAN state their schedules). R3GAN anneals gamma, the learning rates, Adam's beta2 and the EMA half-life
with cosine ramps.
"""

from __future__ import annotations

import math


class Schedule:
    """A value as a function of kimg (thousands of images seen)."""

    def __call__(self, kimg: float) -> float:
        raise NotImplementedError


class Constant(Schedule):
    """v(kimg) = value."""

    def __init__(self, value: float):
        self.value = float(value)

    def __call__(self, kimg: float) -> float:
        return self.value

    def __repr__(self) -> str:
        return f"Constant({self.value})"


class LinearRamp(Schedule):
    """v(kimg) = start + (end - start) * t,  t = clamp((kimg - start_kimg) / kimg_span, 0, 1).

    ``start`` until ``start_kimg``, then a straight line reaching ``end`` ``kimg`` thousand images later, then ``end``.
    """

    def __init__(self, start: float, end: float, kimg: float, start_kimg: float = 0.0):
        if kimg <= 0:
            raise ValueError(f"{type(self).__name__}: kimg (the ramp's length in thousands of images) must be > 0, "
                             f"got {kimg}")
        self.start, self.end, self.kimg, self.start_kimg = float(start), float(end), float(kimg), float(start_kimg)

    def progress(self, kimg: float) -> float:
        """t in [0, 1]: how far along the ramp ``kimg`` is."""
        return min(1.0, max(0.0, (kimg - self.start_kimg) / self.kimg))

    def ease(self, t: float) -> float:
        """The ramp's shape: the fraction of (end - start) reached at progress t (linear: t)."""
        return t

    def __call__(self, kimg: float) -> float:
        return self.start + (self.end - self.start) * self.ease(self.progress(kimg))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(start={self.start}, end={self.end}, kimg={self.kimg}, "
                f"start_kimg={self.start_kimg})")


class CosineRamp(LinearRamp):
    """v(kimg) = start + (end - start) * (1 - cos(pi * t)) / 2, t as LinearRamp's.

    Flat at both ends: R3GAN's cosine schedule (its ``cosine_decay_with_warmup`` without warm-up).
    """

    def ease(self, t: float) -> float:
        return (1.0 - math.cos(math.pi * t)) / 2.0
