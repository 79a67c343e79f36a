"""Runs a script as a 2-rank DDP job (Lightning starts rank 1 by re-running it), with a hard time limit.

A rank that dies leaves the other waiting in a collective for gloo's 30-minute timeout; the limit turns that
into a failure that shows the ranks' output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_ranks(args: list[str], timeout: float = 150, cwd: Path | None = None, extra_path: Path | None = None) -> str:
    """``python ARGS`` with one thread per rank; returns the output, raises with its tail on failure."""
    path = os.pathsep.join(str(p) for p in (REPO, extra_path) if p is not None)
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", PL_DISABLE_FORK="1")
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd or REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group this call started: the launcher and its rank 1
        out, _ = proc.communicate()
        raise AssertionError(f"2-rank run exceeded {timeout} s:\n{out[-6000:]}") from None
    if proc.returncode != 0:
        raise AssertionError(f"2-rank run failed ({proc.returncode}):\n{out[-6000:]}")
    return out
