"""Which way is better for the metrics ganforge logs: for the best values of a run's summary (W&B, the end of
a fit) and for `ganforge compare`. Plain data, so that commands that only read runs import nothing heavy."""

from __future__ import annotations

from typing import Literal

Goal = Literal["min", "max"]

METRIC_GOALS: dict[str, Goal] = {
    "fid": "min", "kid": "min", "modes/captured": "max", "modes/high_quality": "max", "modes/reverse_kl": "min",
    "metrics/fid": "min", "metrics/kid": "min", "metrics/fd_indomain": "min", "metrics/class_kl": "min",
    "metrics/class_coverage": "max", "metrics/class_accuracy": "max",
    # Kynkaanniemi et al. (2019); Naeem et al. (2020): more of the data's manifold covered / sampled is better
    "metrics/precision": "max", "metrics/recall": "max", "metrics/density": "max", "metrics/coverage": "max",
}


def goal_of(metric: str) -> Goal | None:
    """"min"/"max" for metrics with a direction (``fid``, ``modes/captured``, also under a prefix)."""
    return METRIC_GOALS.get(metric) or METRIC_GOALS.get(metric.rsplit("/", 1)[-1])
