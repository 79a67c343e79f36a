"""The GAN progress display and the end-of-fit summary on short real fits of ring8: generator steps, kimg, rates,
ETA, losses and the latest evaluation; one plain line per N steps off a terminal; every fit gets both."""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.callbacks.gan_progress import GanProgressBar
from pipeline.callbacks.mode_coverage import ModeCoverageCallback
from pipeline.callbacks.run_summary import RunSummaryCallback
from pipeline.commands.cli import run_cli

STEPS, BATCH = 20, 64
LINE = re.compile(r"step +(\d+)/(\d+) +(\d+)% +([\d.]+) kimg +([\d.e+]+) s/kimg +([\d.e+]+) img/s"
                  r" +ETA (\d+):(\d\d):(\d\d) +loss/d \S+ +loss/g \S+")


def fit_args(tmp_path, **bar) -> list[str]:
    """ring8 with mode coverage every 10 generator steps and a progress bar configured by ``bar``."""
    config = yaml.safe_load(open("configs/ring8.yaml"))
    config["trainer"]["callbacks"] = [
        {"class_path": "pipeline.callbacks.mode_coverage.ModeCoverageCallback",
         "init_args": {"every_n_steps": 10, "num_samples": 500, "plot": False}},
        *([{"class_path": "pipeline.callbacks.gan_progress.GanProgressBar", "init_args": bar}] if bar else [])]
    path = tmp_path / "ring8.yaml"
    path.write_text(yaml.safe_dump(config))
    return ["fit", "--config", str(path), "--trainer.max_steps", str(STEPS), "--trainer.log_every_n_steps", "5",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--data.init_args.batch_size", str(BATCH), "--trainer.enable_model_summary", "false"]


def seconds(match: re.Match) -> int:
    return int(match[7]) * 3600 + int(match[8]) * 60 + int(match[9])


def test_plain_lines_show_steps_kimg_rates_eta_losses_and_the_latest_evaluation(tmp_path, capsys):
    started = time.perf_counter()
    cli = run_cli(fit_args(tmp_path, plain=True, line_every=5))
    wall = time.perf_counter() - started
    out = capsys.readouterr().out
    assert "\r" not in out
    lines = [line for line in out.splitlines() if line.startswith("step ")]
    assert len(lines) == STEPS // 5  # one line per 5 generator steps, none repeated at the end
    fields = [LINE.match(line) for line in lines]
    assert all(fields), lines
    assert [int(m[1]) for m in fields] == [5, 10, 15, 20] and {int(m[2]) for m in fields} == {STEPS}
    assert [int(m[3]) for m in fields] == [25, 50, 75, 100]
    assert [float(m[4]) for m in fields] == [step * BATCH / 1000 for step in (5, 10, 15, 20)]  # n_critic 1
    for m in fields:  # s/kimg and images/s are the same rate
        assert float(m[5]) * float(m[6]) == pytest.approx(1000, rel=0.01)
    etas = [seconds(m) for m in fields]
    assert etas[-1] == 0 and all(0 <= eta <= wall for eta in etas)

    coverage = next(c for c in cli.trainer.callbacks if isinstance(c, ModeCoverageCallback))
    assert [step for step, _ in coverage.evaluations] == [10, 20]
    assert "@" not in lines[0]  # nothing evaluated yet at step 5
    for line, (step, metrics) in zip((lines[1], lines[3]), coverage.evaluations, strict=True):
        assert line.endswith(f"captured {metrics['modes/captured']:.4g} @ {step}")
    assert lines[2].endswith("@ 10")

    best_step, best = max(((s, m["modes/captured"]) for s, m in coverage.evaluations), key=lambda sm: sm[1])
    summary = out[out.index("── ganforge fit:"):].splitlines()
    assert summary[0].startswith(f"── ganforge fit: {STEPS} generator steps ({STEPS} D steps), "
                                 f"{STEPS * BATCH / 1000:.4g} kimg in 0:00:")
    rows = {row.split(":", 1)[0].strip(): row.split(":", 1)[1].strip() for row in summary[1:]}
    assert rows["best"] == f"captured {best:.4g} at step {best_step}"
    assert rows["last evaluation"].startswith(f"step {STEPS}: captured ")
    checkpoints = cli.trainer.checkpoint_callback
    latest = Path(checkpoints.best_model_path)  # the default ModelCheckpoint: no monitor, no last.ckpt
    assert rows["checkpoints"] == f"{checkpoints.dirpath} (latest: {latest.name})" and latest.is_file()  # tmp: not
    # below the working directory, so absolute
    assert rows["CSV run"] == str(Path(cli.trainer.logger.log_dir).resolve())


def test_on_a_terminal_the_bar_is_redrawn_in_place_every_n_batches(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # lines are cut to the terminal's width
    run_cli(fit_args(tmp_path, plain=False, refresh_every=4))
    out = capsys.readouterr().out
    bar = out[out.index("\r"):out.index("── ganforge fit:")]
    assert bar.count("\r") == STEPS // 4 + 1  # every 4 batches, and once more at the end
    assert bar.endswith("\n") and bar.count("\n") == 1  # one line for the whole run
    assert bar.rstrip().endswith(f"@ {STEPS}") and f"step {STEPS}/{STEPS}" in bar.rsplit("\r", 1)[1]


def test_every_fit_gets_the_progress_bar_and_summary_unless_the_bar_is_turned_off(tmp_path):
    def callbacks(*args):
        return [type(c) for c in run_cli(["--config", "configs/ring8.yaml", *args], run=False).trainer.callbacks]

    default = callbacks()
    assert default.count(GanProgressBar) == 1 and default.count(RunSummaryCallback) == 1
    off = callbacks("--trainer.enable_progress_bar", "false")
    assert GanProgressBar not in off and RunSummaryCallback in off
    configured = fit_args(tmp_path, line_every=7)[1:3]  # a config naming the bar: it is kept, not doubled
    bars = [c for c in run_cli(configured, run=False).trainer.callbacks if isinstance(c, GanProgressBar)]
    assert [bar.line_every for bar in bars] == [7]
    assert GanProgressBar not in callbacks(*configured, "--trainer.enable_progress_bar", "false")


def test_a_fit_logged_to_a_file_prints_plain_lines_and_no_irrelevant_warnings(tmp_path):
    """`ganforge fit` as a SLURM job runs it: stdout to a file (not a terminal), stderr kept; tracked by W&B
    (offline, from conftest's environment)."""
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.commands.cli", "fit", "--config", "configs/ring8.yaml",
         "--config", "configs/wandb.yaml", "--trainer.max_steps", str(STEPS),
         "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path),
         "--data.init_args.batch_size", str(BATCH)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "\r" not in result.stdout
    steps = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    assert len(steps) == 1 and steps[0].startswith(f"step {STEPS}/{STEPS} ")  # line_every 100: the end only
    assert f"── ganforge fit: {STEPS} generator steps" in result.stdout
    assert re.search(r"\n  W&B run: +\S*wandb/offline-run-\S+ \(offline\)\n", result.stdout)
    for noise in ("LeafSpec", "💡", "litlogger", "litmodels", "srun", "TPU available", "Warning", "WARNING",
                  "anonymous", "Traceback"):
        assert noise not in result.stderr, (noise, result.stderr)
