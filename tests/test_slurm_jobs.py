"""`ganforge launch` against a real SLURM: a 2-node DDP job trains; a preempted job requeues itself and resumes
where it stopped; the requeue limit and ``scancel`` end a job for good.

The cluster (tests/slurm_cluster.py) is two slurmd "nodes" on this machine, one CPU each, so each job is two
gloo ranks on two nodes. The jobs train the ring8 preset with its evaluation callbacks replaced by a
checkpoint of the last step, and smaller batches. They log with the preset's CSVLogger, not W&B: "the same
run" is checked as the same logger folder (one version, one metrics.csv without a gap at the restart).
"""

import csv
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from slurm_cluster import SlurmCluster, install_slurm

REPO = Path(__file__).resolve().parents[1]
BATCH = 64
FIT_ARGS = ["--trainer.callbacks=[{\"class_path\": \"pytorch_lightning.callbacks.ModelCheckpoint\", "
            "\"init_args\": {\"save_last\": true}}]",
            "--data.init_args.batch_size", str(BATCH), "--trainer.enable_progress_bar", "false",
            "--trainer.log_every_n_steps", "5"]


@pytest.fixture(scope="module")
def cluster():
    reason = install_slurm()
    if reason is not None:
        pytest.skip(f"no SLURM on this machine: {reason}")
    slurm = SlurmCluster(cpus_per_node=1)
    try:
        slurm.start()
    except (OSError, RuntimeError, TimeoutError) as err:
        pytest.skip(f"SLURM daemons did not start: {err}")
    yield slurm
    slurm.stop()


def launch(cluster: SlurmCluster, out: Path, max_steps: int, *options: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.commands.cli", "launch", "--config", "configs/ring8.yaml", "--nodes", "2",
         "--gpus-per-node", "1", "--accelerator", "cpu", "--time", "10", "--signal-lead", "30", *options,
         "--job-name", "gf", "--out-dir", str(out), "--", *FIT_ARGS, "--trainer.max_steps", str(max_steps)],
        cwd=REPO, env=dict(cluster.env, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)), capture_output=True,
        text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return re.search(r"submitted job (\d+)", done.stdout).group(1)


def wait_for_output(path: Path, pattern: str, timeout: float) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and (match := re.search(pattern, path.read_text())):
            return match
        time.sleep(0.2)
    raise TimeoutError(f"no {pattern!r} in {path} after {timeout} s:\n"
                       f"{path.read_text()[-4000:] if path.exists() else '(no output)'}")


def logged_steps(run_dir: Path) -> list[int]:
    """The steps of the training rows (the run summary adds a row of run/* totals when training ends)."""
    (metrics,) = run_dir.glob("lightning_logs/*/metrics.csv")
    with metrics.open() as f:
        return sorted({int(row["step"]) for row in csv.DictReader(f) if row.get("loss/d")})


def test_two_node_ddp_job_trains(cluster, tmp_path):
    steps = 30
    job = launch(cluster, tmp_path, steps)
    info = cluster.wait_for(job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout=240)
    output = (tmp_path / f"gf-{job}.out").read_text()
    assert info["JobState"] == "COMPLETED", output[-4000:]
    assert (info["NumNodes"], info["NodeList"]) == ("2", "n[1-2]")
    assert {"GLOBAL_RANK: 0, MEMBER: 1/2", "GLOBAL_RANK: 1, MEMBER: 2/2"} <= set(
        re.findall(r"GLOBAL_RANK: \d, MEMBER: \d/\d", output))

    run_dir = tmp_path / job
    (last,) = run_dir.glob("lightning_logs/*/checkpoints/last.ckpt")
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["global_step"] == steps
    assert ckpt["ganforge"]["images_seen"] == steps * BATCH * 2  # two ranks' batches per step
    assert logged_steps(run_dir) == list(range(4, steps, 5))


def test_preempted_job_requeues_and_resumes_at_the_saved_step(cluster, tmp_path):
    steps = 250
    job = launch(cluster, tmp_path, steps)
    output = tmp_path / f"gf-{job}.out"
    wait_for_output(output, r"training from generator step 0 \(restart 0\)", timeout=180)
    time.sleep(1)  # some steps
    cluster.run(["scancel", "--signal=USR1", job])

    saved = wait_for_output(output, r"SIGUSR1 at generator step (\d+): saved (\S+), job requeued", timeout=60)
    step = int(saved.group(1))
    assert 0 < step < steps
    wait_for_output(output, rf"training from generator step {step} \(restart 1\)", timeout=180)
    info = cluster.wait_for(job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout=240)
    assert (info["JobState"], info["Restarts"]) == ("COMPLETED", "1"), output.read_text()[-4000:]

    run_dir = tmp_path / job
    assert [p.name for p in run_dir.glob("hpc_ckpt_*.ckpt")] == ["hpc_ckpt_1.ckpt"]
    assert torch.load(run_dir / "hpc_ckpt_1.ckpt", weights_only=False)["global_step"] == step
    (last,) = run_dir.glob("lightning_logs/*/checkpoints/last.ckpt")  # one logger version across the restart
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["global_step"] == ckpt["ganforge"]["d_steps"] == steps
    assert ckpt["ganforge"]["images_seen"] == steps * BATCH * 2  # no step lost or repeated
    assert logged_steps(run_dir) == list(range(4, steps, 5))  # one metrics.csv, no gap at the restart


def test_a_job_signalled_beyond_its_requeue_limit_stops_with_its_checkpoint(cluster, tmp_path):
    """The guard against endless requeues, for real: with max_requeues=1 the second signal is refused."""
    job = launch(cluster, tmp_path, 100_000, "--max-requeues", "1")
    output = tmp_path / f"gf-{job}.out"
    wait_for_output(output, r"training from generator step 0 \(restart 0\)", timeout=180)
    time.sleep(1)  # some steps
    cluster.run(["scancel", "--signal=USR1", job])
    resumed = int(wait_for_output(output, r"training from generator step (\d+) \(restart 1\)", timeout=180).group(1))
    time.sleep(1)  # some steps
    cluster.run(["scancel", "--signal=USR1", job])

    stopped = wait_for_output(output, r"stopped by SIGUSR1 at generator step (\d+); checkpoint (\S+); not requeued: "
                                      r"it was requeued 1 times already \(max_requeues=1\)", timeout=60)
    info = cluster.wait_for(job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout=60)
    assert (info["JobState"], info["Restarts"]) == ("FAILED", "1")
    step = int(stopped.group(1))
    assert step > resumed
    assert Path(stopped.group(2)) == tmp_path / job / "hpc_ckpt_2.ckpt"
    assert torch.load(stopped.group(2), weights_only=False)["global_step"] == step


def test_a_cancelled_job_is_checkpointed_and_stays_cancelled(cluster, tmp_path):
    """scancel sends SIGTERM like the time limit does; requeueing on it would resurrect the job (it did)."""
    job = launch(cluster, tmp_path, 100_000)
    output = tmp_path / f"gf-{job}.out"
    wait_for_output(output, r"training from generator step 0 \(restart 0\)", timeout=180)
    time.sleep(1)  # some steps
    cluster.run(["scancel", job])
    stopped = wait_for_output(output, r"stopped by SIGTERM at generator step (\d+); checkpoint (\S+); not requeued: "
                                      r"SIGTERM before the time limit", timeout=60)
    info = cluster.wait_for(job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout=60)
    time.sleep(1)  # a requeue would show by now
    assert (info["JobState"], cluster.job(job)["JobState"], cluster.job(job)["Restarts"]) == (
        "CANCELLED", "CANCELLED", "0")
    assert torch.load(stopped.group(2), weights_only=False)["global_step"] == int(stopped.group(1)) > 0
