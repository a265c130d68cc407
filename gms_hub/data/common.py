"""What every benchmark converter shares: recognising files in a raw download and matching them to the
paper's split.

A converter (one module per benchmark) is a `BenchmarkConverter` subclass that says how to recognise an
image or a mask from its path (`classify_name`), how masks become binary (`mask_rule`), which metadata
the raw data has (`collect_metadata`) and what the dataset card says. The layout logic shared by all of
them lives here, the decoding and writing in `gms_hub.data.convert`.

Problems are collected, never reported one at a time: a `RawDatasetError` lists, per kind (missing image,
missing mask, duplicate name, unreadable file, size mismatch), the first 20 offending names and the total.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Callable, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np
from PIL import Image

from ..io.reading import IMAGE_EXTENSIONS
from .hub import DatasetCardInfo
from .splits import _preview

logger = logging.getLogger(__name__)

__all__ = [
    "BenchmarkConverter",
    "FileRole",
    "RawDatasetError",
    "RawExample",
    "find_examples",
    "format_problems",
    "scan_raw_dir",
]

IMAGE_DIR_NAMES = frozenset({"images", "image", "imgs", "img", "original", "originals", "input", "inputs"})
MASK_DIR_NAMES = frozenset(
    {"masks", "mask", "gt", "gts", "ground_truth", "groundtruth", "labels", "label", "annotations", "segmentations"}
)
SKIPPED_DIR_NAMES = frozenset({"__macosx"})  # resource forks that macOS zips carry along

# Problem kinds, in the order they are reported.
MISSING_IMAGE = "missing image"
MISSING_MASK = "missing mask"
DUPLICATE_NAME = "duplicate name"
UNREADABLE_FILE = "unreadable file"
SIZE_MISMATCH = "size mismatch"


@dataclass(frozen=True)
class FileRole:
    """What a raw file is: the image or a mask (part `part`, for lesions split over several files) of `name`."""

    role: str  # "image" or "mask"
    name: str
    part: int = 0


@dataclass(frozen=True)
class RawExample:
    """One example to convert: its name, split, image file, mask file(s) (merged by union) and metadata."""

    name: str
    split: str
    image: Path
    masks: tuple[Path, ...]
    metadata: Mapping[str, Optional[str]] = field(default_factory=dict)


class RawDatasetError(ValueError):
    """The raw folder does not match the split: lists every problem (first 20 names per kind and the total).

    Attributes:
        problems (`dict[str, list[str]]`): offending names (with details) per problem kind.
    """

    def __init__(self, message: str, problems: Mapping[str, Sequence[str]]):
        super().__init__(message)
        self.problems = {kind: list(names) for kind, names in problems.items()}


@dataclass(frozen=True)
class RawIndex:
    """The image and mask files found in a raw folder, by name."""

    images: Mapping[str, Sequence[Path]]
    masks: Mapping[str, Mapping[int, Sequence[Path]]]


class BenchmarkConverter:
    """Base class of the benchmark converters; subclasses set the class attributes and override hooks.

    Class attributes:
        dataset (`str`): benchmark id (``busi``), used for the default split URL and messages.
        display_name (`str`): name in messages (``BUSI``).
        card (`DatasetCardInfo`): licence, citation, source for the dataset card.
        layout (`str`): the expected raw layout, quoted in error messages.
        mask_rule (`str`): ``"threshold"`` (8-bit gray >= 128, as the paper's evaluation reads masks) or
            ``"nonzero"`` (instance label maps: any label > 0 is foreground).
        stratify_by (`str`, *optional*): metadata column the validation carve-out is stratified by.
        id2label (`dict[int, str]`, *optional*): class names when the converter writes class-index masks
            (`mask_value` then gives each example's class); `None` for binary masks of 0/255.
    """

    dataset: str = ""
    display_name: str = ""
    card: DatasetCardInfo
    layout: str = "images/<name>.<ext> with masks/<name>.png"
    mask_rule: str = "threshold"
    stratify_by: Optional[str] = None
    id2label: Optional[dict[int, str]] = None

    def mask_value(self, example: "RawExample") -> int:
        """The value written for the foreground of `example`'s mask: 255 (binary), or its class index."""
        return 255

    def classify_name(self, rel_path: PurePath) -> Optional[FileRole]:
        """Recognise a file from its name alone (e.g. ``benign (1)_mask.png``); `None` if the name says nothing."""
        return None

    def classify(self, rel_path: PurePath) -> Optional[FileRole]:
        """The role of a raw file (path relative to the raw folder), or `None` to ignore it.

        A mask-like name (``*_mask``, ``*_anno``, ``*_segmentation``) always wins. Otherwise the nearest
        folder named like ``images``/``original`` or ``masks``/``GT`` decides, with the file stem as name,
        which is also the layout of the reference repository's preprocessed ``images/``/``masks/`` folders.
        """
        by_name = self.classify_name(rel_path)
        if by_name is not None and by_name.role == "mask":
            return by_name
        folder_role = None
        for parent in reversed(rel_path.parts[:-1]):
            lowered = parent.lower()
            if lowered in IMAGE_DIR_NAMES or lowered in MASK_DIR_NAMES:
                folder_role = "image" if lowered in IMAGE_DIR_NAMES else "mask"
                break
        if folder_role == "mask":
            return FileRole("mask", by_name.name if by_name is not None else rel_path.stem)
        if by_name is not None:
            return by_name
        if folder_role == "image":
            return FileRole("image", rel_path.stem)
        return None

    def collect_metadata(self, raw_dir: Path, names: Sequence[str]) -> dict[str, dict[str, Optional[str]]]:
        """Metadata columns per name (every name the same keys, string values). None by default."""
        return {name: {} for name in names}

    def mask_foreground(self, mask: Image.Image) -> tuple[np.ndarray, bool]:
        """Foreground of one mask file as a bool (H, W) array, and whether it was a 0/1 mask.

        ``"threshold"``: the mask as 8-bit gray, foreground where >= 128 (the paper's evaluation reads the
        file as gray, divides by 255 and thresholds at 0.5). A mask whose only values are 0 and 1 is a
        label map saved without scaling; it is read as 0/1 instead of becoming empty.
        ``"nonzero"``: instance label maps, foreground where any channel is > 0.
        """
        if self.mask_rule == "nonzero":
            values = np.asarray(mask)  # palette indices / raw labels, no conversion
            if values.ndim == 3 and mask.mode in ("LA", "La", "PA", "RGBA", "RGBa"):
                values = values[..., :-1]  # an opaque alpha channel is not a label
            return (values > 0 if values.ndim == 2 else (values > 0).any(axis=-1)), False
        gray = np.asarray(mask if mask.mode == "L" else mask.convert("L"))
        if gray.max(initial=0) == 1:
            return gray == 1, True
        return gray >= 128, False


def _iter_raw_files(raw_dir: Path, accept: Optional[Callable[[Path], bool]] = None) -> Iterator[Path]:
    """Image files under `raw_dir` (by extension), or the files `accept` takes, skipping hidden ones."""
    for root, dirs, files in os.walk(raw_dir, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d.lower() not in SKIPPED_DIR_NAMES)
        for name in sorted(files):
            if name.startswith("."):
                continue
            if (accept(Path(root, name)) if accept is not None else Path(name).suffix.lower() in IMAGE_EXTENSIONS):
                yield Path(root, name)


def scan_raw_dir(raw_dir: str | os.PathLike, converter: BenchmarkConverter) -> RawIndex:
    """Index the image and mask files of a raw download (any nesting, any extension case).

    Args:
        raw_dir (`str` or `os.PathLike`): the extracted download.
        converter (`BenchmarkConverter`): decides what each file is.

    Returns:
        `RawIndex`: files per name (lists, so that duplicates can be reported).
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise FileNotFoundError(
            f"Raw {converter.display_name} folder {raw_dir} does not exist. Download and extract the dataset "
            f"(expected layout: {converter.layout}) and pass its folder as --raw_dir."
        )
    images: dict[str, list[Path]] = {}
    masks: dict[str, dict[int, list[Path]]] = {}
    ignored = 0
    for path in _iter_raw_files(raw_dir):
        role = converter.classify(path.relative_to(raw_dir))
        if role is None:
            ignored += 1
        elif role.role == "image":
            images.setdefault(role.name, []).append(path)
        else:
            masks.setdefault(role.name, {}).setdefault(role.part, []).append(path)
    logger.info(
        "Found %d image names and %d mask names under %s (%d other image files ignored)",
        len(images), len(masks), raw_dir, ignored,
    )
    return RawIndex(images=images, masks=masks)


def format_problems(header: str, problems: Mapping[str, Sequence[str]], hint: str) -> str:
    lines = [header]
    for kind, names in problems.items():
        if names:
            lines.append(f"  {kind} ({len(names)}): {_preview(names)}")
    lines.append(hint)
    return "\n".join(lines)


def relative_path(path: Path, raw_dir: Path) -> str:
    try:
        return str(path.relative_to(raw_dir))
    except ValueError:
        return str(path)


def find_examples(
    index: RawIndex, names: Sequence[str], raw_dir: Path, converter: BenchmarkConverter, split_source: str
) -> dict[str, tuple[Path, tuple[Path, ...]]]:
    """Match every split name to exactly one image and its mask file(s), or raise listing every problem.

    Raises:
        `RawDatasetError`: some names have no image, no mask, or more than one file for the same role.
    """
    problems: dict[str, list[str]] = {MISSING_IMAGE: [], MISSING_MASK: [], DUPLICATE_NAME: []}
    found = {}
    for name in names:
        image_files = index.images.get(name, [])
        mask_parts = index.masks.get(name, {})
        duplicates = [p for p in image_files] if len(image_files) > 1 else []
        for part_files in mask_parts.values():
            if len(part_files) > 1:
                duplicates += part_files
        if duplicates:
            problems[DUPLICATE_NAME].append(f"{name} ({', '.join(relative_path(p, raw_dir) for p in duplicates)})")
        if not image_files:
            problems[MISSING_IMAGE].append(name)
        if not mask_parts:
            problems[MISSING_MASK].append(name)
        if len(image_files) == 1 and mask_parts and not duplicates:
            found[name] = (image_files[0], tuple(mask_parts[part][0] for part in sorted(mask_parts)))
    if any(problems.values()):
        header = (
            f"Raw {converter.display_name} folder {raw_dir} does not match the split list {split_source} "
            f"({len(names)} names):"
        )
        hint = (
            f"Expected every split name exactly once, as {converter.layout}. Point --raw_dir at the extracted "
            "download, extract every archive in it, remove duplicate copies, or pass the matching --splits."
        )
        raise RawDatasetError(format_problems(header, problems, hint), problems)
    unused = sorted(set(index.images) - set(names))
    if unused:
        logger.info("Ignoring %d images whose names are not in the split (e.g. %s)", len(unused), _preview(unused, 5))
    return found


def find_csv(raw_dir: Path, pattern: str) -> list[Path]:
    """Table files (``.csv``, or Dataverse's tab-separated ``.tab``) under `raw_dir` whose name matches the
    regular expression `pattern` (case-insensitive)."""
    regex = re.compile(pattern, re.IGNORECASE)
    return sorted(
        Path(root, name)
        for root, _, files in os.walk(raw_dir, followlinks=True)
        for name in files
        if name.lower().endswith((".csv", ".tab")) and regex.search(Path(name).stem) and not name.startswith(".")
    )


def read_csv_columns(path: Path, key: str, columns: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Rows of a CSV (or ``.tab``) as ``{row[key]: {new_name: row[old_name]}}``; header and values are
    whitespace- and quote-stripped.

    Args:
        path (`Path`): the table file.
        key (`str`): header of the column holding the example name.
        columns (`Mapping[str, str]`): ``{output column: header}``.
    """
    import csv

    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter="\t" if path.suffix.lower() == ".tab" else ",")
        header = [cell.strip().strip('"') for cell in next(reader, [])]
        lowered = [cell.lower() for cell in header]
        wanted = [key, *columns.values()]
        missing = [name for name in wanted if name.lower() not in lowered]
        if missing:
            raise ValueError(f"{path}: expected the columns {wanted}, missing {missing} (found {header}).")
        positions = {name: lowered.index(name.lower()) for name in wanted}
        table = {}
        for row in reader:
            if len(row) < len(header):
                continue
            cells = [cell.strip().strip('"') for cell in row]
            table[cells[positions[key]]] = {out: cells[positions[src]] for out, src in columns.items()}
    return table


def metadata_from_csv(
    names: Iterable[str], table: Mapping[str, Mapping[str, str]], columns: Sequence[str], source: Path
) -> dict[str, dict[str, Optional[str]]]:
    """Per-name metadata from a CSV table; names absent from it get `None` (with a warning, not silently)."""
    names = list(names)
    absent = [name for name in names if name not in table]
    if absent:
        logger.warning("%s has no row for %d names (their metadata is empty): %s", source, len(absent), _preview(absent))
    return {name: {column: table.get(name, {}).get(column) for column in columns} for name in names}
