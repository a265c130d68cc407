"""Hub-style dataset folders: parquet shards per split, a dataset card, one upload to push.

A folder written here has the layout of a Hub dataset repo::

    README.md                       dataset card: YAML (license, task, configs, dataset_info) + text
    splits.json                     every split's names and the split provenance, machine-readable
    id2label.json                   multi-class (or labelled) data only: {"0": "background", "1": ...}
    data/train-00000-of-00001.parquet
    data/validation-00000-of-00001.parquet
    data/test-00000-of-00001.parquet

so ``datasets.load_dataset(folder)`` reads it, and pushing is one ``upload_folder``. Shards are written
row group by row group (`ParquetShardWriter`), so a converter never holds a split in memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from ..models.modelcard import CITATION

logger = logging.getLogger(__name__)

__all__ = [
    "DatasetCardInfo",
    "ParquetShardWriter",
    "SplitStats",
    "push_dataset_folder",
    "render_dataset_card",
    "staged_output_dir",
    "write_dataset_folder",
    "write_folder_metadata",
]

DEFAULT_MAX_SHARD_SIZE = "500MB"
ID2LABEL_FILE = "id2label.json"
"""Machine-readable class names of a dataset folder (transformers' convention: string keys, 0 = background)."""
ROWS_PER_GROUP = 100  # what `datasets` uses for image columns: keeps row groups small for the dataset viewer
SPLIT_ORDER = ("train", "validation", "test")

GMS_CITATION = CITATION



@dataclass
class DatasetCardInfo:
    """What a dataset card says about a benchmark besides its counts.

    Args:
        pretty_name (`str`): human-readable name.
        license (`str`): Hub licence id (``cc0-1.0``, ``cc-by-nc-sa-4.0``, ``other``, ...).
        description (`str`, defaults to ``""``): markdown paragraph(s) on what the data is.
        source (`str`, *optional*): markdown on where the raw data comes from and under which terms.
        citation (`str`, *optional*): BibTeX of the dataset's paper.
        license_name (`str`, *optional*): short licence name when `license` is ``other``.
        license_link (`str`, *optional*): URL of the licence terms when `license` is ``other``.
        homepage (`str`, *optional*): where to download the raw data.
        tags (`Sequence[str]`, defaults to ``("medical",)``): Hub tags.
        task_categories (`Sequence[str]`, defaults to ``("image-segmentation",)``): Hub task categories.
        body (`str`, *optional*): extra markdown appended to the card (e.g. generation details).
    """

    pretty_name: str
    license: str
    description: str = ""
    source: Optional[str] = None
    citation: Optional[str] = None
    license_name: Optional[str] = None
    license_link: Optional[str] = None
    homepage: Optional[str] = None
    tags: Sequence[str] = ("medical",)
    task_categories: Sequence[str] = ("image-segmentation",)
    body: Optional[str] = None

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> "DatasetCardInfo":
        """Build from a dict with the same keys (unknown keys are an error, so typos do not vanish)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ValueError(f"Unknown dataset card keys {unknown}; expected some of {sorted(known)}.")
        return cls(**dict(mapping))


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


@contextlib.contextmanager
def staged_output_dir(output_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh staging folder beside `output_dir`; on success it replaces `output_dir`, on error it is removed.

    A failed conversion therefore never leaves a half-written dataset behind.

    Args:
        output_dir (`str` or `os.PathLike`): the final folder.
        overwrite (`bool`, defaults to `False`): replace an existing non-empty `output_dir`.
    """
    output_dir = Path(output_dir).resolve()
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())) and not overwrite:
        raise FileExistsError(
            f"Output folder {output_dir} exists and is not empty. Choose another --output_dir or pass --overwrite."
        )
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = output_dir.parent / f".{output_dir.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if output_dir.exists():
        shutil.rmtree(output_dir) if output_dir.is_dir() else output_dir.unlink()
    staging.replace(output_dir)


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "n>1M"


def _ordered(names: Sequence[str]) -> list[str]:
    return sorted(names, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER), s))


def _mask_sentence(id2label: Optional[Mapping[int, str]]) -> str:
    if id2label is None or len(id2label) <= 2:
        sentence = "`mask` is a single-channel PNG with values exactly 0 (background) and 255 (foreground)"
        if id2label is not None:
            sentence += f"; the foreground class is `{id2label[1]}`"
        return sentence + "."
    classes = ", ".join(f"{index} = `{label}`" for index, label in sorted(id2label.items()))
    return (
        "`mask` is a single-channel PNG of class indices (" + classes + "); the names are in `id2label.json` "
        "and in this card's metadata (`id2label`)."
    )


def _split_provenance_lines(provenance: Mapping[str, Any]) -> list[str]:
    """What the card says about where the split comes from: the paper's lists, a given list, or fractions."""
    method = provenance.get("split_method", "paper")
    lines = []
    if method == "fractions":
        lines.append(
            f"Seeded split of all pairs (seed {provenance.get('seed')}): test fraction "
            f"{provenance.get('test_fraction')}, validation fraction {provenance.get('validation_fraction')} of "
            "the rest; names ranked by `sha256(f'{seed}:{name}')` (see `gms_hub.data.splits.carve_validation`), "
            "so the split depends only on the seed and the set of names."
        )
        return lines
    whose = "the paper's" if method == "paper" else "the given"
    if provenance.get("split_source"):
        lines.append(
            f"`train` + `validation` is exactly {whose} train list and `test` exactly its test list, read "
            f"from `{provenance['split_source']}` (sha256 `{provenance.get('split_sha256', '?')}`)."
        )
    if provenance.get("validation_names") is not None:
        stratify = provenance.get("stratify_by")
        lines.append(
            f"`validation` is a seeded {provenance.get('validation_fraction')} of {whose} train list "
            f"(seed {provenance.get('seed')}, {'stratified by `' + stratify + '`' if stratify else 'not stratified'}; "
            "names ranked by `sha256(f'{seed}:{name}')`, see `gms_hub.data.splits.carve_validation`). Select "
            "models on `validation` and touch `test` once"
            + ("; the paper itself selected on `test`." if method == "paper" else ".")
        )
    return lines


def render_dataset_card(
    info: DatasetCardInfo,
    features,
    stats: Sequence[SplitStats],
    provenance: Optional[Mapping[str, Any]] = None,
    id2label: Optional[Mapping[int, str]] = None,
) -> str:
    """The ``README.md`` of a dataset folder: YAML metadata, then description, source, splits, citation.

    Args:
        info (`DatasetCardInfo`): pretty name, licence, description, source, citation.
        features (`datasets.Features`): the columns (for ``dataset_info``).
        stats (`Sequence[SplitStats]`): what was written per split.
        provenance (`Mapping`, *optional*): split provenance: ``split_source``, ``split_sha256``,
            ``validation_fraction``, ``seed``, ``stratify_by``, ``validation_names``, ``command``;
            ``split_method`` (``"paper"`` by default, ``"list"`` for a user's split list, ``"fractions"``
            with ``test_fraction`` for a seeded split) and ``mask_encoding`` (what the masks were read as).
        id2label (`Mapping[int, str]`, *optional*): class names by mask value index (0 = background); recorded
            in the YAML metadata as ``id2label`` with string keys. `None` for the benchmarks' binary masks.

    Returns:
        `str`: the card text.
    """
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    splits = SplitDict()
    for s in stats:
        splits.add(SplitInfo(name=s.name, num_bytes=s.num_bytes, num_examples=s.num_examples))
    dataset_info = DatasetInfo(
        features=features,
        splits=splits,
        download_size=sum(s.download_size for s in stats),
        dataset_size=sum(s.num_bytes for s in stats),
    )
    extra = {k: v for k, v in (("license_name", info.license_name), ("license_link", info.license_link)) if v}
    card_data = DatasetCardData(
        license=info.license,
        task_categories=list(info.task_categories),
        task_ids=["semantic-segmentation"],
        tags=list(info.tags),
        pretty_name=info.pretty_name,
        size_categories=[_size_category(sum(s.num_examples for s in stats))],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": s.name, "path": f"data/{s.name}-*"} for s in stats],
            }
        ],
        **extra,
    )
    if id2label is not None:
        card_data.id2label = {str(index): label for index, label in sorted(id2label.items())}
    DatasetInfosDict({"default": dataset_info}).to_dataset_card_data(card_data)

    lines = [f"# {info.pretty_name}", ""]
    if info.description:
        lines += [info.description.strip(), ""]
    columns = ", ".join(f"`{name}`" for name in features)
    lines += [
        "Converted to the `gms_hub` schema: splits `train`, `validation`, `test`; columns " + columns + ". "
        + _mask_sentence(id2label),
        "",
        "```python",
        "from gms_hub.data import load_gms_dataset",
        'train = load_gms_dataset("<this repo id or folder>", split="train")',
        "```",
        "",
    ]
    if info.source or info.homepage:
        lines += ["## Source and licence", ""]
        if info.homepage:
            lines += [f"Raw data: {info.homepage}", ""]
        if info.source:
            lines += [info.source.strip(), ""]
        licence = info.license_name or info.license
        lines += [f"Licence: `{licence}`" + (f" ({info.license_link})" if info.license_link else "") + ".", ""]
    lines += ["## Splits", "", "| split | examples |", "|---|---|"]
    lines += [f"| {s.name} | {s.num_examples} |" for s in stats]
    lines.append("")
    if provenance:
        lines += ["## Provenance", ""]
        lines += _split_provenance_lines(provenance)
        if provenance.get("scan_frames"):
            lines.append(str(provenance["scan_frames"]))
        if provenance.get("mask_encoding"):
            lines.append(f"Masks were read as: {provenance['mask_encoding']}.")
        if provenance.get("command"):
            lines += ["", "Converted with:", "", "```bash", str(provenance["command"]), "```"]
        if provenance.get("validation_names") is not None:
            names = ", ".join(provenance["validation_names"])
            lines += ["", "<details><summary>Validation names</summary>", "", names, "", "</details>"]
        lines.append("")
    if info.body:
        lines += [info.body.strip(), ""]
    lines += ["## Citation", ""]
    if info.citation:
        lines += ["Dataset:", "", "```bibtex", info.citation.strip(), "```", ""]
    lines += ["GMS (split lists, conversion):", "", "```bibtex", GMS_CITATION, "```", ""]
    return f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines)


def write_folder_metadata(
    folder: str | os.PathLike,
    info: DatasetCardInfo,
    features,
    stats: Sequence[SplitStats],
    names: Mapping[str, Sequence[str]],
    provenance: Optional[Mapping[str, Any]] = None,
    id2label: Optional[Mapping[int, str]] = None,
) -> None:
    """Write ``README.md``, ``splits.json`` (names per split and provenance) and, with `id2label`,
    ``id2label.json`` into a dataset folder."""
    folder = Path(folder)
    empty = [s.name for s in stats if s.num_examples == 0]
    if empty:
        logger.warning("Leaving out empty splits %s: a split needs at least one example", empty)
    stats = [s for s in stats if s.num_examples > 0]
    names = {split: split_names for split, split_names in names.items() if split not in empty}
    stats = sorted(stats, key=lambda s: _ordered([x.name for x in stats]).index(s.name))
    (folder / "README.md").write_text(render_dataset_card(info, features, stats, provenance, id2label), encoding="utf-8")
    if id2label is not None:
        text = json.dumps({str(index): label for index, label in sorted(id2label.items())}, indent=2)
        (folder / ID2LABEL_FILE).write_text(text + "\n", encoding="utf-8")
    # One line per split list, so that the file stays readable for 10,000 names.
    recorded = {k: v for k, v in (provenance or {}).items() if k != "validation_names"}
    split_lines = ",\n".join(f"    {json.dumps(split)}: {json.dumps(list(names[split]))}" for split in _ordered(list(names)))
    text = f'{{\n  "provenance": {json.dumps(recorded)},\n  "splits": {{\n{split_lines}\n  }}\n}}\n'
    (folder / "splits.json").write_text(text, encoding="utf-8")


def write_dataset_folder(
    dataset_dict,
    output_dir: str | os.PathLike,
    card: DatasetCardInfo | Mapping[str, Any],
    provenance: Optional[Mapping[str, Any]] = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    id2label: Optional[Mapping[int, str]] = None,
) -> Path:
    """Write an in-memory `datasets.DatasetDict` as a Hub-style dataset folder.

    Args:
        dataset_dict (`datasets.DatasetDict`): splits with at least ``image``, ``mask`` and ``name``.
        output_dir (`str` or `os.PathLike`): the folder to create.
        card (`DatasetCardInfo` or `Mapping`): card content (a mapping uses the `DatasetCardInfo` keys).
        provenance (`Mapping`, *optional*): split provenance for the card (see `render_dataset_card`).
        max_shard_size (`int` or `str`, defaults to ``"500MB"``): parquet shard size limit.
        overwrite (`bool`, defaults to `False`): replace an existing non-empty folder.
        id2label (`Mapping[int, str]`, *optional*): class names of multi-class masks (see `render_dataset_card`).

    Returns:
        `Path`: `output_dir`.

    Example:
        >>> ds = make_synthetic_dataset(num_train=8, num_validation=2, num_test=2, image_size=64)
        >>> write_dataset_folder(ds, "synthetic", card=SYNTHETIC_CARD)
        >>> load_gms_dataset("synthetic", split="train")
    """
    from datasets.table import embed_table_storage

    info = card if isinstance(card, DatasetCardInfo) else DatasetCardInfo.from_mapping(card)
    missing = {split: {"image", "mask", "name"} - set(ds.column_names) for split, ds in dataset_dict.items()}
    missing = {split: sorted(cols) for split, cols in missing.items() if cols}
    if missing:
        raise ValueError(f"Every split needs the columns image, mask and name; missing: {missing}.")
    feature_sets = {split: ds.features for split, ds in dataset_dict.items()}
    features = next(iter(feature_sets.values()))
    if any(f != features for f in feature_sets.values()):
        raise ValueError(f"All splits must have the same features, got {feature_sets}.")

    with staged_output_dir(output_dir, overwrite=overwrite) as staging:
        stats, names = [], {}
        for split in _ordered(list(dataset_dict)):
            ds = dataset_dict[split]
            writer = ParquetShardWriter(staging / "data", split, features, max_shard_size=max_shard_size)
            for table in ds.with_format("arrow").iter(batch_size=ROWS_PER_GROUP):
                writer.write_table(embed_table_storage(table))  # images referenced by path get their bytes
            stats.append(writer.close())
            names[split] = list(ds["name"])
        write_folder_metadata(staging, info, features, stats, names, provenance, id2label)
    logger.info("Wrote %s (%s)", output_dir, ", ".join(f"{s.name}: {s.num_examples}" for s in stats))
    return Path(output_dir)


def push_dataset_folder(
    folder: str | os.PathLike,
    repo_id: str,
    token: Optional[str] = None,
    private: Optional[bool] = None,
    revision: Optional[str] = None,
    commit_message: str = "Upload dataset converted with gms_hub",
) -> str:
    """Push a dataset folder to the Hub as one commit (creating the dataset repo if needed).

    Parquet shards already on the repo but absent from `folder` are deleted in the same commit, so a
    re-conversion with fewer shards leaves no stale data behind.

    Args:
        folder (`str` or `os.PathLike`): a folder written by `write_dataset_folder` or a converter.
        repo_id (`str`): ``"org/name"`` of the dataset repo.
        token (`str`, *optional*): Hub token; defaults to the logged-in one.
        private (`bool`, *optional*): visibility of a newly created repo.
        revision (`str`, *optional*): branch to commit to.
        commit_message (`str`): the commit message.

    Returns:
        `str`: URL of the commit.

    Example:
        >>> push_dataset_folder("gms-busi", "my-org/gms-busi")
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / "README.md").is_file() or not (folder / "data").is_dir():
        raise FileNotFoundError(f"{folder} is not a dataset folder (expected README.md and data/); convert first.")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="dataset",
        revision=revision,
        commit_message=commit_message,
        delete_patterns=["data/*.parquet"],
    )
    logger.info("Pushed %s to %s", folder, commit.commit_url)
    return commit.commit_url
