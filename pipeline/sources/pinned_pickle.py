"""Unpickle numpy arrays from a file only when its bytes are the ones we pinned.

Unpickling runs whatever the pickle names, so a pickle is loaded only after its sha256 matches a known
constant; and even then only numpy arrays (and tuples/lists/numbers of them) can be rebuilt from it: any
other global the stream names is refused, as defence in depth should a pinned hash ever be wrong.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle

import numpy as np

_RECONSTRUCT = np.empty(0).__reduce__()[0]  # what ndarray pickles reduce to, wherever numpy keeps it
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy < 2 module path
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy >= 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: only numpy arrays may be unpickled")
        return _ALLOWED[(module, name)]


def load_pinned_pickle(data: bytes, sha256: str, what: str) -> object:
    """Unpickle ``data`` (gzipped or not; Python 2 pickles too) if its sha256 is ``sha256``; ``what`` names
    the input in errors."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ValueError(f"{what}: sha256 {digest} is not the pinned {sha256}; refusing to unpickle it "
                         "(a different or tampered file)")
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    try:
        return _ArraysOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as err:
        raise ValueError(f"{what}: {err}") from None
