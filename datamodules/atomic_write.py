"""Files that appear whole or not at all: written under a temporary name in the same folder, flushed to the
disk (fsync), then renamed over the final name (os.replace is atomic within a filesystem).

A full disk mid-write thus never leaves a truncated file under a name a reader or a resume would pick, and
never destroys the file being replaced; it raises StorageFullError, one line naming the file, the bytes it
needed and the bytes free. A store that refuses the write otherwise (read-only, no permission) raises
StorageWriteError, one line naming the file and the reason.
"""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import suppress

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
PARTIAL_SUFFIX = ".partial"  # ".<name>.partial": hidden, and no reader's pattern (*.tar, *.ckpt, last*) matches


class StorageWriteError(OSError):
    """A file the store refused to take; the message (one line) names it, says why and what to do."""

    def __init__(self, path: str, reason: str, hint: str, code: int | None):
        super().__init__(f"{path}: not written, {reason}; {hint}")
        self.errno, self.path = code, path


class StorageFullError(StorageWriteError):
    """A write that did not fit: ``path``, the bytes ``needed`` (at least) and the bytes ``free``."""

    def __init__(self, path: str, needed: int, free: int, exact: bool, hint: str):
        folder = os.path.dirname(os.path.abspath(path))
        amount = f"{needed:,} bytes" if exact else f"at least {needed:,} bytes"
        super().__init__(path, f"no space left: it needs {amount} and {folder} has {free:,} bytes free", hint,
                         errno.ENOSPC)
        self.needed, self.free = needed, free


def free_bytes(folder: str) -> int:
    return shutil.disk_usage(folder).free


def partial_path(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}{PARTIAL_SUFFIX}")


class AtomicFile:
    """A binary file written to ``.<name>.partial`` and renamed to ``path`` at ``close()`` (``discard()``,
    or leaving a ``with`` block by an exception, removes it instead). With ``needed`` (the final size, when
    known) a disk without that much free space is refused before a byte is written. Writes after a discard
    go nowhere, so that a wrapping writer's own final flush (tarfile's, at garbage collection) does not fail
    a second time.
    """

    def __init__(self, path: str, needed: int | None = None,
                 hint: str = "free space there or write elsewhere"):
        self.path, self.hint = os.fspath(path), hint
        self.temp = partial_path(self.path)
        self.folder = os.path.dirname(self.temp)
        self.written = 0
        self.needed = needed
        self.discarded = False
        if needed is not None and free_bytes(self.folder) < needed:
            raise StorageFullError(self.path, needed, free_bytes(self.folder), exact=True, hint=hint)
        try:
            self._file = open(self.temp, "wb")  # a stale one from a killed writer is overwritten
        except OSError as err:
            self._fail(err, 0)

    def write(self, data) -> int:
        if self.discarded:
            return len(data)
        try:
            count = self._file.write(data)
        except OSError as err:
            self._fail(err, len(data))
        self.written += count
        return count

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        """Makes the file durable, then gives it its name."""
        if self._file.closed:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self.temp, self.path)
        except OSError as err:
            self._fail(err, 0)
        with suppress(OSError):  # the rename itself is durable once the folder is synced (not on every OS)
            folder = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)

    def discard(self) -> None:
        self.discarded = True
        with suppress(OSError):
            self._file.close()
        with suppress(FileNotFoundError):
            os.remove(self.temp)

    def _fail(self, err: OSError, pending: int):
        """Removes the partial file; raises StorageFullError for a full disk, else StorageWriteError."""
        if hasattr(self, "_file"):
            self.discard()
        if err.errno not in _FULL:
            raise StorageWriteError(self.path, f"the store refused it ({err.strerror or err})", self.hint,
                                    err.errno) from err
        exact = self.needed is not None
        needed = self.needed if exact else self.written + pending
        raise StorageFullError(self.path, needed, free_bytes(self.folder), exact, self.hint) from err

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()
