"""IDX files, the format MNIST and Fashion-MNIST ship in: ``train-images-idx3-ubyte[.gz]`` and friends.

A file is a 4-byte magic (two zero bytes, a type code, the number of dimensions), one big-endian uint32
per dimension, then the values big-endian in C order. Gzipped files are recognised by their content.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

_GZIP_MAGIC = b"\x1f\x8b"
_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def find_idx(folder: str, stem: str) -> str | None:
    """``folder/stem`` or ``folder/stem.gz``, whichever exists (the raw file first); None if neither."""
    for name in (stem, f"{stem}.gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def read_idx(path: str) -> np.ndarray:
    """The array in an IDX file (raw or gzipped), in native byte order."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == _GZIP_MAGIC:
        data = gzip.decompress(data)
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _TYPES:
        raise ValueError(f"{path} is not an IDX file (magic {data[:4].hex()}); expected e.g. 00000803")
    ndim = data[3]
    shape = tuple(int(n) for n in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_TYPES[data[2]])
    offset = 4 + 4 * ndim
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{path}: {len(data)} bytes, but its header {shape} needs {expected}; "
                         "the file is truncated or corrupt")
    return np.frombuffer(data, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))
