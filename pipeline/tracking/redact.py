"""Secret redaction for everything a run records (config, run record, command line).

A run's record is uploaded and shared, so keys, tokens, passwords and storage credentials must never reach
it: values under secret-looking names are replaced, and so is every occurrence of a secret's value
elsewhere (a credential from the environment pasted into a URL or a command line, say).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

REDACTED = "<redacted>"
_SECRET_WORDS = ("secret", "token", "passw", "credential", "signature", "authorization", "cookie", "private")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_MIN_SECRET_LENGTH = 6  # shorter values ("1", "true") are not scrubbed wherever they appear
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:)[^/\s@]+(?=@)")
_URL_QUERY_PARAM = re.compile(r"(?P<head>[?&](?P<name>[^=&#\s]+)=)(?P<value>[^&#\s]*)")


def is_secret_name(name: str) -> bool:
    """Names like ``api_key``, ``AWS_ACCESS_KEY_ID``, ``secret``, ``HF_TOKEN``, ``password``, ``credentials``."""
    lowered = name.lower()
    if any(word in lowered for word in _SECRET_WORDS):
        return True
    words = _NON_ALNUM.split(_CAMEL_BOUNDARY.sub("_", name).lower())
    return any(word.endswith("key") for word in words)


def environment_secrets(environ: Mapping[str, str] | None = None) -> set[str]:
    """Values of environment variables with secret-looking names (WANDB_API_KEY, AWS_SECRET_ACCESS_KEY, ...)."""
    environ = os.environ if environ is None else environ
    return {value for name, value in environ.items() if is_secret_name(name) and len(value) >= _MIN_SECRET_LENGTH}


def redact(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of a config-like tree (dicts, lists, strings) with every secret replaced by ``<redacted>``.

    Secrets are the values under secret-looking keys anywhere in the tree, the environment's secrets and
    ``secrets``; each is also scrubbed from every other string (URLs, paths, free text).
    """
    known = set(secrets) | environment_secrets() | _secrets_under_secret_keys(value)
    return _redact(value, sorted((s for s in known if len(s) >= _MIN_SECRET_LENGTH), key=len, reverse=True))


def redact_argv(argv: list[str], secrets: Iterable[str] = ()) -> list[str]:
    """A command line with secrets removed: values of secret-looking options (``--x.secret V``, ``--x.token=V``),
    secrets inside inline YAML/JSON values (``--data.init_args.storage_options '{key: ..., secret: ...}'``),
    and any known secret's value."""
    known = set(secrets)
    out: list[str] = []
    for arg in argv:
        option, eq, value = arg.partition("=")
        previous = out[-1] if out else ""
        if _is_secret_option(previous) and "=" not in previous and not arg.startswith("--"):
            known.add(arg)
            out.append(REDACTED)
        elif eq and _is_secret_option(option):
            known.add(value)
            out.append(f"{option}={REDACTED}")
        else:
            known |= _secrets_under_secret_keys(_parse_inline(value if eq and arg.startswith("--") else arg))
            out.append(arg)
    return [redact_text(arg, known) for arg in out]


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL passwords, secret-looking URL query parameters and the given secrets replaced."""
    ordered = sorted((s for s in set(secrets) | environment_secrets() if len(s) >= _MIN_SECRET_LENGTH),
                     key=len, reverse=True)
    return _scrub(text, ordered)


def _is_secret_option(arg: str) -> bool:
    return arg.startswith("--") and is_secret_name(arg[2:].partition("=")[0].split(".")[-1])


def _holds_secret(value: Any) -> bool:
    """Strings and containers under a secret-looking key are secrets; flags, numbers and None are not."""
    return isinstance(value, (str, Mapping, list, tuple)) and value not in ("", {}, [], ())


def _redact(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, Mapping):
        return {key: REDACTED if is_secret_name(str(key)) and _holds_secret(value[key])
                else _redact(value[key], secrets) for key in value}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact(item, secrets) for item in value)
    if isinstance(value, str):
        return _scrub(value, secrets)
    return value


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    text = _URL_PASSWORD.sub(lambda m: m["head"] + REDACTED, text)
    return _URL_QUERY_PARAM.sub(lambda m: m["head"] + REDACTED if is_secret_name(m["name"]) else m[0], text)


def _secrets_under_secret_keys(value: Any, under_secret: bool = False) -> set[str]:
    """Every string under a secret-looking key (nested containers included)."""
    if isinstance(value, str):
        return {value} if under_secret else set()
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return set()
    found: set[str] = set()
    for key, item in items:
        found |= _secrets_under_secret_keys(item, under_secret or (isinstance(key, str) and is_secret_name(key)))
    return found


def _parse_inline(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None
