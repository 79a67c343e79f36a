"""`ganforge compare` on two real offline runs: their config differences, final/best metrics and a plot."""

import math

import numpy as np
import pytest
from PIL import Image
from test_wandb_run import fit_ring8

from pipeline.commands.cli import main
from pipeline.commands.compare import metrics_table
from pipeline.tracking.run_reader import read_local_runs


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as mp:
        for name, lr_d in (("a", "1e-3"), ("b", "5e-4")):
            fit_ring8(mp, root / name, "--model.init_args.lr_d", lr_d, "--trainer.logger.init_args.group", "lr-d",
                      steps=20)
    runs = [read_local_runs(root / name / "wandb")[0] for name in ("a", "b")]
    return root, runs


def section(out: str, title: str) -> list[list[str]]:
    """The rows of a printed table, split into cells (cells hold no double spaces)."""
    lines = out.split(title, 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    return [[cell.strip() for cell in line.strip().split("  ") if cell.strip()] for line in lines]


def test_compare_prints_differences_and_metrics_and_plots(two_runs, capsys):
    root, (a, b) = two_runs
    out_png = root / "cmp.png"
    main(["compare", str(root / "a"), str(root / "b"), "--out", str(out_png)])
    out = capsys.readouterr().out

    config = {row[0]: row[1:] for row in section(out, "config differences")}
    assert config["model.init_args.lr_d"] == ["0.001", "0.0005"]
    assert config["trainer.default_root_dir"] == [str(root / "a"), str(root / "b")]
    assert "model.init_args.lr_g" not in config and "model.init_args.n_critic" not in config  # equal: not shown

    metrics = {row[0]: row[1:] for row in section(out, "metrics:")}
    header = section(out, "metrics:")[0]
    assert header == ["metric", a.id, b.id]
    for column, run in ((0, a), (1, b)):
        losses = [row["loss/d"] for row in run.history if "loss/d" in row]
        assert metrics["loss/d"][column] == f"{losses[-1]:.4g}"
        captured = next(row["modes/captured"] for row in run.history if "modes/captured" in row)
        # the evaluation after the last generator step is logged in the row of that batch (index 19)
        assert metrics["modes/captured"][column] == f"{captured:g} (best {captured:g} @ 19)"
        assert metrics["run/final_kimg"][column] == "1.28"  # 20 steps x 64 images

    assert f"wrote {out_png}" in out
    with Image.open(out_png) as png:
        assert png.format == "PNG" and png.width >= 1000 and png.height >= 300


def test_compare_a_group_found_under_a_folder_against_kimg(two_runs, capsys):
    root, (a, b) = two_runs
    main(["compare", str(root), "--group", "lr-d", "--x", "kimg", "--metrics", "loss/*", "--out",
          str(root / "kimg.png")])
    out = capsys.readouterr().out
    assert {a.id, b.id} <= set(section(out, "runs:")[1] + section(out, "runs:")[2])
    assert [row[0] for row in section(out, "metrics:")[1:]] == ["loss/d", "loss/d_adv", "loss/g", "loss/g_adv"]
    assert "4 metric(s) against kimg" in out
    with pytest.raises(SystemExit, match="no runs of group 'other'"):
        main(["compare", str(root), "--group", "other"])


def test_a_run_with_one_point_per_metric_is_drawn_as_markers(tmp_path, capsys, monkeypatch):
    fit_ring8(monkeypatch, tmp_path / "one", steps=1)  # one evaluation (at the end), no loss row yet
    (run,) = read_local_runs(tmp_path / "one" / "wandb")
    points = {name for row in run.history for name in row if name.startswith("modes/")}
    assert points == {"modes/captured", "modes/high_quality", "modes/reverse_kl"}
    assert all(sum(name in row for row in run.history) == 1 for name in points)

    out_png = tmp_path / "one.png"
    main(["compare", str(tmp_path / "one"), "--out", str(out_png)])
    out = capsys.readouterr().out
    finite = {name for row in run.history for name, value in row.items() if name in points and math.isfinite(value)}
    assert f"wrote {out_png}: {len(finite)} metric(s)" in out  # the totals (run/*) stay in the table only
    if finite != points:  # reverse KL is inf while a mode is missed
        assert f"not plotted (no finite value): {', '.join(sorted(points - finite))}" in out
    with Image.open(out_png) as png:
        pixels = np.asarray(png.convert("RGB")).astype(int)
    axes = pixels[pixels.shape[0] // 8:]  # below the legend, whose sample line is the same colour
    blue = np.abs(axes - (31, 119, 180)).sum(-1) < 30  # matplotlib's first colour: the run's markers
    columns = np.flatnonzero(blue.any(0))
    assert blue.sum() >= 9 * len(finite)  # a dot of several pixels on each axis
    assert columns.max() - columns.min() > pixels.shape[1] // 3 * (len(finite) - 1) - 50

    main(["compare", str(tmp_path / "one"), "--metrics", "run/*", "--out", str(tmp_path / "none.png")])
    out = capsys.readouterr().out
    assert "nothing to plot" in out and not (tmp_path / "none.png").exists()


def test_the_table_gives_the_best_of_fidelity_diversity_and_distance_metrics():
    steps = np.array([500.0, 1000.0, 1500.0])
    values = {"metrics/precision": [0.46, 0.49, 0.48], "metrics/recall": [0.6, 0.9, 0.8],
              "metrics/coverage": [0.2, 0.3, 0.35], "metrics/fd_indomain": [75, 35, 40.0]}
    run = {name: (steps, np.array(series)) for name, series in values.items()}
    rows = {row[0]: row[1] for row in section(metrics_table([run], ["a"], sorted(run)), "metrics:")[1:]}
    assert rows == {"metrics/precision": "0.48 (best 0.49 @ 1000)", "metrics/recall": "0.8 (best 0.9 @ 1000)",
                    "metrics/coverage": "0.35 (best 0.35 @ 1500)", "metrics/fd_indomain": "40 (best 35 @ 1000)"}
