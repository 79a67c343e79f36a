"""``ganforge compare``: recorded runs side by side: how their configs differ, their final and best metrics,
and a PNG of every metric's curves (one axis per metric, one curve per run). Offline runs need no network."""

from __future__ import annotations

import argparse
import json
import math
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.tracking.metric_goals import goal_of
from pipeline.tracking.run_reader import RecordedRun, read_runs

_NOT_METRICS = ("_", "trainer/global_step", "epoch")  # W&B's bookkeeping and the x-axes
_MAX_CELL = 48

Series = tuple[np.ndarray, np.ndarray]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="ganforge compare", description=__doc__)
    parser.add_argument("runs", nargs="+", help="run folders or .wandb files (every run found under a folder, "
                        "offline runs included), W&B run paths entity/project/run_id, or entity/project with --group")
    parser.add_argument("--group", help="only runs of this group (the experiment)")
    parser.add_argument("--metrics", nargs="+", default=["*"], help="metric name patterns (default: all)")
    parser.add_argument("--x", choices=["step", "kimg"], default="step",
                        help="x-axis: generator steps (trainer/global_step) or thousands of images shown to D")
    parser.add_argument("--out", type=Path, default=Path("compare.png"), help="the plot (PNG)")
    args = parser.parse_args(argv)

    runs = read_runs(args.runs, args.group)
    if not runs:
        raise ValueError(f"no runs of group {args.group!r} in {' '.join(args.runs)}")
    labels = run_labels(runs)
    series = [metric_series(run, args.x) for run in runs]
    metrics = sorted({name for run_series in series for name in run_series
                      if any(fnmatch(name, pattern) for pattern in args.metrics)})
    print(runs_table(runs, labels))
    print(config_table(runs, labels))
    print(metrics_table(series, labels, metrics))
    plotted = plottable(series, metrics)
    if not plotted:
        print(f"\nnothing to plot: the runs logged no finite metric but their totals (in the table above); "
              f"{args.out} not written")
        return
    plot_curves(series, labels, plotted, args.x, args.out)
    print(f"\nwrote {args.out}: {len(plotted)} metric(s) against {'kimg' if args.x == 'kimg' else 'step'}")
    unplotted = [m for m in metrics if m not in plotted and not m.startswith("run/")]
    if unplotted:
        print(f"not plotted (no finite value): {', '.join(unplotted)}")


def run_labels(runs: list[RecordedRun]) -> list[str]:
    """Run names where they tell runs apart, with the id added where they do not."""
    names = [run.name or run.id for run in runs]
    return [name if names.count(name) == 1 or name == run.id else f"{name} ({run.id})"
            for name, run in zip(names, runs, strict=True)]


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config -> dotted keys (list items by index: ``trainer.callbacks.0.init_args.every_n_steps``)."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list) and any(isinstance(item, (dict, list)) for item in tree):
        items = enumerate(tree)
    else:
        return {prefix.rstrip("."): tree}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}{key}."))
    return flat


def config_differences(runs: list[RecordedRun]) -> list[tuple[str, list[Any]]]:
    """Keys whose value is not the same in every run (a missing key counts as a difference); the run record
    (``run.*``: code version, packages, layout) after the config proper."""
    flats = [flatten(run.config) for run in runs]
    keys = sorted(set().union(*flats), key=lambda key: (key.startswith("run."), key))
    missing = object()
    rows = []
    for key in keys:
        values = [flat.get(key, missing) for flat in flats]
        if any(value != values[0] for value in values[1:]):
            rows.append((key, [None if value is missing else value for value in values]))
    return rows


def metric_series(run: RecordedRun, x: str) -> dict[str, Series]:
    """Every scalar metric of a run as (x, value) arrays; x is the generator step, or kimg (interpolated from
    the training rows for evaluation rows, which carry no kimg)."""
    media = {key.removesuffix("._type") for row in run.history for key in row if key.endswith("._type")}
    steps, points = [], {}
    for row in run.history:
        step = row.get("trainer/global_step", row.get("_step"))
        for name, value in row.items():
            if (name.startswith(_NOT_METRICS) or name.split(".")[0] in media or isinstance(value, bool)
                    or not isinstance(value, (int, float))):
                continue
            points.setdefault(name, []).append((step, float(value)))
        steps.append((step, row.get("kimg")))
    if x == "kimg":
        known = sorted((s, k) for s, k in steps if s is not None and k is not None)
        if known:
            to_kimg = np.array(known, dtype=float).T
            return {name: (np.interp([s for s, _ in pts], *to_kimg), np.array([v for _, v in pts]))
                    for name, pts in points.items()}
    return {name: (np.array([s for s, _ in pts], dtype=float), np.array([v for _, v in pts]))
            for name, pts in points.items()}


def final_and_best(series: Series, goal: str | None) -> tuple[float, tuple[float, float] | None]:
    """The last value, and (best value, its x) when the metric has a direction (non-finite values ignored)."""
    xs, ys = series
    finite = np.isfinite(ys)
    if goal is None or not finite.any():
        return float(ys[-1]), None
    index = int(np.flatnonzero(finite)[(np.argmin if goal == "min" else np.argmax)(ys[finite])])
    return float(ys[-1]), (float(ys[index]), float(xs[index]))


def runs_table(runs: list[RecordedRun], labels: list[str]) -> str:
    rows = [[label, run.id, run.group or "-", run.state, run.source] for label, run in zip(labels, runs, strict=True)]
    return "runs:\n" + _table(["run", "id", "group", "state", "source"], rows)


def config_table(runs: list[RecordedRun], labels: list[str]) -> str:
    differences = config_differences(runs)
    if not differences:
        return "\nconfig differences: none"
    rows = [[key, *(_cell(value) for value in values)] for key, values in differences]
    return f"\nconfig differences ({len(rows)} keys):\n" + _table(["key", *labels], rows)


def metrics_table(series: list[dict[str, Series]], labels: list[str], metrics: list[str]) -> str:
    rows = []
    for metric in metrics:
        cells = []
        for run_series in series:
            if metric not in run_series:
                cells.append("-")
                continue
            final, best = final_and_best(run_series[metric], goal_of(metric))
            cells.append(_number(final) + ("" if best is None else f" (best {_number(best[0])} @ {_number(best[1])})"))
        rows.append([metric, *cells])
    title = "\nmetrics: final value (best @ step where the metric has a direction):\n"
    return title + _table(["metric", *labels], rows)


def plottable(series: list[dict[str, Series]], metrics: list[str]) -> list[str]:
    """Every metric with a finite point in some run, but the run totals (``run/*``: one value at the end, in the
    table)."""
    return [m for m in metrics if not m.startswith("run/")
            and any(m in run_series and np.isfinite(run_series[m][1]).any() for run_series in series)]


def plot_curves(series: list[dict[str, Series]], labels: list[str], plotted: list[str], x: str, out: Path) -> None:
    """One axis per metric with a curve per run (a marker on every point of a short curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(1, min(3, len(plotted)))
    rows = max(1, math.ceil(len(plotted) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.2 * rows), squeeze=False, dpi=100)
    for ax, metric in zip(axes.flat, plotted, strict=False):
        for label, run_series in zip(labels, series, strict=True):
            if metric in run_series:
                xs, ys = run_series[metric]
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=4, label=label)  # one point: a dot
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel("kimg" if x == "kimg" else "generator step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(plotted):]:
        ax.axis("off")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", ncol=min(4, len(labels)), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (3.2 * rows)))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:.4g}"


def _cell(value: Any) -> str:
    text = "-" if value is None else value if isinstance(value, str) else json.dumps(value)
    half = (_MAX_CELL - 3) // 2
    return text if len(text) <= _MAX_CELL else text[:half] + "..." + text[-half:]  # long values differ at the end


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  " + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in [header, *rows])
