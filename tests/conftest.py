"""Shared test settings: quiet, offline, deterministic."""

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("PL_DISABLE_FORK", "1")


@pytest.fixture
def one_thread():
    """Tiny nets on a shared 2-core machine run fastest without intra-op threads (a second thread only contends
    with the other core). Test files that want it: ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
