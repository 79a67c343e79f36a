"""Write samples as WebDataset tar shards plus ``shards.json``, to a local folder or any fsspec URL.

Shards are plain tar files (``<key>.png``, ``<key>.cls``; readable by webdataset and by ``tar``) with fixed
member metadata, so the same samples give byte-identical shards. The index is written last: an index
means the shards it lists are complete.
"""

from __future__ import annotations

import io
from typing import IO, Any

from PIL import Image
from webdataset.writer import TarWriter

from datamodules.shard_index import INDEX_NAME, ShardEntry, ShardIndex, write_index
from datamodules.url_open import join_url, open_for_writing

_TAR_BLOCK = 512
_PIL_FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}


def encode_image(image: Image.Image, image_format: str, quality: int = 95) -> bytes:
    """PNG (lossless), JPEG or WebP bytes; the same image always gives the same bytes."""
    buffer = io.BytesIO()
    options: dict[str, Any] = {} if image_format == "png" else {"quality": quality}
    image.save(buffer, _PIL_FORMATS[image_format], **options)
    return buffer.getvalue()


def _tar_size(fields: dict[str, bytes]) -> int:
    """Bytes the sample takes in a tar: a header block per member plus its data padded to blocks."""
    return sum(_TAR_BLOCK + -(-len(data) // _TAR_BLOCK) * _TAR_BLOCK for data in fields.values())


class ShardWriter:
    """Samples into ``<out>/<prefix>-000000.tar``, ... : a new shard once one holds ``max_count`` samples or
    would grow past ``max_bytes``."""

    def __init__(self, out: str, max_count: int | None = None, max_bytes: int | None = None,
                 prefix: str = "shard", storage_options: dict[str, Any] | None = None):
        self.out = out.rstrip("/")
        self.max_count, self.max_bytes, self.prefix = max_count, max_bytes, prefix
        self.storage_options = storage_options
        self.shards: list[ShardEntry] = []
        self._stream: IO[bytes] | None = None
        self._tar: TarWriter | None = None
        self._count = self._bytes = 0

    @property
    def index_url(self) -> str:
        return join_url(self.out + "/", INDEX_NAME)

    def write(self, key: str, fields: dict[str, bytes]) -> None:
        """One sample: ``fields`` maps extensions (``png``, ``cls``, ...) to their bytes."""
        size = _tar_size(fields)
        full = self._tar is not None and (
            (self.max_count is not None and self._count >= self.max_count)
            or (self.max_bytes is not None and self._bytes + size > self.max_bytes))
        if self._tar is None or full:
            self._next_shard()
        self._tar.write({"__key__": key, **fields})
        self._count += 1
        self._bytes += size

    def _next_shard(self) -> None:
        self._finish_shard()
        name = f"{self.prefix}-{len(self.shards):06d}.tar"
        self._stream = open_for_writing(join_url(self.out + "/", name), self.storage_options)
        self._tar = TarWriter(self._stream, encoder=False, mtime=0, user="ganforge", group="ganforge")
        self.shards.append(ShardEntry(name, 0))
        self._count = self._bytes = 0

    def _finish_shard(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self._stream.close()
        self.shards[-1] = ShardEntry(self.shards[-1].name, self._count)
        self._tar = self._stream = None

    def close(self, **index_fields: Any) -> ShardIndex:
        """Finish the last shard and write the index (``index_fields``: ShardIndex's other fields)."""
        self._finish_shard()
        index = ShardIndex(shards=list(self.shards), **index_fields)
        write_index(index, self.index_url, self.storage_options)
        return index
