"""W&B tracking for ganforge runs: Lightning's WandbLogger, made safe for clusters without internet.

* Offline by itself: with no API key (WANDB_API_KEY, WANDB_IDENTITY_TOKEN_FILE or a netrc entry for the W&B
  host) or no route to the W&B host within a second, the run is recorded offline, with one line saying so and
  how to upload it later (``wandb sync``). An explicit WANDB_MODE or ``mode`` is always obeyed.
* One run per training run, whatever interrupts it: the run id is the configured ``id``, else WANDB_RUN_ID (set
  by sweep agents), else the id stamped into the checkpoint a fit resumes from, else one derived from the
  SLURM batch job, so a requeued job continues its run; otherwise W&B picks a new one.
* Nothing secret leaves: hyper-parameters, run notes/names/tags and the command line W&B records are redacted.
* The run summary holds the best value of each watched metric and the step it was reached at.
"""

from __future__ import annotations

import netrc
import os
import socket
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import torch
from lightning_fabric.utilities.logger import _convert_params
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities import rank_zero_only

from pipeline.tracking.metric_goals import METRIC_GOALS
from pipeline.tracking.redact import redact, redact_argv
from pipeline.tracking.run_record import CHECKPOINT_KEY

DEFAULT_BASE_URL = "https://api.wandb.ai"
_PROBE_TIMEOUT_S = 1.0


class GanForgeWandbLogger(WandbLogger):
    """Select with ``trainer.logger: {class_path: pipeline.tracking.wandb_logger.GanForgeWandbLogger}``.

    Args:
        project, entity: where the run goes on W&B.
        group: the experiment the run belongs to (runs of one sweep or one comparison share it).
        job_type, tags, notes, name: W&B run metadata (name None: W&B picks one).
        save_dir: the folder under which W&B keeps the run (``<save_dir>/wandb/...``) and Lightning its
            checkpoints (``<save_dir>/<project>/<run id>/checkpoints``).
        id: continue this W&B run (None: see the module docstring).
        mode: "auto" (offline without credentials or network), "online", "offline" or "disabled".
        log_model: log checkpoints as W&B artifacts (True: at the end; "all": as they are written).
        best_of: metric -> "min"/"max" whose best value and step go to the summary (None: METRIC_GOALS).
    """

    def __init__(
        self,
        project: str = "ganforge",
        entity: str | None = None,
        group: str | None = None,
        job_type: str = "train",
        tags: list[str] | None = None,
        notes: str | None = None,
        name: str | None = None,
        save_dir: str = ".",
        id: str | None = None,
        mode: Literal["auto", "online", "offline", "disabled"] = "auto",
        log_model: bool | Literal["all"] = False,
        best_of: dict[str, Literal["min", "max"]] | None = None,
    ):
        self.id_source = "config" if id else "WANDB_RUN_ID" if os.environ.get("WANDB_RUN_ID") else None
        if self.id_source is None and (id := slurm_run_id()) is not None:
            self.id_source = "SLURM job"
        super().__init__(name=name, save_dir=save_dir, id=id, project=project, log_model=log_model, entity=entity,
                         group=group, job_type=job_type, tags=tags, notes=notes)
        # Lightning passes anonymous=None, which W&B 0.31 warns about on every run ("has no effect")
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
        self.mode = mode
        self.best_of = dict(METRIC_GOALS if best_of is None else best_of)
        self.best: dict[str, tuple[float, int | None]] = {}

    def resume_from(self, ckpt_path: str | os.PathLike | None) -> None:
        """Continue the W&B run of the checkpoint a fit resumes from, and its best values (call before the run
        starts). An id from the config or WANDB_RUN_ID wins; checkpoints that are not local files ("last",
        "hpc", URLs) are left to the SLURM-derived id or a new run.
        """
        if self._experiment is not None:
            raise RuntimeError("resume_from must be called before the W&B run starts")
        if ckpt_path is None or not Path(ckpt_path).is_file():
            return
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)
        state = (checkpoint.get(CHECKPOINT_KEY) or {}).get("wandb") or {}
        if state.get("run_id") and self.id_source not in ("config", "WANDB_RUN_ID"):
            self._id = self._wandb_init["id"] = state["run_id"]
            self.id_source = "checkpoint"
            self.best = dict(state.get("best") or {})

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            offline_reason = self._choose_mode()
            self._wandb_init = redact(self._wandb_init)  # notes, names and tags are recorded too
            with _argv_redacted():
                WandbLogger.experiment.fget(self)
            if offline_reason:
                run_dir = Path(self._experiment.dir).parent
                print(f"ganforge: W&B is offline ({offline_reason}); the run is recorded in {run_dir}: "
                      f"upload it later with `wandb sync {run_dir}`", file=sys.stderr, flush=True)
        return self._experiment

    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any] | Any) -> None:
        super().log_hyperparams(redact(_convert_params(params)))

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        improved = {}
        for name, goal in self.best_of.items():
            if name not in metrics:
                continue
            value = float(metrics[name])
            best = self.best.get(name)
            if best is None or (value < best[0] if goal == "min" else value > best[0]):
                self.best[name] = (value, step)
                improved.update({f"best/{name}": value, f"best_step/{name}": step})
        if improved:
            self.experiment.summary.update(improved)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Log pending checkpoint artifacts, then close the run; the logger keeps its id, so a checkpoint written
        afterwards (SLURM requeue) is stamped with it and a later fit on this logger continues the run."""
        super().finalize(status)
        if self._experiment is not None:
            self._id = self._wandb_init["id"] = self._experiment.id
            self._experiment.finish(exit_code=1 if status == "failed" else 0)
            self._experiment = None

    def _choose_mode(self) -> str | None:
        """Set the run's mode; returns why it is offline when that was decided here, else None."""
        if self.mode != "auto":
            self._wandb_init["mode"] = self.mode
            return None
        if os.environ.get("WANDB_MODE"):  # passed on: W&B reads the environment only once per process
            self._wandb_init["mode"] = os.environ["WANDB_MODE"]
            return None
        base_url = os.environ.get("WANDB_BASE_URL", DEFAULT_BASE_URL)
        if not has_credentials(base_url):
            reason = "no W&B API key: neither WANDB_API_KEY nor a netrc entry"
        elif not is_reachable(base_url):
            reason = f"{urlsplit(base_url).hostname} is unreachable"
        else:
            return None
        self._wandb_init["mode"] = "offline"
        return reason


def slurm_run_id() -> str | None:
    """An id that a requeued SLURM batch job gets again: cluster, job id and step (None outside batch jobs)."""
    job = SLURMEnvironment.job_id()  # None outside SLURM and in interactive allocations
    if job is None:
        return None
    parts = ["slurm", os.environ.get("SLURM_CLUSTER_NAME"), str(job), os.environ.get("SLURM_STEP_ID")]
    return "-".join(part for part in parts if part)


def has_credentials(base_url: str) -> bool:
    """An API key or identity token in the environment, or a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    path = Path(os.environ.get("NETRC") or "~/.netrc").expanduser()
    try:
        return path.is_file() and netrc.netrc(path).authenticators(urlsplit(base_url).hostname or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def is_reachable(base_url: str, timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the W&B host opens within ``timeout`` seconds (name lookup included)."""
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    opened = threading.Event()

    def probe() -> None:
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            opened.set()
        except OSError:
            pass

    threading.Thread(target=probe, daemon=True).start()  # a hung name lookup cannot hold the run up
    return opened.wait(timeout)


@contextmanager
def _argv_redacted() -> Iterator[None]:
    """W&B records ``sys.argv`` with the run: hide secrets given on the command line while the run starts."""
    saved = sys.argv[:]
    sys.argv[1:] = redact_argv(saved[1:])
    try:
        yield
    finally:
        sys.argv[:] = saved
