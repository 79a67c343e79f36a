"""Periodic mode-coverage evaluation of a 2-D GAN, with a scatter plot of real vs generated points."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from pytorch_lightning.utilities import rank_zero_only  # noqa: E402

from pipeline.callbacks.periodic import PeriodicCallback, log_image, samples_dir  # noqa: E402
from pipeline.metrics.mode_coverage import ModeCoverage, mode_coverage  # noqa: E402


class ModeCoverageCallback(PeriodicCallback):
    """Every ``every_n_steps`` generator steps (and at the end), score ``num_samples`` EMA samples.

    Needs a datamodule with a ``dist`` (datamodules.mixtures.GaussianMixture). Logs modes/captured,
    modes/high_quality and modes/reverse_kl, and writes ``scatter_<step>.png`` under ``<run dir>/samples``
    (``scatter_<step>_validate.png`` in validate, see PeriodicCallback).
    """

    def __init__(self, every_n_steps: int = 500, num_samples: int = 2500, seed: int = 1234, plot: bool = True):
        super().__init__(every_n_steps)
        self.num_samples, self.seed, self.plot = num_samples, seed, plot
        self.history: list[tuple[int, ModeCoverage]] = []

    def run(self, trainer, pl_module) -> None:
        dist = trainer.datamodule.dist
        samples = pl_module.sample(self.num_samples, seed=self.seed).float().cpu()
        result = mode_coverage(samples, dist.means, dist.std)
        self.history.append((self.evaluated_step(trainer), result))
        self.record(trainer, result.as_dict())
        if self.plot:
            self._plot(trainer, samples, dist, result)

    @rank_zero_only
    def _plot(self, trainer, samples, dist, result: ModeCoverage) -> None:
        real = dist.sample(self.num_samples)[0]
        fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
        ax.scatter(real[:, 0], real[:, 1], s=2, c="tab:blue", alpha=0.4, label="real")
        ax.scatter(samples[:, 0], samples[:, 1], s=2, c="tab:red", alpha=0.4, label="generated")
        ax.set_title(f"step {self.evaluated_step(trainer)}: {result.modes}/{len(dist.means)} modes, "
                     f"{100 * result.high_quality:.0f}% HQ", fontsize=9)
        ax.set_aspect("equal")
        ax.legend(loc="upper right", fontsize=7, markerscale=4)
        path = samples_dir(trainer) / f"{self.file_stem('scatter', trainer)}.png"
        fig.savefig(path, bbox_inches="tight")
        plt.close(fig)
        log_image(trainer, "samples/scatter", path)
