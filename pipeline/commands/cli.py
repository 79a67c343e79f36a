"""The ``ganforge`` command: LightningCLI for fit, validate, test and predict, plus ganforge's own subcommands.

Lightning, W&B and the strategies are imported only once a LightningCLI subcommand has passed the cheap checks
(help from its cache, config keys against the source signatures), so help and typos answer in well under 2 s.
Bad input ends in one line naming it (``GANFORGE_TRACEBACK=1`` shows the traceback too).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
USAGE = """usage: ganforge COMMAND [OPTIONS]

GAN training on PyTorch Lightning; every option is a config key (`ganforge fit --config configs/dcgan.yaml`).

commands:
  fit        train (a preset: --config configs/NAME.yaml; any key: --trainer.*, --model.*, --data.*)
  validate   score a checkpoint (--ckpt_path) on the datamodule's evaluation set
  test       the same, as Lightning's test stage
  predict    write a checkpoint's samples to files, by index
  sample     a checkpoint's samples as a PNG grid or scatter plot, or a .pt tensor
  shards     images (a folder, arrays, a named dataset) -> WebDataset shards
  launch     a SLURM batch script for a config (multi-node DDP / DeepSpeed, requeue on preemption)
  compare    recorded runs side by side: config differences, final and best metrics, curves

`ganforge COMMAND --help` lists a command's options.
"""


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return
    command = args[0]
    if command in SUBCOMMANDS:
        with one_line_errors(command):
            importlib.import_module(SUBCOMMANDS[command]).main(args[1:])
        return
    if command not in LIGHTNING_SUBCOMMANDS and not command.startswith("-"):  # options before it: LightningCLI's
        raise SystemExit(f"ganforge: error: no command {command!r}; the commands are "
                         f"{', '.join((*LIGHTNING_SUBCOMMANDS, *SUBCOMMANDS))} (`ganforge --help`)")
    if "-h" in args or "--help" in args:
        from pipeline.commands.help_cache import print_help

        print_help(args, lambda: run_cli(argv))
    with one_line_errors(command):
        if command in LIGHTNING_SUBCOMMANDS:
            from pipeline.commands.config_check import check_config_keys

            check_config_keys(command, args[1:])
        run_cli(argv)  # None: LightningCLI reads sys.argv itself


@contextmanager
def one_line_errors(command: str) -> Iterator[None]:
    """Bad input (a ValueError, a missing file, a data error, Lightning's misconfiguration) as one line that
    names it; a DataLoader worker's error is unwrapped from the traceback text torch wraps it in."""
    try:
        yield
    except Exception as err:
        message = user_error_message(err)
        if message is None or os.environ.get("GANFORGE_TRACEBACK"):
            raise
        raise SystemExit(f"ganforge {command}: error: {message}") from None


def user_error_message(err: BaseException) -> str | None:
    """The one line to show for an error the user can fix, or None for a bug (which keeps its traceback)."""
    text = str(err)
    where = ""
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:  # torch.utils.data's ExceptionWrapper
        header, _, traceback = text.partition("\n")
        where = " (" + header.removeprefix("Caught ").split(" in ", 1)[-1].rstrip(".") + ")"
        last = traceback.rstrip().splitlines()[-1]
        kind, _, text = last.partition(": ")
        return text + where if _is_user_error(kind.rsplit(".", 1)[-1], text) else None
    if type(err).__name__ == "ArgumentError":  # jsonargparse's (the parsers raise rather than print usage)
        return parser_message(text)
    if isinstance(err, RuntimeError) and "torch" in sys.modules:
        from pipeline.strategies.lost_rank import lost_rank_message  # torch is loaded by now

        lost = lost_rank_message(err)
        if lost is not None:
            return lost
    return text if _is_user_error(type(err).__name__, text) else None


_STRUCTURE = ("Does not validate against", "Subtypes:", "Errors:", "Given value")


def parser_message(text: str) -> str:
    """jsonargparse's report, nested once per class in the config, as one line: the full key, then what is
    wrong with it (``model.init_args.lr_schedule: Expected a typing.Literal[...]. Got value: cosine``)."""
    keys: list[str] = []
    message = ""
    for line in text.splitlines():
        line = line.strip().removeprefix("- ").strip()
        key = re.fullmatch(r'Parser key "([^"]+)":(.*)', line)
        if key:
            keys.append(key[1])
            line = key[2].strip()
        elif line.startswith("Problem with given class_path"):
            keys.append("init_args")
            continue
        elif line.startswith("Expected a <class 'NoneType'>"):  # Union's other branch (no class at all)
            break
        if line and not line.startswith(_STRUCTURE):
            message = line
    return f"{'.'.join(keys).removesuffix('.init_args')}: {message}" if keys and message else " ".join(text.split())


# By name: matching them needs no import of the modules that define them (torch, Lightning).
_USER_ERRORS = ("ValueError", "ConfigKeyError", "FileNotFoundError", "NotADirectoryError", "IsADirectoryError",
                "PermissionError", "ConnectionError", "MisconfigurationException", "NonFiniteTrainingError",
                "StorageWriteError", "StorageFullError", "ResumeMismatchError")


def _is_user_error(kind: str, message: str) -> bool:
    return kind in _USER_ERRORS or (kind == "RuntimeError" and message.startswith("data: "))


if __name__ == "__main__":
    main()
