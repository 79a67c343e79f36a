"""How GanForgeWandbLogger picks its mode (offline without credentials or network) and its run id."""

import socket

import pytest
import torch

from pipeline.tracking.wandb_logger import GanForgeWandbLogger, is_reachable


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_RUN_ID", "WANDB_BASE_URL",
                 "SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_CLUSTER_NAME", "SLURM_STEP_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    return tmp_path


def test_no_credentials_means_offline(clean_env):
    logger = GanForgeWandbLogger(save_dir=str(clean_env))
    assert logger._choose_mode() == "no W&B API key: neither WANDB_API_KEY nor a netrc entry"
    assert logger._wandb_init["mode"] == "offline"


def test_credentials_but_no_route_means_offline(clean_env, monkeypatch):
    (clean_env / "netrc").write_text("machine api.wandb.invalid\n  login user\n  password 0123456789abcdef\n")
    monkeypatch.setenv("WANDB_BASE_URL", "https://api.wandb.invalid")
    logger = GanForgeWandbLogger(save_dir=str(clean_env))
    assert logger._choose_mode() == "api.wandb.invalid is unreachable"
    assert logger._wandb_init["mode"] == "offline"


def test_an_explicit_mode_is_obeyed(clean_env, monkeypatch):
    logger = GanForgeWandbLogger(save_dir=str(clean_env), mode="disabled")
    assert logger._choose_mode() is None and logger._wandb_init["mode"] == "disabled"
    monkeypatch.setenv("WANDB_MODE", "online")
    logger = GanForgeWandbLogger(save_dir=str(clean_env))
    assert logger._choose_mode() is None and logger._wandb_init["mode"] == "online"


def test_reachability_probe():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert is_reachable(f"http://127.0.0.1:{port}")
    assert not is_reachable(f"http://127.0.0.1:{port}", timeout=0.5)  # closed now


def test_a_requeued_slurm_batch_job_gets_the_same_id(clean_env, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    monkeypatch.setenv("SLURM_CLUSTER_NAME", "c1")
    first, requeued = GanForgeWandbLogger(), GanForgeWandbLogger()
    assert first.version == requeued.version == "slurm-c1-4242" and first.id_source == "SLURM job"
    monkeypatch.setenv("SLURM_STEP_ID", "0")  # an srun step of the batch script
    assert GanForgeWandbLogger().version == "slurm-c1-4242-0"
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")  # interactive allocation: every fit is a run of its own
    assert GanForgeWandbLogger().version is None


def test_id_precedence(clean_env, monkeypatch):
    ckpt = clean_env / "last.ckpt"
    torch.save({"run_record": {"wandb": {"run_id": "fromckpt", "best": {"modes/captured": (7.0, 500)}}}}, ckpt)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    logger = GanForgeWandbLogger()
    logger.resume_from(ckpt)  # the checkpoint's run beats the SLURM job's
    assert (logger.version, logger.id_source) == ("fromckpt", "checkpoint")
    assert logger.best == {"modes/captured": (7.0, 500)}  # a worse value after resuming is no new best
    configured = GanForgeWandbLogger(id="configured")
    configured.resume_from(ckpt)  # a configured id beats everything
    assert configured.version == "configured"
    monkeypatch.setenv("WANDB_RUN_ID", "fromsweep")
    agent = GanForgeWandbLogger()
    agent.resume_from(ckpt)  # so does WANDB_RUN_ID (sweep agents); W&B reads it itself
    assert (agent.version, agent.id_source) == (None, "WANDB_RUN_ID")
    other = GanForgeWandbLogger()
    other.resume_from("last")  # Lightning's special values are not files: nothing to read
    assert other.version is None
