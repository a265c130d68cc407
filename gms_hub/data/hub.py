"""Hub-style dataset folders: parquet shards per split, a dataset card, one upload to push.

A folder written here has the layout of a Hub dataset repo::

    README.md                       dataset card: YAML (license, task, configs, dataset_info) + text
    splits.json                     every split's names and the split provenance, machine-readable
    id2label.json                   multi-class (or labelled) data only: {"0": "background", "1": ...}
    data/train-00000-of-00001.parquet
    data/validation-00000-of-00001.parquet
    data/test-00000-of-00001.parquet

so ``datasets.load_dataset(folder)`` reads it, and pushing is one ``upload_folder``. Shards are written
row group by row group (`gms_hub.data.parquet.ParquetShardWriter`), so a converter never holds a split in memory;
the card is rendered by `gms_hub.data.card`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from ..io.safety import MANIFEST_NAME, OutputManifest, replace_recorded_folder
from .card import DatasetCardInfo, render_dataset_card
from .parquet import DEFAULT_MAX_SHARD_SIZE, ROWS_PER_GROUP, ParquetShardWriter, SplitStats

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

ID2LABEL_FILE = "id2label.json"
"""Machine-readable class names of a dataset folder (transformers' convention: string keys, 0 = background)."""
SPLIT_ORDER = ("train", "validation", "test")


PREPARE_TOOL = "gms_hub.data.prepare"


@contextlib.contextmanager
def staged_output_dir(output_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh staging folder beside `output_dir`; on success its files go into `output_dir`, on error it is
    removed. A failed conversion therefore never leaves a half-written dataset behind.

    The folder records what it wrote (`gms_hub.io.safety.MANIFEST_NAME`). With `overwrite`, only the files an
    earlier `prepare` run recorded there are replaced; any other file stays, and a folder without that record is
    refused (nothing in it is deleted).

    Args:
        output_dir (`str` or `os.PathLike`): the final folder.
        overwrite (`bool`, defaults to `False`): replace the outputs of an earlier run in a non-empty `output_dir`.
    """
    output_dir = Path(output_dir).resolve()
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"--output_dir {output_dir} is a file, not a folder. Choose another --output_dir.")
    non_empty = output_dir.exists() and any(output_dir.iterdir())
    if non_empty and not overwrite:
        raise FileExistsError(
            f"Output folder {output_dir} exists and is not empty. Choose another --output_dir or pass --overwrite "
            "(which replaces only what an earlier prepare run wrote there)."
        )
    if non_empty and not OutputManifest.read(output_dir, PREPARE_TOOL):
        raise FileExistsError(
            f"--overwrite replaces only a folder that {PREPARE_TOOL} wrote (it keeps a record, {MANIFEST_NAME}); "
            f"{output_dir} has none, so nothing in it is deleted. Choose another --output_dir."
        )
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = output_dir.parent / f".{output_dir.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        yield staging
        manifest = OutputManifest(staging, PREPARE_TOOL)
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            manifest.record(path.relative_to(staging).as_posix())
        manifest.save()
        if non_empty:
            replace_recorded_folder(staging, output_dir, PREPARE_TOOL)
        else:
            staging.replace(output_dir)  # a new or empty folder: one atomic rename
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _ordered(names: Sequence[str]) -> list[str]:
    return sorted(names, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER), s))


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
        ignore_patterns=[MANIFEST_NAME],  # the local record of what prepare wrote
    )
    logger.info("Pushed %s to %s", folder, commit.commit_url)
    return commit.commit_url
