"""Parquet shards of one split, written row group by row group (`ParquetShardWriter`), and what they hold.

A converter streams rows into a writer, so it never holds a split in memory; `gms_hub.data.hub` puts the shards
of every split into a Hub-style dataset folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = ["DEFAULT_MAX_SHARD_SIZE", "ROWS_PER_GROUP", "ParquetShardWriter", "SplitStats", "parse_size"]

DEFAULT_MAX_SHARD_SIZE = "500MB"
ROWS_PER_GROUP = 100  # what `datasets` uses for image columns: keeps row groups small for the dataset viewer


@dataclass
class SplitStats:
    """What `ParquetShardWriter.close` reports about one written split."""

    name: str
    num_examples: int
    num_bytes: int  # in-memory Arrow size, what `dataset_info.splits[].num_bytes` means on the Hub
    download_size: int  # bytes of the parquet files
    files: list[str] = field(default_factory=list)


def parse_size(size: int | str) -> int:
    """``"500MB"`` -> 500_000_000; an int is returned as is."""
    if isinstance(size, int):
        return size
    text = str(size).strip().upper()
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
        if text.endswith(unit):
            try:
                return int(float(text[: -len(unit)]) * factor)
            except ValueError:
                break
    if text.isdigit():
        return int(text)
    raise ValueError(f"Expected a size like 500MB, 2GB or a number of bytes, got {size!r}.")


class ParquetShardWriter:
    """Write one split as parquet shards ``data/{split}-0000i-of-0000n.parquet``, row group by row group.

    Rows are buffered until a row group is full (`rows_per_group`), so memory stays at one row group; a new
    shard starts when the current one passes `max_shard_size`. The Arrow schema carries the `datasets`
    features in its metadata, so each shard decodes on its own as well.

    Args:
        data_dir (`str` or `os.PathLike`): the folder for the shards (``<dataset folder>/data``).
        split (`str`): split name, the shard file prefix.
        features (`datasets.Features`): the columns.
        max_shard_size (`int` or `str`, defaults to ``"500MB"``): roll over to a new shard past this size.
        rows_per_group (`int`, defaults to 100): rows per parquet row group.

    Example:
        >>> writer = ParquetShardWriter("out/data", "train", features)
        >>> writer.write_row({"image": {"bytes": png, "path": "a.png"}, "mask": ..., "name": "a"})
        >>> stats = writer.close()
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        split: str,
        features,
        max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
        rows_per_group: int = ROWS_PER_GROUP,
    ):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.split = split
        self.features = features
        self.schema = features.arrow_schema
        self.max_shard_bytes = parse_size(max_shard_size)
        self.rows_per_group = int(rows_per_group)
        self._rows: list[dict] = []
        self._writer = None
        self._shard_bytes = 0
        self._paths: list[Path] = []
        self.num_examples = 0
        self.num_bytes = 0

    def _open_shard(self) -> None:
        import pyarrow.parquet as pq

        path = self.data_dir / f"{self.split}-{len(self._paths):05d}.parquet.partial"
        self._paths.append(path)
        self._writer = pq.ParquetWriter(str(path), self.schema)
        self._shard_bytes = 0

    def write_table(self, table) -> None:
        """Append a `pyarrow.Table` (already in this writer's schema) as one row group."""
        if table.num_rows == 0:
            return
        if self._writer is None or self._shard_bytes >= self.max_shard_bytes:
            if self._writer is not None:
                self._writer.close()
            self._open_shard()
        table = table.cast(self.schema)  # also attaches the schema metadata with the features
        self._writer.write_table(table, row_group_size=table.num_rows)
        self._shard_bytes += table.nbytes
        self.num_examples += table.num_rows
        self.num_bytes += table.nbytes

    def write_row(self, row: Mapping[str, Any]) -> None:
        """Buffer one row (a dict with every column); flushes a row group when the buffer is full."""
        self._rows.append(dict(row))
        if len(self._rows) >= self.rows_per_group:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as a row group."""
        import pyarrow as pa

        if self._rows:
            table = pa.Table.from_pylist(self._rows, schema=self.schema)
            self._rows = []
            self.write_table(table)

    def close(self) -> SplitStats:
        """Flush, close the last shard and give the shards their final ``-of-`` names."""
        self.flush()
        if self._writer is None:  # no rows: no file (`datasets` cannot load an empty split anyway)
            return SplitStats(self.split, 0, 0, 0, [])
        self._writer.close()
        self._writer = None
        total = len(self._paths)
        final = []
        for index, path in enumerate(self._paths):
            target = self.data_dir / f"{self.split}-{index:05d}-of-{total:05d}.parquet"
            path.replace(target)
            final.append(target)
        size = sum(path.stat().st_size for path in final)
        return SplitStats(self.split, self.num_examples, self.num_bytes, size, [path.name for path in final])

    def abort(self) -> None:
        """Close and delete whatever was written."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for path in self._paths:
            path.unlink(missing_ok=True)
