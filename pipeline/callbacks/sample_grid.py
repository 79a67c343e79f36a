"""A grid of samples from fixed latent codes every N generator steps, so runs show progress comparably."""

from __future__ import annotations

import torch
from pytorch_lightning.utilities import rank_zero_only

from pipeline.callbacks.periodic import PeriodicCallback, log_image, samples_dir
from pipeline.image_grid import save_grid


class SampleGridCallback(PeriodicCallback):
    """Writes ``grid_<step>.png`` (``grid_<step>_validate.png`` in validate) under ``<run dir>/samples`` and logs
    it as ``samples/grid``.

    Conditional generators (``num_classes`` > 0) get one row per class; generators paired with an encoder
    (a ``reconstruct`` method, BiGAN) get extra rows of real images above their reconstructions G(E(x)).
    """

    def __init__(self, every_n_steps: int = 500, num_samples: int = 64, seed: int = 0, per_class: int = 8,
                 reconstructions: int = 8):
        super().__init__(every_n_steps)
        self.num_samples, self.seed = num_samples, seed
        self.per_class, self.reconstructions = per_class, reconstructions
        self._reals: torch.Tensor | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._keep_reals(pl_module, batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._keep_reals(pl_module, batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._keep_reals(pl_module, batch)

    def _keep_reals(self, pl_module, batch) -> None:
        """The first real images seen, to reconstruct at every evaluation (validate and test have no training
        batches: theirs are taken)."""
        if self._reals is None and hasattr(pl_module, "reconstruct"):
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            self._reals = x[: self.reconstructions].detach().clone()

    @rank_zero_only
    def run(self, trainer, pl_module) -> None:
        num_classes = getattr(pl_module, "num_classes", 0)
        if num_classes:
            labels = torch.arange(num_classes, device=pl_module.device).repeat_interleave(self.per_class)
            images = pl_module.sample(len(labels), labels=labels, seed=self.seed)
            nrow = self.per_class
        else:
            images = pl_module.sample(self.num_samples, seed=self.seed)
            nrow = None
        if self._reals is not None:
            with torch.no_grad():
                recon = pl_module.reconstruct(self._reals.to(pl_module.device))
            nrow = nrow or len(self._reals)
            images = torch.cat([images[: (len(images) // nrow) * nrow], self._reals.to(images), recon.to(images)])
        path = save_grid(images, samples_dir(trainer) / f"{self.file_stem('grid', trainer)}.png", nrow)
        log_image(trainer, "samples/grid", path)
