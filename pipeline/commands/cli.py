"""The ``ganforge`` command: LightningCLI for fit, validate, test and predict, plus ganforge's own subcommands.

Lightning, W&B and the strategies are imported only for LightningCLI's subcommands, so the others start fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

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
        except (FileNotFoundError, ValueError) as err:  # bad input: one line that names it, no traceback
            raise SystemExit(f"ganforge {args[0]}: error: {err}") from None
        return
    run_cli(argv)  # None: LightningCLI reads sys.argv itself


if __name__ == "__main__":
    main()
