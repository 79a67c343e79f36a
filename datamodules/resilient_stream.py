"""Reading a remote file start to end through stalls, dropped connections and transient server errors.

Measured (stack-facts.md): through fsspec a server that stops sending mid-body holds the reader for the
HTTP client's default timeout (minutes), and one that closes early raises ClientPayloadError; neither is
retried. Here a stall is "no bytes for ``read_timeout`` seconds" (the store client's socket-read timeout,
set from it), and a stall, a reset or a 5xx is retried from the byte where the stream stopped: a Range
request where the store honours one (S3, most HTTP servers), else a fresh GET whose first bytes are skipped.
Retries are bounded (``retries``) with exponential backoff; then the error is raised for the caller to skip
the rest of the file. A store client's own retries are turned off where they would stack with these
(botocore's 5xx retries, s3fs's retries of timeouts and dropped connections), so ``retries`` is the bound.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlparse

import fsspec

_STREAMED = ("http", "https")  # read as one streamed GET (block_size 0): servers without ranges work too
_S3 = ("s3", "s3a")


@dataclass(frozen=True)
class RetryPolicy:
    """``read_timeout``: seconds without a byte that make a stall; ``retries``: re-opens of one file before it
    is given up; ``backoff``: seconds before the first re-open, doubled before each next one."""

    read_timeout: float = 20.0
    retries: int = 3
    backoff: float = 0.5

    def __post_init__(self):
        if self.read_timeout <= 0 or self.retries < 0 or self.backoff < 0:
            raise ValueError(f"bad retry policy {self}: read_timeout must be > 0, retries and backoff >= 0 "
                             "(data.read_timeout, data.read_retries)")

    def store_options(self, url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
        """fsspec options that make the store's client time out after ``read_timeout`` without a byte (and
        leave the retrying to this module); the user's own options win."""
        options = dict(storage_options or {})
        scheme = urlparse(url).scheme
        if scheme in _STREAMED:
            import aiohttp  # fsspec's http client

            client = dict(options.get("client_kwargs") or {})
            client.setdefault("timeout", aiohttp.ClientTimeout(total=None, sock_connect=self.read_timeout,
                                                               sock_read=self.read_timeout))
            options["client_kwargs"] = client
        elif scheme in _S3:
            config = dict(options.get("config_kwargs") or {})
            config.setdefault("read_timeout", self.read_timeout)
            config.setdefault("connect_timeout", self.read_timeout)
            config.setdefault("retries", {"max_attempts": 0})  # botocore's 5xx retries: these are the bound
            options["config_kwargs"] = config
        return options


@dataclass(frozen=True)
class ReadRetry:
    """One re-open: where the stream stopped, why, after how long without a byte, and the wait before it."""

    url: str
    position: int
    attempt: int
    retries: int
    error: str
    silent_for: float  # seconds from the last byte (or the open) to the error: a stall's detection time
    delay: float

    def __str__(self) -> str:
        return (f"{self.url}: {self.error} at byte {self.position} (after {self.silent_for:.1f} s without a "
                f"byte); retry {self.attempt}/{self.retries} in {self.delay:.1f} s")


class ShardReadError(OSError):
    """A file given up after its retries; the message says where and why."""


def describe_transient(err: BaseException) -> str | None:
    """What kind of transient fault ``err`` (or an error it wraps) is: "stalled", "connection reset",
    "server error 503", ...; None for errors a retry cannot fix (not found, refused, corrupt data)."""
    import aiohttp

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, TimeoutError):  # fsspec's FSTimeoutError, aiohttp's and botocore's read timeouts
            return "stalled"
        if isinstance(seen, (ConnectionError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError)):
            return f"connection lost ({type(seen).__name__})"
        status = _http_status(seen)
        if status is not None and (status >= 500 or status == 429):
            return f"server error {status}"
        if _is_botocore_transport_error(seen):
            return f"connection lost ({type(seen).__name__})"
        seen = seen.__cause__ or seen.__context__
    return None


def _http_status(err: BaseException) -> int | None:
    status = getattr(err, "status", None)  # aiohttp's ClientResponseError
    if isinstance(status, int):
        return status
    response = getattr(err, "response", None)  # botocore's ClientError (s3fs raises OSError from it)
    if isinstance(response, dict):
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def _is_botocore_transport_error(err: BaseException) -> bool:
    try:
        from botocore.exceptions import HTTPClientError
    except ImportError:
        return False
    return isinstance(err, HTTPClientError)


class ResilientStream(io.RawIOBase):
    """A remote file read from its start to its end, re-opened at the byte where a transient fault stopped it.

    ``on_retry`` hears of every re-open (to count and report them). A stream that ends before the size the
    store reported is a fault too (a connection closed early without an error).
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None, policy: RetryPolicy,
                 on_retry: Callable[[ReadRetry], None] | None = None):
        super().__init__()
        self.url, self.policy, self.on_retry = url, policy, on_retry
        self.fs, self.path = fsspec.core.url_to_fs(url, **policy.store_options(url, storage_options))
        if urlparse(url).scheme in _S3:
            # s3fs retries timeouts and resets 5 times itself (a class attribute, no option): 5 x read_timeout
            # per stall before these retries begin. The options above give readers an instance of their own.
            self.fs.retries = 1
        self.streamed = urlparse(url).scheme in _STREAMED
        self.position = 0
        self.retries_made = 0
        self.size: int | None = None
        self._raw: IO[bytes] | None = None
        self._last_byte = time.monotonic()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            try:
                if self._raw is None:
                    self._open()
                data = self._raw.read(len(buffer))
                if not data and self.size is not None and self.position < self.size:
                    raise ConnectionError(f"the stream ended at byte {self.position} of {self.size}")
            except Exception as err:  # noqa: BLE001 - sorted below: transient faults are retried
                self._retry_or_raise(err)
                continue
            buffer[:len(data)] = data
            self.position += len(data)
            self._last_byte = time.monotonic()
            return len(data)

    def _open(self) -> None:
        """Open at ``position``: a ranged GET (or a seek) where the store allows, else skip the bytes read."""
        if not self.streamed:  # random-access files (S3's): a seek is a range request
            raw = self.fs.open(self.path, "rb")
            raw.seek(self.position)
            self._raw, self.size = raw, getattr(raw, "size", None)
            return
        if self.size is None:
            self.size = self.fs.size(self.path)  # HEAD, once: the re-opens are told the size
        headers = dict(self.fs.kwargs.get("headers") or {})
        if self.position:
            headers["Range"] = f"bytes={self.position}-"
        raw = self.fs.open(self.path, "rb", block_size=0, size=self.size, headers=headers)
        self._raw = raw
        response = getattr(raw, "r", None)  # fsspec's streamed HTTP file keeps the aiohttp response
        honoured = response is not None and response.status == 206
        skip = 0 if honoured else self.position
        while skip:  # the server sent the file from its start: drop what was read before
            dropped = raw.read(min(skip, 1 << 20))
            if not dropped:
                raise ConnectionError(f"the stream ended at byte {self.position - skip} while skipping to "
                                      f"byte {self.position}")
            skip -= len(dropped)
            self._last_byte = time.monotonic()

    def _retry_or_raise(self, err: Exception) -> None:
        failed_after = time.monotonic() - self._last_byte
        self._drop()
        kind = describe_transient(err)
        if kind is None:
            raise err
        if self.retries_made >= self.policy.retries:
            raise ShardReadError(f"{self.url}: {kind} at byte {self.position}, gave up after "
                                 f"{self.retries_made} retries ({type(err).__name__}: {err})") from err
        self.retries_made += 1
        delay = self.policy.backoff * 2 ** (self.retries_made - 1)
        if self.on_retry is not None:
            self.on_retry(ReadRetry(self.url, self.position, self.retries_made, self.policy.retries, kind,
                                    failed_after, delay))
        time.sleep(delay)
        self._last_byte = time.monotonic()

    def _drop(self) -> None:
        if self._raw is not None:
            with suppress(Exception):  # a broken connection may fail to close too
                self._raw.close()
            self._raw = None

    def close(self) -> None:
        self._drop()
        super().close()
