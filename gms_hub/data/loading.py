"""Reading a converted dataset back, from a local folder or a Hub dataset repo."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Mapping, Optional

logger = logging.getLogger(__name__)

__all__ = ["REQUIRED_COLUMNS", "load_gms_dataset", "load_id2label", "parse_id2label"]

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
    return_id2label: bool = False,
):
    """Load a dataset in the `gms_hub` schema from a local folder or a Hub dataset repo.

    Args:
        id_or_path (`str` or `os.PathLike`): a folder written by ``python -m gms_hub.data.prepare`` (or
            `write_dataset_folder`), or a Hub dataset id such as ``"org/gms-busi"``.
        split (`str`, *optional*): ``"train"``, ``"validation"`` or ``"test"``; `None` returns every split.
        revision (`str`, *optional*): branch, tag or commit of a Hub repo.
        cache_dir (`str` or `os.PathLike`, *optional*): `datasets` cache folder.
        token (`str`, *optional*): Hub token for private repos.
        return_id2label (`bool`, defaults to `False`): also return the class names (`load_id2label`).

    Returns:
        `datasets.Dataset` (or `datasets.DatasetDict` when `split` is `None`) with columns ``image``
        (PIL, RGB or L), ``mask`` (PIL, L: 0/255 for binary data, class indices 0..K for multi-class data),
        ``name`` and the benchmark's metadata columns. With `return_id2label`, a tuple ``(dataset, id2label)``
        where `id2label` is ``{0: "background", 1: ..., K: ...}`` or `None` for a dataset without class names
        (the benchmarks: binary, masks 0/255).

    Raises:
        `FileNotFoundError`: a local path that is not a dataset folder.
        `ValueError`: an unknown split, or a dataset without the image/mask/name columns.

    Example:
        >>> train = load_gms_dataset("outputs/gms-busi", split="train")
        >>> train[0]["name"], train[0]["mask"].mode
        ('benign_1', 'L')
        >>> train, id2label = load_gms_dataset("outputs/gms-busi-multiclass", split="train", return_id2label=True)
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
    selected = splits if split is None else splits[split]
    if not return_id2label:
        return selected
    return selected, load_id2label(id_or_path, revision=revision, token=token)


def parse_id2label(mapping: Mapping) -> dict[int, str]:
    """Check and normalise an ``id2label`` mapping (JSON's string keys become ints).

    Args:
        mapping (`Mapping`): ``{"0": "background", "1": "benign", ...}`` (string or int keys).

    Returns:
        `dict[int, str]`: keys ``0..K`` in order.

    Raises:
        `ValueError`: keys that are not the integers 0..K, fewer than two entries, or names that are not
            unique non-empty strings.

    Example:
        >>> parse_id2label({"0": "background", "1": "lesion"})
        {0: 'background', 1: 'lesion'}
    """
    if not isinstance(mapping, Mapping):
        raise ValueError(f"id2label must be a mapping like {{'0': 'background', '1': 'lesion'}}, got {type(mapping).__name__}.")
    try:
        parsed = {int(key): value for key, value in mapping.items()}
    except (TypeError, ValueError) as err:
        raise ValueError(f"id2label keys must be class indices 0..K, got {list(mapping)}.") from err
    if sorted(parsed) != list(range(len(parsed))) or len(parsed) < 2:
        raise ValueError(f"id2label keys must be 0..K with K >= 1 (0 = background), got {sorted(parsed)}.")
    names = [parsed[index] for index in range(len(parsed))]
    if not all(isinstance(name, str) and name for name in names) or len(set(names)) != len(names):
        raise ValueError(f"id2label names must be unique non-empty strings, got {names}.")
    return {index: parsed[index] for index in range(len(parsed))}


def _id2label_from_card(text: str) -> Optional[Mapping]:
    import yaml

    if not text.startswith("---"):
        return None
    try:
        metadata = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return None
    return metadata.get("id2label") if isinstance(metadata, Mapping) else None


def load_id2label(
    id_or_path: str | os.PathLike,
    revision: Optional[str] = None,
    token: Optional[str] = None,
) -> Optional[dict[int, str]]:
    """The class names of a dataset folder or Hub dataset repo, or `None` for a dataset without them.

    Read from ``id2label.json`` (written by ``python -m gms_hub.data.prepare``), else from the ``id2label``
    key of the dataset card's YAML metadata. The benchmarks' binary datasets have neither: `None` then means
    one foreground class in masks of 0/255.

    Args:
        id_or_path (`str` or `os.PathLike`): a dataset folder or a Hub dataset id.
        revision (`str`, *optional*): branch, tag or commit of a Hub repo.
        token (`str`, *optional*): Hub token for private repos.

    Returns:
        `dict[int, str]` or `None`: ``{0: "background", 1: ..., K: ...}``.

    Example:
        >>> load_id2label("outputs/gms-busi-multiclass")
        {0: 'background', 1: 'benign', 2: 'malignant'}
    """
    from .hub import ID2LABEL_FILE

    source = os.fspath(id_or_path)
    texts: dict[str, Optional[str]] = {}
    if _looks_local(source):
        folder = Path(source).expanduser()
        for name in (ID2LABEL_FILE, "README.md"):
            path = folder / name
            texts[name] = path.read_text(encoding="utf-8") if path.is_file() else None
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        for name in (ID2LABEL_FILE, "README.md"):
            try:
                path = hf_hub_download(source, name, repo_type="dataset", revision=revision, token=token)
            except EntryNotFoundError:  # absent from the repo (or, offline, from the cache)
                logger.debug("%s has no %s", source, name)
                texts[name] = None
                continue
            texts[name] = Path(path).read_text(encoding="utf-8")
            if name == ID2LABEL_FILE:
                break  # the file wins: no need for the card
    if texts.get(ID2LABEL_FILE) is not None:
        try:
            mapping = json.loads(texts[ID2LABEL_FILE])
        except json.JSONDecodeError as err:
            raise ValueError(f"{source}: {ID2LABEL_FILE} is not valid JSON ({err}).") from err
        return parse_id2label(mapping)
    mapping = _id2label_from_card(texts["README.md"]) if texts.get("README.md") else None
    return None if mapping is None else parse_id2label(mapping)
