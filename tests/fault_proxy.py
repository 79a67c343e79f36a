"""A real HTTP proxy on 127.0.0.1 that breaks some of the responses it relays, on purpose and a bounded
number of times: it answers with a 5xx, stops sending in the middle of a body (a stall), or closes the
connection in the middle of a body (a reset). In front of the static HTTP server or moto's S3 server it
gives the shard readers the faults of a flaky store, with every request it saw written down.
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "accept-ranges", "content-range"}
_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass
class Faults:
    """What goes wrong, for the requests ``matches(method, path)`` picks; each fault happens ``times`` times
    (the first matching requests), after which those requests are relayed intact."""

    matches: Callable[[str, str], bool] = lambda method, path: method == "GET" and path.endswith(".tar")
    status: int | None = None  # answer with this status (e.g. 503) ...
    stall_after: int | None = None  # ... or send this many bytes of the body, then nothing ...
    reset_after: int | None = None  # ... or this many, then close the connection (a reset)
    times: int = 1
    stall_seconds: float = 20.0  # a stall ends with the connection closed after this (or when the proxy stops)
    ranges: bool = True  # honour Range headers (slicing full bodies itself); False: a server without ranges


@dataclass
class Seen:
    """One request the proxy handled: when, what, and what it did with it."""

    time: float
    method: str
    path: str
    range: str | None
    outcome: str  # "ok", "status", "stall" or "reset"
    stalled_at: float | None = None  # when the stall began (the last byte sent)


@dataclass
class FaultProxy:
    url: str
    faults: Faults
    seen: list[Seen] = field(default_factory=list)

    def requests(self, path_suffix: str = ".tar") -> list[Seen]:
        return [s for s in self.seen if s.method == "GET" and s.path.endswith(path_suffix)]


@contextmanager
def fault_proxy(target: str, faults: Faults) -> Iterator[FaultProxy]:
    """Relay to ``target`` (``http://host:port``), breaking responses as ``faults`` says."""
    backend = urlparse(target)
    stop = threading.Event()
    lock = threading.Lock()
    proxy = FaultProxy("", faults)
    left = [faults.times]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as clients expect of a store

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
            pass

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            wanted = self.headers.get("Range")
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "range", "connection")}
            if wanted and faults.ranges:
                headers["Range"] = wanted  # a backend that ignores it answers 200: sliced below
            with lock:
                fault = faults.matches(self.command, self.path) and left[0] > 0
                left[0] -= fault
            record = Seen(time.monotonic(), self.command, self.path, wanted, "ok")
            proxy.seen.append(record)
            if fault and faults.status is not None:
                record.outcome = "status"
                self.send_response(faults.status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            connection = http.client.HTTPConnection(backend.hostname, backend.port, timeout=30)
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data, status = response.read(), response.status
            reply = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_HEADERS]
            connection.close()
            content_range = response.getheader("Content-Range")
            match = _RANGE.match(wanted or "") if faults.ranges else None
            if status == 200 and match and self.command == "GET":  # slice for a backend without ranges
                start, end = int(match[1]), int(match[2] or len(data) - 1)
                content_range = f"bytes {start}-{min(end, len(data) - 1)}/{len(data)}"
                data, status = data[start:end + 1], 206
            self.send_response(status)
            for name, value in reply:
                self.send_header(name, value)
            if content_range and status == 206:
                self.send_header("Content-Range", content_range)
            if faults.ranges:
                self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", response.getheader("Content-Length", "0") if self.command == "HEAD"
                             else str(len(data)))
            self.end_headers()
            if self.command == "HEAD":
                return
            cut = None if not fault else faults.stall_after if faults.stall_after is not None else faults.reset_after
            if cut is None:
                self.wfile.write(data)
                return
            self.wfile.write(data[:cut])
            self.wfile.flush()
            if faults.stall_after is not None:
                record.outcome, record.stalled_at = "stall", time.monotonic()
                stop.wait(faults.stall_seconds)
            else:
                record.outcome = "reset"
                # SO_LINGER 0: the close sends a TCP reset rather than an orderly end of stream
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _relay

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield proxy
    finally:
        stop.set()  # ends any stall still going on
        server.shutdown()
        server.server_close()
        thread.join()
