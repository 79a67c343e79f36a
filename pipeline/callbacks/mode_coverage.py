"""Periodic mode-coverage evaluation of a 2-D GAN, with a scatter plot of real vs generated points."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
from pytorch_lightning.utilities import rank_zero_only  # noqa: E402

from pipeline.metrics.mode_coverage import ModeCoverage, mode_coverage  # noqa: E402


class ModeCoverageCallback(pl.Callback):
    """Every ``every_n_steps`` generator steps (and at the end), score ``num_samples`` EMA samples.

    Needs a datamodule with a ``dist`` (datamodules.mixtures.GaussianMixture). Logs modes/captured,
    modes/high_quality and modes/reverse_kl, and writes ``scatter_<step>.png`` under ``<log dir>/samples``.
    """

    def __init__(self, every_n_steps: int = 500, num_samples: int = 2500, seed: int = 1234, plot: bool = True):
        self.every_n_steps, self.num_samples, self.seed, self.plot = every_n_steps, num_samples, seed, plot
        self.history: list[tuple[int, ModeCoverage]] = []
        self._last_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self._last_step:
            self.evaluate(trainer, pl_module)

    def evaluate(self, trainer, pl_module) -> ModeCoverage:
        dist = trainer.datamodule.dist
        samples = pl_module.sample(self.num_samples, seed=self.seed).float().cpu()
        result = mode_coverage(samples, dist.means, dist.std)
        self._last_step = trainer.global_step
        self.history.append((trainer.global_step, result))
        for logger in trainer.loggers:
            logger.log_metrics(result.as_dict(), step=trainer.global_step)
        if self.plot:
            self._plot(trainer, samples, dist, result)
        return result

    @rank_zero_only
    def _plot(self, trainer, samples, dist, result: ModeCoverage) -> None:
        real = dist.sample(self.num_samples)[0]
        fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
        ax.scatter(real[:, 0], real[:, 1], s=2, c="tab:blue", alpha=0.4, label="real")
        ax.scatter(samples[:, 0], samples[:, 1], s=2, c="tab:red", alpha=0.4, label="generated")
        ax.set_title(f"step {trainer.global_step}: {result.modes}/{len(dist.means)} modes, "
                     f"{100 * result.high_quality:.0f}% HQ", fontsize=9)
        ax.set_aspect("equal")
        ax.legend(loc="upper right", fontsize=7, markerscale=4)
        out = Path(trainer.log_dir or trainer.default_root_dir) / "samples"
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"scatter_{trainer.global_step:07d}.png"
        fig.savefig(path, bbox_inches="tight")
        plt.close(fig)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="samples/scatter", images=[str(path)], step=trainer.global_step)
