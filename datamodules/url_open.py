"""Opening shard URLs: local paths, ``pipe:`` commands and every fsspec protocol (http, s3, gs, ...).

webdataset opens http with curl and has no fsspec support; going through fsspec gives one code path for
every store, with credentials taken from the environment the way each store's own tools take them.
"""

from __future__ import annotations

import io
import os
import posixpath
import threading
from collections.abc import Callable
from typing import IO, Any
from urllib.parse import urlparse

import fsspec
from webdataset.gopen import gopen_pipe
from webdataset.shardlists import expand_urls

from datamodules.atomic_write import AtomicFile
from datamodules.resilient_stream import ReadRetry, ResilientStream, RetryPolicy

# Storage options end up in the logged config: secrets belong in the environment (AWS_*, GOOGLE_*, ...).
_SECRET_WORDS = ("secret", "token", "password", "key", "credential")
_BUFFER = 1 << 20


def is_local(url: str) -> bool:
    scheme = urlparse(url).scheme
    return scheme in ("", "file") or len(scheme) == 1  # a Windows drive letter is not a scheme


def local_path(url: str) -> str:
    return urlparse(url).path if url.startswith("file://") else url


def _fsspec_options(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    # Stream http bodies instead of issuing range requests: one GET per shard, and servers without
    # range support work too.
    options: dict[str, Any] = {"block_size": 0} if urlparse(url).scheme in ("http", "https") else {}
    options.update(storage_options or {})
    return options


def open_url(url: str, storage_options: dict[str, Any] | None = None, policy: RetryPolicy | None = None,
             on_retry: Callable[[ReadRetry], None] | None = None) -> IO[bytes]:
    """A readable binary stream for ``url``; the caller closes it. Remote files are re-opened where they
    stopped after a stall, a reset or a 5xx (``policy``; ``on_retry`` hears of each re-open)."""
    if url.startswith("pipe:"):
        return gopen_pipe(url)  # its close() raises if the command failed
    if is_local(url):
        return open(local_path(url), "rb")
    # tarfile reads in 10 KiB pieces, and each read of an async fsspec file is a round trip to its
    # event-loop thread: a large buffer in front makes loopback HTTP as fast as local disk.
    stream = ResilientStream(url, _fsspec_options(url, storage_options), policy or RetryPolicy(), on_retry)
    return io.BufferedReader(stream, _BUFFER)


def write_url(url: str, data: bytes, storage_options: dict[str, Any] | None = None) -> None:
    with open_for_writing(url, storage_options) as stream:
        stream.write(data)


def open_for_writing(url: str, storage_options: dict[str, Any] | None = None) -> IO[bytes]:
    """A writable binary stream whose file appears, complete, only when it is closed (local parent folders
    are created; a full disk raises StorageFullError). An object store writes an object whole anyway."""
    if is_local(url):
        path = local_path(url)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return AtomicFile(path)
    return fsspec.open(url, "wb", **(storage_options or {})).open()


def join_url(base_file: str, name: str) -> str:
    """``name`` relative to the folder holding ``base_file``, unless it is absolute itself."""
    if "://" in name or name.startswith(("/", "pipe:")):
        return name
    if is_local(base_file):
        return os.path.join(os.path.dirname(local_path(base_file)), name)
    return posixpath.join(base_file.rsplit("/", 1)[0], name)


def expand_shard_urls(urls: str | list[str]) -> list[str]:
    """Brace patterns (``shard-{000000..000099}.tar``), also ``::``-joined, into a flat list."""
    patterns = [urls] if isinstance(urls, str) else list(urls)
    return [url for pattern in patterns for url in expand_urls(pattern)]


def check_storage_options(storage_options: dict[str, Any] | None, prefix: str = "data.storage_options"):
    """Refuse credentials in storage options, at any depth."""
    for name, value in (storage_options or {}).items():
        if any(word in name.lower() for word in _SECRET_WORDS):
            raise ValueError(f"{prefix}.{name}: credentials must not be in the config (it is logged); set "
                             "them in the environment (AWS_ACCESS_KEY_ID, ...)")
        if isinstance(value, dict):  # client_kwargs and the like
            check_storage_options(value, f"{prefix}.{name}")


def check_reachable(url: str, storage_options: dict[str, Any] | None = None, timeout: float = 30.0) -> None:
    """Fail fast, naming the URL, when a shard or index cannot be reached (pipe: commands are not run)."""
    if url.startswith("pipe:"):
        return
    if is_local(url):
        if not os.path.isfile(local_path(url)):
            raise FileNotFoundError(f"{url}: no such file; check the path, or write it with ganforge shards")
        return
    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            fs, path = fsspec.core.url_to_fs(url, **_fsspec_options(url, storage_options))
            fs.info(path)
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 - reported below with the URL
            outcome.append(err)

    # A daemon thread: a store that never answers must not keep the process alive either.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise ConnectionError(f"{url}: no answer within {timeout:.0f} s; check the URL and the network")
    if outcome[0] is not None:
        err = outcome[0]
        if isinstance(err, FileNotFoundError):
            # fsspec's http reports a refused connection this way too
            raise FileNotFoundError(f"{url}: not found, or its server unreachable; check the URL") from None
        raise ConnectionError(f"{url}: unreachable ({type(err).__name__}: {err}); check the URL, the server"
                              " and the credentials in the environment") from None
