"""Reading a converted dataset back, from a local folder or a Hub dataset repo."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

logger = logging.getLogger(__name__)

__all__ = ["REQUIRED_COLUMNS", "load_gms_dataset"]

REQUIRED_COLUMNS = ("image", "mask", "name")


def _looks_local(id_or_path: str) -> bool:
    # A Hub id is "name" or "org/name"; anything that exists, is explicitly relative/absolute or has more
    # path components is a folder.
    return (
        os.path.exists(id_or_path)
        or id_or_path.startswith((".", "/", "~"))
        or id_or_path.count("/") > 1
        or "\\" in id_or_path
    )


def load_gms_dataset(
    id_or_path: str | os.PathLike,
    split: Optional[str] = None,
    revision: Optional[str] = None,
    cache_dir: Optional[str | os.PathLike] = None,
    token: Optional[str] = None,
):
    """Load a dataset in the `gms_hub` schema from a local folder or a Hub dataset repo.

    Args:
        id_or_path (`str` or `os.PathLike`): a folder written by ``python -m gms_hub.data.prepare`` (or
            `write_dataset_folder`), or a Hub dataset id such as ``"org/gms-busi"``.
        split (`str`, *optional*): ``"train"``, ``"validation"`` or ``"test"``; `None` returns every split.
        revision (`str`, *optional*): branch, tag or commit of a Hub repo.
        cache_dir (`str` or `os.PathLike`, *optional*): `datasets` cache folder.
        token (`str`, *optional*): Hub token for private repos.

    Returns:
        `datasets.Dataset` (or `datasets.DatasetDict` when `split` is `None`) with columns ``image``
        (PIL, RGB or L), ``mask`` (PIL, L, 0/255), ``name`` and the benchmark's metadata columns.

    Raises:
        `FileNotFoundError`: a local path that is not a dataset folder.
        `ValueError`: an unknown split, or a dataset without the image/mask/name columns.

    Example:
        >>> train = load_gms_dataset("outputs/gms-busi", split="train")
        >>> train[0]["name"], train[0]["mask"].mode
        ('benign_1', 'L')
    """
    from datasets import load_dataset

    source = os.fspath(id_or_path)
    if _looks_local(source):
        folder = Path(source).expanduser()
        if not folder.is_dir() or not ((folder / "README.md").is_file() or (folder / "data").is_dir()):
            raise FileNotFoundError(
                f"{folder} is not a dataset folder (expected README.md and data/*.parquet). Create one with "
                "`python -m gms_hub.data.prepare <dataset> --raw_dir RAW --output_dir DIR`, or pass a Hub id."
            )
        if revision is not None:
            raise ValueError(f"`revision` only applies to Hub ids, got revision={revision!r} for the folder {folder}.")
        source = str(folder)
    splits = load_dataset(source, revision=revision, cache_dir=None if cache_dir is None else str(cache_dir), token=token)
    if split is not None and split not in splits:
        raise ValueError(f"{id_or_path} has no split {split!r}; it has {sorted(splits)}.")
    for name, ds in splits.items():
        missing = [column for column in REQUIRED_COLUMNS if column not in ds.column_names]
        if missing:
            raise ValueError(
                f"{id_or_path} split {name!r} lacks the columns {missing} (has {ds.column_names}); it is not a "
                "gms_hub dataset. Convert it with `python -m gms_hub.data.prepare`."
            )
    return splits if split is None else splits[split]
