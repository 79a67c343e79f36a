"""A config's keys checked against the signatures they configure before Lightning is imported.

LightningCLI can only parse once Lightning, torch and the strategies are imported (~5 s on a small machine), so
a typo in a preset or an option waited that long for its error. Here the same key check runs on the source
files: the configs (YAML) and ``--a.b.c`` options are merged, and every key under ``trainer``, or under a
``class_path``'s ``init_args``, is looked up in that class's ``__init__`` as written in its module, read with
``ast`` (nothing is imported). What cannot be resolved so (``**kwargs``, a class made at run time, a short class
name) is left to LightningCLI's full check, which still runs: this check only refuses what is certainly wrong.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import re
from contextlib import suppress
from functools import cache
from pathlib import Path
from typing import Any

import yaml

# LightningCLI's own keys beside each subcommand's Trainer-method arguments (LightningCLI.subcommands() skips
# the ones it fills itself); tests/test_cli.py checks this against the real parser.
_CLI_KEYS = {"config", "seed_everything", "trainer", "model", "data", "optimizer", "lr_scheduler"}
_SKIPPED = {"fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
            "validate": {"model", "dataloaders", "datamodule"}, "test": {"model", "dataloaders", "datamodule"},
            "predict": {"model", "dataloaders", "datamodule"}}
_TRAINER = "pytorch_lightning.trainer.trainer.Trainer"
_ACTIONS = {"print_config", "help", "config"}  # options that are not config keys
_CLASS_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


class ConfigKeyError(ValueError):
    """A key that no signature takes: names it, where it came from, and the nearest accepted key."""


def check_config_keys(subcommand: str, args: list[str]) -> None:
    """Raise ConfigKeyError for the first key of ``--config`` files or ``--a.b`` options that cannot be right."""
    tree: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    for source, values in _sources(args):
        _merge(tree, values, (), source, origins)
    allowed = _CLI_KEYS | (_method_parameters(_TRAINER, subcommand) - _SKIPPED[subcommand])
    for key in tree:
        if key not in allowed:
            raise _unknown((key,), allowed, f"ganforge {subcommand}", origins)
    if isinstance(tree.get("trainer"), dict):
        _check_init_args(tree["trainer"], _TRAINER, ("trainer",), origins)
    for key, value in tree.items():
        if key != "trainer":
            _check_value(value, (key,), origins)


def _sources(args: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(where, nested values) for each ``--config`` file and each dotted option, in command-line order."""
    sources: list[tuple[str, dict[str, Any]]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, has_value, value = arg.partition("=")
        if not has_value and i + 1 < len(args) and not args[i + 1].startswith("--"):
            value, i = args[i + 1], i + 1
        i += 1
        if name in ("--config", "-c") and value:
            path = Path(value)
            if not path.is_file():
                if path.suffix in (".yaml", ".yml", ".json"):
                    raise FileNotFoundError(f"--config {value}: no such file")
                continue  # a config given inline (jsonargparse takes YAML text too): its parser checks it
            loaded = yaml.safe_load(path.read_text())
            if isinstance(loaded, dict):
                sources.append((value, loaded))
        elif name.startswith("--") and name[2:].split(".")[0] not in _ACTIONS and not name.endswith(("+", ".help")):
            nested: dict[str, Any] = {}
            *parents, leaf = name[2:].split(".")
            option = _option_value(value)
            if leaf == "class_path" and parents:  # --model.class_path X is --model X
                *parents, leaf = parents
                option = _Replaces(class_path=value)
            node = nested
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = option
            sources.append(("the command line", nested))
    return sources


class _Replaces(dict):
    """An option that names a class (``--model pkg.Class``) or gives a whole group: it replaces what the
    configs said there, so their init_args are not checked against the new class."""


def _option_value(value: str) -> Any:
    if _CLASS_PATH.fullmatch(value):
        return _Replaces(class_path=value)
    if value.lstrip().startswith("{"):
        with suppress(yaml.YAMLError):
            loaded = yaml.safe_load(value)
            if isinstance(loaded, dict):
                return _Replaces(loaded)
    return value


def _merge(tree: dict[str, Any], values: dict[str, Any], path: tuple[str, ...], source: str,
           origins: dict[tuple[str, ...], str]) -> None:
    for key, value in values.items():
        key = str(key)
        if key.endswith("+"):  # jsonargparse's append: ``callbacks+: [...]`` adds to the list
            key = key[:-1]
            before = tree.get(key) if isinstance(tree.get(key), list) else []
            value = before + (value if isinstance(value, list) else [value])
        origins[(*path, key)] = source
        if isinstance(value, dict) and isinstance(tree.get(key), dict) and not isinstance(value, _Replaces):
            _merge(tree[key], value, (*path, key), source, origins)
        elif isinstance(value, dict):
            tree[key] = {}
            _merge(tree[key], value, (*path, key), source, origins)
        else:
            tree[key] = value


def _check_value(value: Any, path: tuple[str, ...], origins: dict[tuple[str, ...], str]) -> None:
    """A ``{class_path, init_args}`` anywhere below (lists included) is checked against its class."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_value(item, (*path, str(index)), origins)
    elif isinstance(value, dict) and isinstance(value.get("class_path"), str):
        init_args = value.get("init_args")
        if isinstance(init_args, dict):
            _check_init_args(init_args, value["class_path"], (*path, "init_args"), origins)


def _check_init_args(init_args: dict[str, Any], class_path: str, path: tuple[str, ...],
                     origins: dict[tuple[str, ...], str]) -> None:
    accepted = _init_parameters(class_path)
    for key, value in init_args.items():
        if accepted is not None and key not in accepted:
            raise _unknown((*path, key), accepted, class_path, origins)
        _check_value(value, (*path, key), origins)


def _unknown(path: tuple[str, ...], accepted: set[str], owner: str, origins: dict[tuple[str, ...], str]
             ) -> ConfigKeyError:
    key = path[-1]
    close = difflib.get_close_matches(key, sorted(accepted), n=1)
    hint = f"did you mean {close[0]}?" if close else f"it takes: {', '.join(sorted(accepted))}"
    where = next((origins[path[:n]] for n in range(len(path), 0, -1) if path[:n] in origins), "the config")
    return ConfigKeyError(f"{where}: {'.'.join(path)} is not an option of {owner}; {hint}")


# ---- signatures from source ---------------------------------------------------------------------------
def _init_parameters(class_path: str) -> set[str] | None:
    """The keyword arguments ``class_path``'s constructor takes, or None where the source does not say."""
    module, _, name = class_path.rpartition(".")
    return _class_parameters(module, name, "__init__") if module else None


def _method_parameters(class_path: str, method: str) -> set[str]:
    module, _, name = class_path.rpartition(".")
    return _class_parameters(module, name, method) or set()


@cache
def _class_parameters(module: str, name: str, method: str, depth: int = 0) -> set[str] | None:
    found = _find_class(module, name)
    if found is None or depth > 8:
        return None
    tree, cls = found
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == method:
            arguments = node.args
            if arguments.vararg is not None or arguments.kwarg is not None:
                return None  # forwarded elsewhere: jsonargparse follows that, this check does not
            names = [a.arg for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)]
            return set(names[1:] if names and names[0] in ("self", "cls") else names)
    if not cls.bases and not cls.decorator_list:  # object's constructor (a decorator, e.g. dataclass, may add one)
        return set()
    if len(cls.bases) != 1 or cls.decorator_list:  # no constructor of its own: the (single) base's
        return None
    base = _qualified(cls.bases[0], tree, module)
    return None if base is None else _class_parameters(*base, method, depth + 1)


def _find_class(module: str, name: str, depth: int = 0) -> tuple[ast.Module, ast.ClassDef] | None:
    """The class's definition, following ``from x import Name`` re-exports (package ``__init__`` files)."""
    file = _module_file(module)
    if file is None or depth > 8:
        return None
    tree = _parse(file)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return tree, node
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    source = _absolute(node, module, file)
                    return None if source is None else _find_class(source, alias.name, depth + 1)
    return None


def _qualified(base: ast.expr, tree: ast.Module, module: str) -> tuple[str, str] | None:
    """(module, class) of a base class written as ``Name`` or ``alias.Name`` in ``module``."""
    if isinstance(base, ast.Name):
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == base.id:
                return module, base.id
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if (alias.asname or alias.name) == base.id:
                        source = _absolute(node, module, _module_file(module))
                        return None if source is None else (source, alias.name)
    if isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name):
        for node in tree.body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if (alias.asname or alias.name) == base.value.id:
                        return alias.name, base.attr
    return None


def _absolute(node: ast.ImportFrom, module: str, file: Path | None) -> str | None:
    if node.level == 0:
        return node.module
    package = module if file is not None and file.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


@cache
def _module_file(module: str) -> Path | None:
    """The source file of a module, found without importing it (nor its package: find_spec on a dotted name
    would import the parents)."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin)
    if not rest:
        return path if path.suffix == ".py" else None
    base = path.parent.joinpath(*rest)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def _parse(file: Path) -> ast.Module:
    return ast.parse(file.read_text(), str(file))
