"""Where `python -m gms_hub.predict` gets its frames: files decoded in DataLoader workers, and Hugging Face datasets.

- **Workers** (`prefetch`): with `--num_workers N > 0`, a `torch.utils.data.DataLoader` decodes the ordinary
  images (PNG, JPEG, BMP, TIFF, and dataset rows) of the job list in `N` processes, in order, a few ahead of the
  model; DICOM and NIfTI files are opened in the main process, where their frames stream in batches as before
  (a volume is never decoded whole). `--num_workers 0` decodes everything in the main process.
- **Datasets** (`open_dataset`): `--dataset` takes a Hub id or a local folder (a `gms_hub.data` folder: parquet
  under `data/`), loaded with `datasets.load_dataset`; images are never written to disk. Each row is named by its
  id: the `--id_column`, else the dataset's `name` or `id` column, else its row index zero-padded to 6 digits;
  characters other than letters, digits, `.`, `_`, `-` become `_` in file names (`dataset_stem`).
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

logger = logging.getLogger(__name__)

__all__ = ["ID_COLUMNS", "dataset_id_column", "dataset_image", "dataset_stem", "open_dataset", "prefetch"]

ID_COLUMNS = ("name", "id")
"""The columns tried, in order, to name a dataset row when `--id_column` is not given."""


# ------------------------------------------------------------------------------ datasets
def open_dataset(spec: str, split: str, revision: Optional[str] = None, streaming: bool = False):
    """One split of a Hub dataset or a local dataset folder (`datasets.load_dataset`), streamed or not."""
    from datasets import load_dataset

    folder = Path(spec).expanduser()
    if folder.is_dir():
        if revision is not None:
            raise ValueError(f"--revision applies to Hub datasets only; {spec} is a folder.")
        spec = str(folder)
    try:
        return load_dataset(spec, split=split, revision=revision, streaming=streaming)
    except ValueError as err:
        if "split" in str(err).lower():
            raise ValueError(f"--dataset {spec} has no split {split!r} ({' '.join(str(err).split())}).") from None
        raise


def dataset_id_column(column_names: Optional[Sequence[str]], requested: Optional[str], image_column: str
                      ) -> Optional[str]:
    """The column naming each row: `requested`, else `name` or `id` when present, else `None` (the row index)."""
    columns = list(column_names or [])
    if columns and image_column not in columns:
        raise ValueError(f"--image_column {image_column!r} is not a column of the dataset (it has {columns}).")
    if requested is not None:
        if columns and requested not in columns:
            raise ValueError(f"--id_column {requested!r} is not a column of the dataset (it has {columns}).")
        return requested
    return next((name for name in ID_COLUMNS if name in columns), None)


def dataset_stem(row_id: Any) -> str:
    """A row id as a file name: letters, digits, `.`, `_`, `-` kept, any other run of characters becomes `_`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(row_id)).strip("._") or "row"


def row_id(value: Any, index: int) -> str:
    """A row's id: the value of its id column, or (`None`, no id column) its index zero-padded to 6 digits."""
    return f"{index:06d}" if value is None else str(value)


def dataset_image(value: Any, name: str) -> Image.Image:
    """A dataset cell as the PIL image the file reader would give (EXIF orientation applied)."""
    from ..io.images import MIN_SIDE, apply_exif_orientation

    if isinstance(value, dict) and value.get("bytes") is not None:
        value = Image.open(io.BytesIO(value["bytes"]))
    elif isinstance(value, np.ndarray):
        value = Image.fromarray(value)
    if not isinstance(value, Image.Image):
        raise ValueError(f"'{name}': the image column holds {type(value).__name__}, not an image. Pass "
                         "--image_column with the column of images.")
    value.load()
    if min(value.size) < MIN_SIDE:
        raise ValueError(f"'{name}' is {value.size[0]}x{value.size[1]} pixels; each side must be at least "
                         f"{MIN_SIDE} pixels.")
    return apply_exif_orientation(value)


# ------------------------------------------------------------------------------ workers
class _Decode(torch.utils.data.Dataset):
    """Item `i`: what `decode(jobs[i])` gives (`("image", PIL image)`, `("error", text)` or `("main", None)`)."""

    def __init__(self, jobs: Sequence[Any], decode: Callable[[Any], Tuple[str, Any]]):
        self.jobs, self.decode = jobs, decode

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> Tuple[str, Any]:
        return self.decode(self.jobs[index])


def _as_is(item):
    return item


def prefetch(jobs: List[Any], decode: Callable[[Any], Tuple[str, Any]], num_workers: int
             ) -> Iterator[Tuple[Any, Tuple[str, Any]]]:
    """`(job, decoded)` in the order of `jobs`, decoded by `num_workers` DataLoader processes a few jobs ahead
    (`prefetch_factor` 4 per worker: memory stays bounded however many jobs there are)."""
    if num_workers <= 0 or not jobs:
        for job in jobs:
            yield job, ("main", None)
        return
    loader = torch.utils.data.DataLoader(_Decode(jobs, decode), batch_size=None, shuffle=False,
                                         num_workers=num_workers, collate_fn=_as_is, prefetch_factor=4)
    yield from zip(jobs, loader)
