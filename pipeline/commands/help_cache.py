"""``ganforge fit --help`` (and validate / test / predict) from a cache, so that help does not wait ~5 s for
Lightning and torch to import.

The help is LightningCLI's own text, generated once by the real parser and kept under ``~/.cache/ganforge/help``,
keyed by the arguments, the terminal width, the versions of Lightning and jsonargparse, and the size and time of
every ganforge source file and config file named: any change there makes a new entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

_PACKAGES = ("pipeline", "modules", "datamodules")
_REPO = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    return Path(os.environ.get("GANFORGE_CACHE", Path.home() / ".cache" / "ganforge")) / "help"


def help_key(args: list[str]) -> str:
    stamps = []
    for package in _PACKAGES:
        for file in sorted((_REPO / package).rglob("*.py")):
            stat = file.stat()
            stamps.append((str(file.relative_to(_REPO)), stat.st_size, stat.st_mtime_ns))
    for arg in args:  # configs named on the command line: their values are the defaults shown
        if os.path.isfile(arg):
            stat = os.stat(arg)
            stamps.append((os.path.abspath(arg), stat.st_size, stat.st_mtime_ns))
    record = {"args": args, "columns": shutil.get_terminal_size().columns, "versions": _versions(),
              "files": stamps}
    return hashlib.sha256(json.dumps(record).encode()).hexdigest()[:32]


def print_help(args: list[str], generate: Callable[[], None]) -> None:
    """Print the cached help for ``args``, or run ``generate`` (the real CLI, which prints its help and exits)
    and keep what it printed. Exits 0 as argparse does after help."""
    file = cache_dir() / f"{help_key(args)}.txt"
    if file.is_file():
        sys.stdout.write(file.read_text())
        raise SystemExit(0)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            generate()
    except SystemExit as exit_info:
        if exit_info.code not in (0, None):
            sys.stdout.write(captured.getvalue())
            raise
    text = captured.getvalue()
    sys.stdout.write(text)
    if text:
        file.parent.mkdir(parents=True, exist_ok=True)
        partial = file.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(text)
        os.replace(partial, file)
    raise SystemExit(0)


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for package in ("pytorch-lightning", "jsonargparse", "torch"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found
