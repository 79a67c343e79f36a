"""WebDataset samples straight from a tar stream: a minimal reader of names and sizes.

tarfile's header parsing costs as much as decoding a small image, so shards are read with this instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import IO, Any

from datamodules.image_decode import IMAGE_EXTENSIONS, LABEL_FIELD

_READ_FIELDS = frozenset((*IMAGE_EXTENSIONS, LABEL_FIELD))  # all else in a shard is skipped unread
_BLOCK = 512  # tar's unit: headers are one block, data is padded to whole blocks
_REGULAR = (b"0", b"\0", b"7")  # tar type flags of regular files


def read_tar_samples(stream: IO[bytes]) -> Iterator[dict[str, Any]]:
    """Consecutive tar members with the same key (path up to the first dot) form one sample."""
    sample: dict[str, Any] | None = None
    for name, data in tar_members(stream, wanted=lambda name: split_key(name)[1] in _READ_FIELDS):
        key, field = split_key(name)
        if key is None:
            continue
        if sample is None or key != sample["__key__"]:
            if sample is not None:
                yield sample
            sample = {"__key__": key}
        if data is not None:
            sample[field] = data
    if sample is not None:
        yield sample


def split_key(name: str) -> tuple[str | None, str | None]:
    """``dir/stem.ext.more`` -> (``dir/stem``, ``ext.more`` lower-cased), as webdataset splits names
    (hidden files, ``dir/.name``, have no key)."""
    start = name.rfind("/") + 1
    dot = name.find(".", start)
    return (name[:dot], name[dot + 1:].lower()) if dot > start else (None, None)


def tar_members(stream: IO[bytes], wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes | None]]:
    """(name, data) of each regular file in a tar stream (ustar, GNU or pax); data None if not wanted.

    tarfile parses every header field in Python, which costs as much as decoding a 64 px JPEG; this reads
    only names and sizes, about 15x faster. A stream that ends before the end-of-archive blocks raises
    EOFError (tarfile takes a stream cut inside a header for a complete archive).
    """
    long_name: str | None = None
    while True:
        header = _read_exactly(stream, _BLOCK)
        if not any(header):
            return  # end of archive
        if not _checksum_ok(header):
            raise ValueError("bad tar header checksum: not a tar file, or a corrupt one")
        size = (int.from_bytes(header[125:136], "big") if header[124] & 0x80
                else int(header[124:136].rstrip(b"\0 ") or b"0", 8))
        kind, padded = header[156:157], -(-size // _BLOCK) * _BLOCK
        if kind in (b"L", b"x"):  # the next member's long name: GNU, or in pax records
            data = _read_exactly(stream, padded)[:size]
            long_name = _pax_path(data) if kind == b"x" else _text(data.rstrip(b"\0"))
            continue
        name = long_name or _ustar_name(header)
        long_name = None
        if kind in _REGULAR and wanted(name):
            yield name, _read_exactly(stream, padded)[:size]
            continue
        if kind in _REGULAR:
            yield name, None
        _read_exactly(stream, padded)  # skipped: streams need not be seekable


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) < size:
        raise EOFError(f"unexpected end of data: the tar stream stopped {size - len(data)} bytes short")
    return data


def _checksum_ok(header: bytes) -> bool:
    """The stored checksum is the sum of the header's bytes, its own 8 bytes counted as spaces."""
    try:
        stored = int(header[148:156].rstrip(b"\0 "), 8)
    except ValueError:
        return False
    return stored == sum(header[:148]) + sum(header[156:]) + 8 * ord(" ")


def _ustar_name(header: bytes) -> str:
    name = header[:100].split(b"\0", 1)[0]
    if header[257:263] == b"ustar\0" and header[345]:  # POSIX ustar splits long paths into prefix/name
        name = header[345:500].split(b"\0", 1)[0] + b"/" + name
    return _text(name)


def _text(name: bytes) -> str:
    return name.decode(errors="surrogateescape")


def _pax_path(records: bytes) -> str | None:
    """The ``path`` of pax extended-header records (``<length> <key>=<value>\\n`` each)."""
    position = 0
    while position < len(records):
        length = int(records[position:records.index(b" ", position)])
        key, _, value = records[position:position + length].partition(b" ")[2].partition(b"=")
        if key == b"path":
            return _text(value[:-1])
        position += length
    return None
