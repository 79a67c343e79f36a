"""A fit resumed from a checkpoint continues the same W&B run: same id, one run when read back."""

from test_wandb_run import BATCH, fit_ring8

from pipeline.tracking.run_reader import read_local_runs


def test_resumed_fit_keeps_the_run_id(tmp_path, monkeypatch):
    fit_ring8(monkeypatch, tmp_path, steps=20)
    (first,) = read_local_runs(tmp_path / "wandb")
    ckpt = tmp_path / "ganforge" / first.id / "checkpoints" / "last.ckpt"
    fit_ring8(monkeypatch, tmp_path, "--ckpt_path", str(ckpt), steps=40)

    assert len(list((tmp_path / "wandb").glob(f"offline-run-*-{first.id}"))) == 2  # one folder per session
    (run,) = read_local_runs(tmp_path / "wandb")  # ... read back as one run
    assert run.id == first.id
    assert [row["trainer/global_step"] for row in run.history if "loss/d" in row] == [9, 19, 29, 39]
    assert [row["trainer/global_step"] for row in run.history if "modes/captured" in row] == [19, 39]
    assert run.summary["run/final_kimg"] == 40 * BATCH / 1000
    assert run.summary["run/wall_time_s"] > first.summary["run/wall_time_s"]  # summed over both sessions
