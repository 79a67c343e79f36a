"""`ganforge launch` renders a job script that runs what it should: the script is executed here by bash with
stand-ins for srun/scontrol/sbatch that record what they are given (tests/test_slurm_jobs.py runs real ones)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from pipeline.commands import launch as launch_command

REPO = Path(__file__).resolve().parents[1]
STUBS = {
    "srun": 'printf "%s\\n" "MASTER_ADDR=$MASTER_ADDR" "MASTER_PORT=$MASTER_PORT" "$@" > "$STUB_OUT/srun.txt"',
    "scontrol": '[ "$1 $2" = "show hostnames" ] && echo n7 && echo n8 || echo "NodeName=n7 NodeAddr=10.1.2.3 Arch=x"',
    "sbatch": 'echo "$@" > "$STUB_OUT/sbatch.txt"; echo 4242',
}


@pytest.fixture
def stubs(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STUBS.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STUB_OUT", str(tmp_path))
    monkeypatch.chdir(REPO)
    return tmp_path


def render(*argv: str) -> str:
    return launch_command.render(*launch_command.parse_args(list(argv)))


def run_script(script: str, tmp_path: Path, **env: str) -> list[str]:
    """Runs the rendered script as Slurm would (its variables set); returns srun's arguments."""
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    slurm = {"SLURM_JOB_ID": "1234", "SLURM_JOB_NODELIST": "n[7-8]", **env}
    subprocess.run(["bash", str(path)], env={**os.environ, **slurm}, check=True, cwd=tmp_path)
    return (tmp_path / "srun.txt").read_text().splitlines()


def test_two_nodes_of_four_gpus(stubs):
    script = render("--config", "configs/ring8.yaml", "--nodes", "2", "--gpus-per-node", "4", "--time", "12:00:00",
                    "--partition", "gpu", "--account", "proj", "--qos", "high", "--out-dir", str(stubs / "runs"),
                    "--max-requeues", "5", "--", "--trainer.max_steps", "100")
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--time=12:00:00", "--partition=gpu",
                 "--account=proj", "--qos=high", "--signal=USR1@120", "--requeue", "--open-mode=append",
                 f"--output={stubs}/runs/%x-%j.out", f"--chdir={REPO}"):
        assert f"#SBATCH {line}\n" in script

    srun = run_script(script, stubs)
    assert srun[:2] == ["MASTER_ADDR=10.1.2.3", "MASTER_PORT=21234"]  # first node's NodeAddr, port from job id
    args = srun[2:]
    assert args[0] == "--kill-on-bad-exit=1" and args[2:5] == ["-m", "pipeline.commands.cli", "fit"]
    options = dict(zip(args[5::2], args[6::2], strict=False))
    assert options["--config"] == "configs/ring8.yaml"
    assert (options["--trainer.num_nodes"], options["--trainer.devices"], options["--trainer.accelerator"],
            options["--trainer.strategy"]) == ("2", "4", "gpu", "ddp_gan")
    run_dir = stubs / "runs" / "1234"
    assert run_dir.is_dir()
    assert options["--trainer.default_root_dir"] == options["--trainer.logger.init_args.save_dir"] == str(run_dir)
    assert options["--trainer.logger.init_args.version"] == "1234"  # CSVLogger: the same folder after requeues
    assert options["--trainer.max_steps"] == "100"
    (callback,) = [a.split("=", 1)[1] for a in args if a.startswith("--trainer.callbacks+=")]
    assert json.loads(callback) == {"class_path": "pipeline.callbacks.preemption.PreemptionCheckpoint",
                                    "init_args": {"max_requeues": 5}}
    assert "--ckpt_path" not in args

    (run_dir / "hpc_ckpt_3.ckpt").touch()  # what a preempted run leaves: the requeued job resumes from it
    assert run_script(script, stubs)[-2:] == ["--ckpt_path", "hpc"]


def test_seeds_and_sweeps_make_an_array(stubs):
    script = render("--config", "configs/ring8.yaml", "--accelerator", "cpu", "--gpus-per-node", "2",
                    "--seeds", "0", "1", "--sweep", "model.init_args.lr_g=1e-3,2e-4", "--out-dir", str(stubs))
    assert "#SBATCH --array=0-3\n" in script and "--gpus-per-node" not in script
    assert f"#SBATCH --output={stubs}/%x-%A_%a.out\n" in script
    srun = run_script(script, stubs, SLURM_ARRAY_JOB_ID="1230", SLURM_ARRAY_TASK_ID="2")
    assert srun[-5:-1] == ["--seed_everything", "1", "--model.init_args.lr_g", "1e-3"]  # task 2 of seeds x lr_g
    assert str(stubs / "1230_2") in srun  # its own run folder


def test_submits_with_sbatch(stubs, capsys):
    launch_command.main(["--config", "configs/ring8.yaml", "--out-dir", str(stubs / "runs"), "--job-name", "r8"])
    assert "submitted job 4242" in capsys.readouterr().out
    submitted = (stubs / "sbatch.txt").read_text().split()
    assert submitted[:1] == ["--parsable"] and Path(submitted[1]) == stubs / "runs" / "r8.sbatch"
    assert "#SBATCH --job-name=r8" in Path(submitted[1]).read_text()


@pytest.mark.parametrize(("time", "lead", "ok"), [("3", 120, False), ("3:01", 120, True), ("5", 240, False),
                                                   ("1-0", 120, True), ("10", 30, True)])
def test_time_limit_must_outlast_the_signal_lead(stubs, time, lead, ok):
    argv = ["--config", "configs/ring8.yaml", "--time", time, "--signal-lead", str(lead), "--dry-run"]
    if ok:
        render(*argv)
    else:
        with pytest.raises(ValueError, match="leaves no training time"):
            render(*argv)


@pytest.mark.parametrize(("text", "seconds"), [("90", 5400), ("2:30", 150), ("1:00:00", 3600), ("2-3", 183600),
                                               ("1-0:30", 88200), ("1-00:00:05", 86405)])
def test_slurm_time_formats(text, seconds):
    assert launch_command.slurm_seconds(text) == seconds


def test_rendered_script_is_valid_bash(stubs):
    script = render("--config", "configs/ring8.yaml", "--seeds", "1", "2", "--", "--model.init_args.lr_g", "1e-3")
    assert "{{" not in script
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
