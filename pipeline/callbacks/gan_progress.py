"""One progress display for a whole GAN run, counted the way GAN users count: generator steps and kimg.

Lightning's own bar counts epochs of batches (discriminator steps) and starts again every epoch; a GAN run is
one long loop over ``max_steps`` generator steps, judged by its rate in s/kimg (StyleGAN's unit), its ETA, the
two players' losses and the latest evaluation. Nothing here runs on the device: the bar reads Python counters
each batch and the logged values only when it draws, so it adds no host-device sync to a training step.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections import deque
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks.progress import ProgressBar

from pipeline.callbacks.periodic import PeriodicCallback
from pipeline.tracking.metric_goals import goal_of

# The evaluation shown when several were logged, best known first; otherwise the first one logged.
HEADLINE_METRICS = ("metrics/fid", "metrics/fd_indomain", "modes/captured")
_BAR_WIDTH = 20


class GanProgressBar(ProgressBar):
    """``step 1200/2000  60%  30.7 kimg  1.95 s/kimg  525 img/s  ETA 0:01:40  loss/d 1.38  loss/g 0.692
    fd_indomain 32.8 @ 1000``: one line for the whole fit, redrawn in place on a terminal; where stdout is
    not a terminal (a SLURM log file) one plain line every ``line_every`` generator steps instead, with no
    carriage returns.

    Args:
        refresh_every: batches between redraws on a terminal.
        line_every: generator steps between lines in plain mode (and a last line at the end of fit).
        plain: True: plain lines; False: a bar redrawn in place; None: plain unless stdout is a terminal.
        window: the rate (s/kimg, images/s, ETA) is measured over the last ``window`` draws.
    """

    def __init__(self, refresh_every: int = 10, line_every: int = 100, plain: bool | None = None, window: int = 10):
        super().__init__()
        for name, value in (("refresh_every", refresh_every), ("line_every", line_every), ("window", window)):
            if value < 1:
                raise ValueError(f"GanProgressBar.init_args.{name} must be >= 1, got {value}")
        self.refresh_every, self.line_every, self.plain, self.window = refresh_every, line_every, plain, window
        self._enabled = True
        self._plain = True
        self._batches = 0
        self._last_drawn_step = -1
        self._recent: deque[tuple[float, int, int]] = deque(maxlen=window + 1)  # (time, step, images seen)
        self._line_open = False

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        self._close_line()
        print(*args, **kwargs)

    # ---- fit ------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._plain = self.plain if self.plain is not None else not sys.stdout.isatty()
        self._batches, self._last_drawn_step = 0, trainer.global_step
        self._recent.clear()
        self._recent.append((time.perf_counter(), trainer.global_step, _images_seen(pl_module)))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._enabled:
            return
        self._batches += 1
        step = trainer.global_step
        if self._plain:
            if step % self.line_every == 0 and step != self._last_drawn_step:
                self._draw(trainer, pl_module)
        elif self._batches % self.refresh_every == 0:
            self._draw(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._enabled:
            return
        if trainer.global_step != self._last_drawn_step or not self._plain:
            self._draw(trainer, pl_module)
        self._close_line()

    # ---- drawing --------------------------------------------------------------------------------------
    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step, seen = trainer.global_step, _images_seen(pl_module)
        self._recent.append((time.perf_counter(), step, seen))
        self._last_drawn_step = step
        line = self.describe(trainer, pl_module)
        if self._plain:
            print(line, flush=True)
            return
        width = shutil.get_terminal_size((120, 20)).columns - 1
        sys.stdout.write("\r" + line[:width].ljust(width))
        sys.stdout.flush()
        self._line_open = True

    def _close_line(self) -> None:
        if self._line_open:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self._line_open = False

    def describe(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        """The current line (reads the logged values, so call it only when drawing)."""
        step, total = trainer.global_step, trainer.max_steps if trainer.max_steps > 0 else None
        parts = [f"step {step:>{len(str(total))}}/{total}" if total else f"step {step}"]  # aligned in log files
        if total:
            done = min(1.0, step / total)
            if not self._plain:
                filled = round(done * _BAR_WIDTH)
                parts.insert(0, "|" + "█" * filled + " " * (_BAR_WIDTH - filled) + "|")
            parts.append(f"{100 * done:3.0f}%")
        seen = _images_seen(pl_module)
        if seen is not None:
            parts.append(f"{seen / 1000:.4g} kimg")
        (t0, step0, seen0), (t1, step1, seen1) = self._recent[0], self._recent[-1]
        if t1 > t0 and seen is not None and seen1 > seen0:
            images_per_s = (seen1 - seen0) / (t1 - t0)
            parts.append(f"{1000 / images_per_s:.3g} s/kimg  {images_per_s:.4g} img/s")
        if total and t1 > t0 and step1 > step0:
            parts.append("ETA " + format_duration(max(0, total - step) * (t1 - t0) / (step1 - step0)))
        for name, value in trainer.progress_bar_metrics.items():
            if name != "kimg":
                parts.append(f"{name} {_number(value)}")
        latest = latest_evaluation(trainer)
        if latest is not None:
            evaluated_step, metrics = latest
            name = headline_metric(metrics)
            parts.append(f"{name.split('/', 1)[-1]} {_number(metrics[name])} @ {evaluated_step}")
        return "  ".join(parts)


def latest_evaluation(trainer: pl.Trainer) -> tuple[int, dict[str, float]] | None:
    """(generator step, metrics) of the most recent evaluation by any of the fit's evaluation callbacks."""
    evaluations = [ev for cb in trainer.callbacks if isinstance(cb, PeriodicCallback) for ev in cb.evaluations]
    return max(evaluations, key=lambda evaluation: evaluation[0]) if evaluations else None


def headline_metric(metrics: dict[str, float]) -> str:
    """The one metric to show of an evaluation: a known headline, else the first with a direction, else the first."""
    directed = next((m for m in metrics if goal_of(m)), next(iter(metrics)))
    return next((m for m in HEADLINE_METRICS if m in metrics), directed)


def _images_seen(pl_module: pl.LightningModule) -> int | None:
    return getattr(pl_module, "images_seen", None)  # GAN modules count them; others (IcGAN's encoder) do not


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _number(value: Any) -> str:
    return f"{float(value):.4g}" if isinstance(value, (int, float)) else str(value)
