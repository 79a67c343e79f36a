"""``shards.json``: the list of shards with their sample counts, written next to the shards.

The reader needs the counts to fix the epoch length before it reads a byte of data, and the image size
and class names to check a config against the data it will train on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from datamodules.resilient_stream import RetryPolicy
from datamodules.url_open import join_url, open_url, write_url

INDEX_NAME = "shards.json"
INDEX_FORMAT = "ganforge-shards/1"


@dataclass(frozen=True)
class ShardEntry:
    name: str  # relative to the index's folder, or an absolute URL
    samples: int


@dataclass(frozen=True)
class ShardIndex:
    shards: list[ShardEntry]
    image_size: tuple[int, int] | None  # (height, width); None when the images differ in size
    channels: int | None
    image_format: str
    classes: list[str] | None = None  # label i is classes[i]; None for unlabelled data
    source: str = ""
    seed: int | None = None  # of the writer's sample order (None: the source's order)

    @property
    def samples(self) -> int:
        return sum(entry.samples for entry in self.shards)

    def shard_urls(self, index_url: str) -> list[str]:
        """The shards' URLs, resolved against the folder that holds the index file."""
        return [join_url(index_url, entry.name) for entry in self.shards]

    def to_json(self) -> str:
        record = asdict(self)
        record.update(format=INDEX_FORMAT, samples=self.samples)
        return json.dumps(record, indent=1, sort_keys=True) + "\n"


def write_index(index: ShardIndex, url: str, storage_options: dict[str, Any] | None = None) -> None:
    write_url(url, index.to_json().encode(), storage_options)


def read_index(url: str, storage_options: dict[str, Any] | None = None,
               policy: RetryPolicy | None = None) -> ShardIndex:
    """Load and validate an index; every failure names the file and how to get a good one."""
    with open_url(url, storage_options, policy) as stream:
        text = stream.read()
    hint = "write one with `ganforge shards --source ... --out DIR`"
    try:
        record = json.loads(text)
        if record.get("format") != INDEX_FORMAT:
            raise ValueError(f"format is {record.get('format')!r}, expected {INDEX_FORMAT!r}")
        shards = [ShardEntry(str(s["name"]), int(s["samples"])) for s in record["shards"]]
        size = record.get("image_size")
        index = ShardIndex(
            shards=shards,
            image_size=None if size is None else (int(size[0]), int(size[1])),
            channels=record.get("channels"),
            image_format=str(record.get("image_format", "")),
            classes=record.get("classes"),
            source=str(record.get("source", "")),
            seed=record.get("seed"),
        )
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise ValueError(f"bad shard index {url}: {err!r}; {hint}") from None
    if not shards:
        raise ValueError(f"bad shard index {url}: it lists no shards; {hint}")
    return index
