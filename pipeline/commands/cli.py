"""The ``ganforge`` command: LightningCLI for fit, validate, test and predict, plus ganforge's own subcommands.

Lightning, W&B and the strategies are imported only for LightningCLI's subcommands, so the others start fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

from datamodules.atomic_write import StorageWriteError

if TYPE_CHECKING:
    from pipeline.commands.fit import GanForgeCLI


def run_cli(args: list[str] | None = None, run: bool = True) -> GanForgeCLI:
    """``ganforge fit|validate|test|predict ARGS`` (or, with ``run=False``, the parsed fit config's model,
    datamodule and trainer)."""
    from pipeline.commands.fit import build_cli

    return build_cli(args, run)


# ganforge's own subcommands: name -> module with a ``main(argv)``.
SUBCOMMANDS = {
    "sample": "pipeline.commands.sample",
    "shards": "pipeline.commands.shards",
    "launch": "pipeline.commands.launch",
    "compare": "pipeline.commands.compare",
}


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        command = importlib.import_module(SUBCOMMANDS[args[0]])
        try:
            command.main(args[1:])
        except (FileNotFoundError, ValueError, StorageWriteError) as err:  # one line that names it, no traceback
            raise SystemExit(f"ganforge {args[0]}: error: {err}") from None
        return
    from modules.step_health import NonFiniteTrainingError
    from pipeline.strategies.lost_rank import lost_rank_message

    try:
        run_cli(argv)  # None: LightningCLI reads sys.argv itself
    except (NonFiniteTrainingError, StorageWriteError) as err:  # a diverged run, a full disk: one line, no traceback
        raise SystemExit(f"ganforge: error: {err}") from None
    except RuntimeError as err:
        message = lost_rank_message(err)
        if message is None:
            raise
        raise SystemExit(f"ganforge: error: {message}") from None


if __name__ == "__main__":
    main()
