"""What Lightning and torch print on every run that does not apply to a ganforge run, silenced at the source:
a warning filter for each warning, a logging filter on Lightning's info logger for its product tips.

Each entry says why it does not apply; anything else still prints.
"""

from __future__ import annotations

import logging
import sys
import warnings

_IGNORED_WARNINGS = (
    # Deliberate in ganforge: the EMA generator lives in eval mode; a shard stream's __len__ is the per-rank epoch
    # length that every worker shares (see datamodules/); runs count steps, so logging intervals may span epochs;
    # step checkpoints hold the weights after the step (what exact resume needs).
    (r"Found \d+ module\(s\) in eval mode", Warning),
    (r"Your `IterableDataset` has `__len__` defined", Warning),
    (r"The number of training batches \(\d+\) is smaller than the logging", Warning),
    (r"Using ModelCheckpoint with manual optimization and every_n_train_steps", Warning),
    # torch 2.13 deprecates the LeafSpec class that Lightning 2.6's own _pytree helper still builds: not ours to fix.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    # slurm-wlm installed but the run is not a SLURM job: `ganforge launch` writes the srun line for SLURM runs.
    (r"The `srun` command is available on your system but is not used", Warning),
)
# Lightning's rank-zero info lines that advertise products or report hardware that a GAN run cannot use.
_IGNORED_INFO = ("💡 Tip:", "TPU available:", "HPU available:")


class _DropInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_IGNORED_INFO)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """ganforge's own data warnings (a skipped shard, an undecodable sample) as one line: they name what was
    skipped, so the source line warnings would print under them says nothing."""
    if issubclass(category, RuntimeWarning) and str(message).startswith("data: "):
        print(f"ganforge: warning: {message}", file=file or sys.stderr, flush=True)
    else:
        _default_show_warning(message, category, filename, lineno, file, line)


_default_show_warning = warnings.showwarning


def silence_irrelevant_output() -> None:
    for message, category in _IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    warnings.showwarning = _show_warning
    info = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropInfo) for f in info.filters):
        info.addFilter(_DropInfo())
