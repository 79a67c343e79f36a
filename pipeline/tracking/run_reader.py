"""Recorded W&B runs read back for comparison: a local run folder (offline runs included) through wandb's own
reader of ``.wandb`` files (``wandb-core leet inspect``, no network needed), a synced run through the W&B API.

wandb 0.31 has no Python reader of ``.wandb`` files any more; the reader that ships in its wandb-core binary
prints every record as one JSON line, which is what is parsed here.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_READ_TIMEOUT_S = 120


@dataclass
class RecordedRun:
    """One W&B run: config (nested), history rows (flat keys, media as ``<key>.<field>``) and final summary."""

    id: str
    name: str | None
    group: str | None
    source: str  # the folder(s) or W&B path it was read from
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    state: str = "unfinished"  # "finished", "failed (exit code N)", or W&B's state for synced runs


def read_runs(sources: list[str], group: str | None = None) -> list[RecordedRun]:
    """Runs from local folders or ``.wandb`` files (every run found under a folder), ``entity/project/run_id``
    paths, or ``entity/project`` with ``group``; only runs of ``group`` are kept when it is given."""
    runs: list[RecordedRun] = []
    for source in sources:
        path = Path(source)
        if path.exists():
            runs += [run for run in read_local_runs(path) if group is None or run.group == group]
        elif source.count("/") in (1, 2) and not source.startswith((".", "/")):
            runs += read_api_runs(source, group)
        else:
            raise FileNotFoundError(f"{source}: no such run folder, and not a W&B path (entity/project/run_id, "
                                    "or entity/project with --group)")
    return runs


def read_local_runs(path: Path) -> list[RecordedRun]:
    """Every run under ``path``; the sessions of a resumed offline run (one folder each) become one run."""
    files = [path] if path.is_file() else sorted(path.rglob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"{path}: no W&B run (run-*.wandb) found")
    sessions = [_read_session(file) for file in files]
    by_id: dict[str, list[tuple[str, RecordedRun]]] = {}
    for start_time, run in sessions:
        by_id.setdefault(run.id, []).append((start_time, run))
    return [_merge([run for _, run in sorted(parts, key=lambda part: part[0])]) for parts in by_id.values()]


def wandb_records(file: Path) -> Iterator[dict[str, Any]]:
    """The records of a ``.wandb`` file as dicts, read by wandb's own reader."""
    from wandb.util import get_core_path  # wandb is imported only when runs are read

    command = [get_core_path(), "leet", "inspect", "--json", "--no-observability", "--run-file", str(file),
               str(file.parent.parent)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=_READ_TIMEOUT_S)
    if done.returncode != 0:
        raise ValueError(f"{file}: wandb could not read it: {done.stderr.strip() or done.stdout.strip()}")
    for line in done.stdout.splitlines():
        if line.strip():
            yield json.loads(line)


def _read_session(file: Path) -> tuple[str, RecordedRun]:
    run = RecordedRun(id=file.stem.removeprefix("run-"), name=None, group=None, source=str(file.parent))
    start_time = ""
    for record in wandb_records(file):
        kind = record.get("type")
        body = record.get(kind) or {}
        if kind == "run":
            run.id = body.get("run_id", run.id)
            run.name, run.group = body.get("display_name"), body.get("run_group")
            start_time = body.get("start_time", "")
            _update_config(run.config, body.get("config") or {})
        elif kind == "config":
            _update_config(run.config, body)
        elif kind == "history":
            run.history.append({key: _number(value) for key, value in (body.get("item") or {}).items()})
        elif kind == "summary":
            run.summary.update({key: _number(value) for key, value in (body.get("update") or {}).items()})
            for key in body.get("remove") or []:
                run.summary.pop(key, None)
        elif kind == "exit":
            code = body.get("exit_code", 0)
            run.state = "finished" if code == 0 else f"failed (exit code {code})"
    return start_time, run


def _update_config(config: dict[str, Any], change: dict[str, Any]) -> None:
    config.update({key: value for key, value in (change.get("update") or {}).items() if key != "_wandb"})
    for key in change.get("remove") or []:
        config.pop(key, None)


def _number(value: Any) -> Any:
    """JSON cannot hold inf/nan: W&B writes them as strings."""
    return float(value) if value in ("Infinity", "-Infinity", "NaN") else value


def _merge(sessions: list[RecordedRun]) -> RecordedRun:
    """A resumed offline run, one folder per session, as one run (later sessions extend and override)."""
    run = sessions[0]
    for later in sessions[1:]:
        run.config.update(later.config)
        run.history += later.history
        run.summary.update(later.summary)
        run.name, run.group = later.name or run.name, later.group or run.group
        run.state, run.source = later.state, f"{run.source} + {later.source}"
    return run


def read_api_runs(path: str, group: str | None) -> list[RecordedRun]:
    """Synced runs through the W&B API (needs network and an API key)."""
    import wandb

    api = wandb.Api()
    if path.count("/") == 2:
        found = [api.run(path)]
        found = [run for run in found if group is None or run.group == group]
    elif group is None:
        raise ValueError(f"{path}: a project needs --group to say which of its runs to compare")
    else:
        found = list(api.runs(path, filters={"group": group}))
    return [RecordedRun(id=run.id, name=run.name, group=run.group, source="/".join(run.path),
                        config={k: v for k, v in run.config.items() if k != "_wandb"},
                        history=[_flat_row(row) for row in run.scan_history()],
                        summary=_flat_row(dict(run.summary)), state=run.state)
            for run in found]


def _flat_row(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update(_flat_row(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = _number(value)
    return flat
