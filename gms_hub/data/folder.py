"""A user's own folder of images and masks, binary or multi-class, into a Hub-style dataset folder.

``python -m gms_hub.data.prepare folder --images DIR --masks DIR --output_dir DIR`` runs `convert_folder`:

1. **Pairing** (`pair_folder`): an image ``IMAGES/sub/a.jpg`` pairs with the mask ``MASKS/sub/a.<ext>`` or
   ``MASKS/sub/a<mask_suffix>.<ext>`` (any supported extension; sub-folders mirrored). The example's name is
   the relative path without extension (``sub/a``).
2. **Checks**, all reported in one `RawDatasetError` before anything is written: unpaired images, unpaired
   masks, names matching several files, unreadable files, size mismatches; then mask values outside the
   declared encoding, naming each file and the values found.
3. **Mask encoding** (`detect_mask_encoding`), logged and recorded in the card:

   - binary: every mask is ``{0, v}`` for one value ``v`` (``{0, 255}``, ``{0, 1}``, ...); written as 0/255,
     the benchmarks' schema;
   - class indices ``0..K`` (0 = background); written as indices, with ``id2label``;
   - RGB colour masks with a palette ``{"label": [r, g, b], ...}`` (black = background); written as indices
     in the palette's order.

   ``labels`` names the foreground classes in index order (default ``class_1..class_K``) and, for grey masks,
   declares K: one label means binary, several mean class indices ``0..K``. Without it, one foreground value
   is binary and values ``0..K`` (K <= `MAX_INFERRED_CLASSES`) are class indices.
4. **Splits**: a split list (``--splits``, the JSON/pickle forms of the benchmarks, see
   `gms_hub.data.splits.load_split_lists`) plus a seeded validation carve-out, or a seeded split of all pairs
   by ``test_fraction`` and ``validation_fraction``. The card and ``splits.json`` record which, with the seed.

Multi-class folders carry ``id2label.json`` (``{"0": "background", "1": ...}``) and the same mapping in the
card's metadata; `gms_hub.data.load_id2label` reads it back.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
from PIL import Image

from .common import (
    DUPLICATE_NAME,
    SIZE_MISMATCH,
    UNREADABLE_FILE,
    RawDatasetError,
    _iter_raw_files,
    format_problems,
)
from .convert import _encode_png, _read_image, features_for
from .hub import DEFAULT_MAX_SHARD_SIZE, DatasetCardInfo, ParquetShardWriter, staged_output_dir, write_folder_metadata
from .splits import _preview, carve_validation, load_split_lists

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_INFERRED_CLASSES",
    "FolderPairs",
    "MaskEncoding",
    "convert_folder",
    "detect_mask_encoding",
    "pair_folder",
    "parse_labels",
    "read_palette",
]

MAX_INFERRED_CLASSES = 31
"""Largest class index inferred without ``--labels``: more distinct values look like an 8-bit grey mask
(anti-aliased or JPEG-compressed), not like class indices. Declare more classes with ``labels``."""

UNPAIRED_IMAGE = "unpaired image"
UNPAIRED_MASK = "unpaired mask"
AMBIGUOUS_PAIR = "image matching several masks"
VALUE_OUTSIDE = "mask values outside the declared set"


@dataclass(frozen=True)
class FolderPairs:
    """Images paired with masks: ``{name: (image path, mask path)}``, names in sorted order."""

    pairs: Mapping[str, tuple[Path, Path]]
    images_dir: Path
    masks_dir: Path


@dataclass(frozen=True)
class MaskEncoding:
    """How the masks of a folder are read, and what they become.

    Args:
        kind (`str`): ``"binary"``, ``"index"`` or ``"palette"``.
        id2label (`dict[int, str]`): class names, 0 = background.
        foreground_value (`int`, *optional*): binary only, the ``v`` of ``{0, v}``.
        palette (`dict[tuple[int, int, int], int]`, *optional*): palette only, colour -> class index.
    """

    kind: str
    id2label: dict[int, str]
    foreground_value: Optional[int] = None
    palette: Optional[dict[tuple[int, int, int], int]] = field(default=None)

    @property
    def num_classes(self) -> int:
        """Foreground classes."""
        return len(self.id2label) - 1

    def describe(self) -> str:
        """One line for the log and the card."""
        if self.kind == "binary":
            return (f"binary masks {{0, {self.foreground_value}}} (foreground `{self.id2label[1]}`), "
                    "written as 0/255")
        if self.kind == "index":
            return f"class-index masks 0..{self.num_classes}, written as class indices"
        colours = ", ".join(f"{list(colour)} -> {index}" for colour, index in self.palette.items())
        return f"RGB colour masks with a palette (black -> 0, {colours}), written as class indices"

    def allowed_values(self) -> set:
        if self.kind == "binary":
            return {0, self.foreground_value}
        if self.kind == "index":
            return set(range(self.num_classes + 1))
        return {(0, 0, 0), *self.palette}


# ---------------------------------------------------------------------------------------------- arguments
def parse_labels(labels: Optional[str | Sequence[str]]) -> Optional[list[str]]:
    """``"benign,malignant"`` (or a list) -> ``["benign", "malignant"]``; `None` stays `None`.

    Example:
        >>> parse_labels("benign, malignant")
        ['benign', 'malignant']
    """
    if labels is None:
        return None
    names = [name.strip() for name in (labels.split(",") if isinstance(labels, str) else labels)]
    if not names or any(not name for name in names):
        raise ValueError(f"--labels must be comma-separated non-empty names like 'benign,malignant', got {labels!r}.")
    if len(set(names)) != len(names) or "background" in names:
        raise ValueError(f"--labels must be unique foreground class names (not 'background'), got {names}.")
    if len(names) > 255:
        raise ValueError(f"At most 255 foreground classes fit an 8-bit mask, got {len(names)} labels.")
    return names


def read_palette(palette: str | os.PathLike | Mapping) -> dict[str, tuple[int, int, int]]:
    """Read a palette ``{"label": [r, g, b], ...}`` from a JSON file, a JSON string or a mapping.

    The order of the entries is the class order (first entry = class 1). An entry whose colour is black
    names the background and is dropped (black is always background).

    Returns:
        `dict[str, tuple[int, int, int]]`: foreground label -> colour.

    Example:
        >>> read_palette('{"benign": [255, 0, 0], "malignant": [0, 255, 0]}')
        {'benign': (255, 0, 0), 'malignant': (0, 255, 0)}
    """
    source = palette
    if not isinstance(palette, Mapping):
        text = os.fspath(palette)
        if os.path.isfile(text):
            text = Path(text).read_text(encoding="utf-8")
        elif not text.lstrip().startswith("{"):
            raise FileNotFoundError(f"--palette {text!r} is neither a JSON file nor a JSON object.")
        try:
            palette = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"--palette is not valid JSON ({err}); expected {{\"label\": [r, g, b], ...}}.") from err
    if not isinstance(palette, Mapping) or not palette:
        raise ValueError(f"--palette must be a non-empty JSON object {{\"label\": [r, g, b], ...}}, got {source!r}.")
    colours: dict[str, tuple[int, int, int]] = {}
    for label, colour in palette.items():
        if (not isinstance(colour, (list, tuple)) or len(colour) != 3
                or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in colour)):
            raise ValueError(f"--palette entry {label!r}: expected [r, g, b] with integers 0..255, got {colour!r}.")
        colour = tuple(int(c) for c in colour)
        if colour == (0, 0, 0):
            logger.info("Palette entry %r is black: black is always background", label)
            continue
        colours[str(label)] = colour
    repeated = [colour for colour, count in Counter(colours.values()).items() if count > 1]
    if repeated:
        raise ValueError(f"--palette gives the same colour to several classes: {repeated}.")
    if not colours:
        raise ValueError("--palette has no foreground colour (black is background).")
    return colours


# ---------------------------------------------------------------------------------------------- pairing
def _is_under(path: Path, folder: Path) -> bool:
    return folder == path or folder in path.parents


def _index(folder: Path, skip: Optional[Path]) -> dict[str, list[Path]]:
    """Files by relative path without extension (posix), skipping the `skip` subtree."""
    found: dict[str, list[Path]] = {}
    for path in _iter_raw_files(folder):
        if skip is not None and _is_under(path.resolve(), skip):
            continue
        found.setdefault(path.relative_to(folder).with_suffix("").as_posix(), []).append(path)
    return found


def pair_folder(
    images: str | os.PathLike, masks: str | os.PathLike, mask_suffix: Optional[str] = None
) -> tuple[FolderPairs, dict[str, list[str]]]:
    """Pair every image under `images` with its mask under `masks`.

    Args:
        images (`str` or `os.PathLike`): folder of images (any nesting, png/jpg/bmp/tif).
        masks (`str` or `os.PathLike`): folder of masks, mirroring the image sub-folders. May be the images
            folder itself when `mask_suffix` tells the masks apart.
        mask_suffix (`str`, *optional*): suffix of mask stems, e.g. ``"_mask"``; the plain stem pairs too.

    Returns:
        `tuple[FolderPairs, dict[str, list[str]]]`: the pairs found and the problems per kind (unpaired image,
        unpaired mask, duplicate name, image matching several masks), empty lists when all is well.

    Example:
        >>> pairs, problems = pair_folder("scans/images", "scans/masks", mask_suffix="_mask")
        >>> sorted(pairs.pairs)[:2]
        ['case1/slice_01', 'case1/slice_02']
    """
    images_dir, masks_dir = Path(images).expanduser(), Path(masks).expanduser()
    for flag, folder in (("--images", images_dir), ("--masks", masks_dir)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{flag} folder {folder} does not exist; pass the folder holding the {flag[2:]}.")
    images_abs, masks_abs = images_dir.resolve(), masks_dir.resolve()
    suffix = mask_suffix or ""
    if images_abs == masks_abs:
        if not suffix:
            raise ValueError(
                f"--images and --masks are the same folder ({images_dir}): pass --mask_suffix (e.g. _mask) so that "
                "masks can be told apart from images, or put the masks in their own folder."
            )
        everything = _index(images_dir, None)
        image_index = {key: paths for key, paths in everything.items() if not key.endswith(suffix)}
        mask_index = {key: paths for key, paths in everything.items() if key.endswith(suffix)}
    else:
        image_index = _index(images_dir, masks_abs if _is_under(masks_abs, images_abs) else None)
        mask_index = _index(masks_dir, images_abs if _is_under(images_abs, masks_abs) else None)
    logger.info("Found %d images under %s and %d masks under %s", len(image_index), images_dir, len(mask_index),
                masks_dir)

    problems: dict[str, list[str]] = {UNPAIRED_IMAGE: [], UNPAIRED_MASK: [], DUPLICATE_NAME: [], AMBIGUOUS_PAIR: []}
    for where, index, root in (("images", image_index, images_dir), ("masks", mask_index, masks_dir)):
        for key, paths in index.items():
            if len(paths) > 1:
                listed = ", ".join(p.relative_to(root).as_posix() for p in paths)
                problems[DUPLICATE_NAME].append(f"{key} in {where} ({listed})")
    pairs: dict[str, tuple[Path, Path]] = {}
    claimed: set[str] = set()
    for key in sorted(image_index):
        candidates = [c for c in dict.fromkeys((key, key + suffix)) if c in mask_index]
        claimed.update(candidates)
        if not candidates:
            problems[UNPAIRED_IMAGE].append(image_index[key][0].relative_to(images_dir).as_posix())
        elif len(candidates) > 1:
            listed = ", ".join(mask_index[c][0].relative_to(masks_dir).as_posix() for c in candidates)
            problems[AMBIGUOUS_PAIR].append(f"{key} ({listed})")
        elif len(image_index[key]) == 1 and len(mask_index[candidates[0]]) == 1:
            pairs[key] = (image_index[key][0], mask_index[candidates[0]][0])
    problems[UNPAIRED_MASK] = sorted(
        paths[0].relative_to(masks_dir).as_posix() for key, paths in mask_index.items() if key not in claimed
    )
    return FolderPairs(pairs=pairs, images_dir=images_dir, masks_dir=masks_dir), problems


# ---------------------------------------------------------------------------------------------- mask values
def _mask_pixels(path: Path, colour: bool) -> np.ndarray:
    """A mask file as (H, W) integers (grey/index) or (H, W, 3) uint8 (`colour`, for a palette).

    Raises `ValueError` for a colour mask read without a palette.
    """
    with Image.open(path) as mask:
        mask.load()
        if colour:
            return np.asarray(mask.convert("RGB"))
        if mask.mode == "1":
            return np.asarray(mask.convert("L"))
        values = np.asarray(mask)  # L, P (palette indices), I;16, I: the stored values
        if values.ndim == 3:
            if mask.mode in ("LA", "La", "PA", "RGBA", "RGBa"):
                values = values[..., :-1]  # an alpha channel is not a label
            if values.shape[-1] > 1 and not (values == values[..., :1]).all():
                raise ValueError(
                    f"colour mask (mode {mask.mode}) without --palette; pass --palette '{{\"label\": [r, g, b]}}'"
                )
            values = values[..., 0]
        if values.dtype.kind == "f":
            if not np.array_equal(values, np.round(values)):
                raise ValueError(f"floating-point mask (mode {mask.mode}) with non-integer values")
            values = values.astype(np.int64)
        return values


def _unique_values(pixels: np.ndarray) -> tuple:
    if pixels.ndim == 3:
        codes = np.unique((pixels[..., 0].astype(np.int64) << 16) | (pixels[..., 1].astype(np.int64) << 8) | pixels[..., 2])
        return tuple((int(c >> 16), int((c >> 8) & 255), int(c & 255)) for c in codes)
    return tuple(int(v) for v in np.unique(pixels))


def _format_values(values: Sequence, limit: int = 8) -> str:
    shown = [list(v) if isinstance(v, tuple) else v for v in values[:limit]]
    text = ", ".join(str(v) for v in shown)
    return "{" + text + (f", ... ({len(values)} values)" if len(values) > limit else "") + "}"


def detect_mask_encoding(
    values_by_name: Mapping[str, Sequence],
    labels: Optional[Sequence[str]] = None,
    palette: Optional[Mapping[str, tuple[int, int, int]]] = None,
) -> tuple[MaskEncoding, dict[str, list[str]]]:
    """Decide how masks are read from the values each one holds, and list the masks that do not fit.

    Args:
        values_by_name (`Mapping[str, Sequence]`): the distinct values of each mask (ints, or RGB tuples with
            a palette).
        labels (`Sequence[str]`, *optional*): foreground class names; declares K for grey masks.
        palette (`Mapping[str, tuple]`, *optional*): colour masks: label -> colour, in class order.

    Returns:
        `tuple[MaskEncoding, dict[str, list[str]]]`: the encoding (`None` when no encoding fits) and the
        problems: ``{"mask values outside the declared set (<declared>)": ["name (values ...)", ...]}`` or ``{}``.

    Raises:
        `ValueError`: `labels` together with `palette` (the palette names the classes).

    Example:
        >>> encoding, problems = detect_mask_encoding({"a": (0, 255), "b": (0,)})
        >>> encoding.kind, encoding.foreground_value
        ('binary', 255)
    """
    if palette is not None:
        if labels is not None:
            raise ValueError("Pass either --labels or --palette: the palette's keys already name the classes.")
        id2label = {0: "background", **{index: label for index, label in enumerate(palette, start=1)}}
        encoding = MaskEncoding("palette", id2label, palette={tuple(c): i for i, c in enumerate(palette.values(), 1)})
        declared = f"black or a palette colour {_format_values(list(encoding.palette))}"
    else:
        union = sorted(set().union(*map(set, values_by_name.values()))) if values_by_name else []
        nonzero = [v for v in union if v != 0]
        count_files = Counter(v for values in values_by_name.values() for v in set(values) if v != 0)
        num_labels = None if labels is None else len(labels)
        if num_labels == 1 or (num_labels is None and len(nonzero) <= 1):
            foreground = count_files.most_common(1)[0][0] if count_files else 255
            if not count_files:
                logger.warning("Every mask is empty (all 0): reading them as binary masks {0, 255}")
            encoding = MaskEncoding("binary", {0: "background", 1: labels[0] if labels else "class_1"}, foreground)
            declared = f"binary {{0, {foreground}}}" + (", one label given" if labels else "")
        elif num_labels is not None:
            names = {index: label for index, label in enumerate(labels, start=1)}
            encoding = MaskEncoding("index", {0: "background", **names})
            declared = f"class indices 0..{num_labels}, {num_labels} labels given"
        elif max(union) <= MAX_INFERRED_CLASSES:
            k = max(union)
            encoding = MaskEncoding("index", {0: "background", **{i: f"class_{i}" for i in range(1, k + 1)}})
            declared = f"class indices 0..{k}"
        else:
            encoding = None
            declared = (
                f"neither binary (one foreground value, {{0, v}}) nor class indices 0..K with K <= "
                f"{MAX_INFERRED_CLASSES}; all masks together hold {_format_values(union)}"
            )
    allowed = encoding.allowed_values() if encoding is not None else set(range(MAX_INFERRED_CLASSES + 1))
    outside = []
    for name, values in values_by_name.items():
        bad = [v for v in values if v not in allowed]
        if bad:
            outside.append(f"{name} (values {_format_values(list(values))}, outside: {_format_values(bad)})")
    if encoding is None and not outside:  # cannot happen: some value exceeds MAX_INFERRED_CLASSES
        raise AssertionError("no encoding and no offending mask")
    return encoding, ({f"{VALUE_OUTSIDE} ({declared})": outside} if outside else {})


def _to_output(pixels: np.ndarray, encoding: MaskEncoding) -> np.ndarray:
    """The stored mask: (H, W) uint8, 0/255 for binary, class indices otherwise."""
    if encoding.kind == "binary":
        return (pixels == encoding.foreground_value).astype(np.uint8) * 255
    if encoding.kind == "index":
        return pixels.astype(np.uint8)
    codes = (pixels[..., 0].astype(np.int64) << 16) | (pixels[..., 1].astype(np.int64) << 8) | pixels[..., 2]
    out = np.zeros(codes.shape, dtype=np.uint8)
    for (r, g, b), index in encoding.palette.items():
        out[codes == ((r << 16) | (g << 8) | b)] = index
    return out


# ---------------------------------------------------------------------------------------------- splits
def _folder_splits(
    names: Sequence[str],
    splits: Optional[str | os.PathLike],
    test_fraction: float,
    validation_fraction: float,
    seed: int,
) -> tuple[dict[str, list[str]], dict]:
    """Names per split and the provenance to record."""
    if splits is not None:
        lists = load_split_lists(splits)
        listed = list(lists.train) + list(lists.test)
        missing = sorted(set(listed) - set(names))
        if missing:
            raise RawDatasetError(
                format_problems(
                    f"The split list {lists.source} names pairs that are not in the folder:",
                    {"missing pair": missing},
                    "Names are image paths relative to --images, without extension (e.g. sub/a). Fix the list "
                    "or the folders.",
                ),
                {"missing pair": missing},
            )
        unused = sorted(set(names) - set(listed))
        if unused:
            logger.warning("Leaving out %d pairs that the split list does not name: %s", len(unused), _preview(unused))
        train, validation = (list(lists.train), []) if validation_fraction == 0 else carve_validation(
            lists.train, validation_fraction, seed)
        provenance = {
            "split_method": "list",
            "split_source": lists.source if "://" in lists.source else Path(lists.source).name,
            "split_sha256": lists.sha256,
            "validation_fraction": validation_fraction,
            "seed": seed,
            "stratify_by": None,
            "validation_names": validation,
        }
        return {"train": train, "validation": validation, "test": list(lists.test)}, provenance
    for flag, value in (("--test_fraction", test_fraction), ("--validation_fraction", validation_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{flag} must be in [0, 1), got {value}.")
    if test_fraction + validation_fraction >= 1:
        raise ValueError(f"--test_fraction + --validation_fraction must leave pairs for train, got "
                         f"{test_fraction} + {validation_fraction}.")
    rest, test = (list(names), []) if test_fraction == 0 else carve_validation(names, test_fraction, seed)
    # The validation fraction is of all pairs; carve it from what test left.
    share = validation_fraction / (1 - test_fraction)
    train, validation = (rest, []) if validation_fraction == 0 else carve_validation(rest, share, seed)
    provenance = {
        "split_method": "fractions",
        "test_fraction": test_fraction,
        "validation_fraction": validation_fraction,
        "seed": seed,
    }
    return {"train": train, "validation": validation, "test": test}, provenance


# ---------------------------------------------------------------------------------------------- conversion
def _raise(header: str, problems: Mapping[str, Sequence[str]], hint: str) -> None:
    problems = {kind: list(names) for kind, names in problems.items() if names}
    if problems:
        raise RawDatasetError(format_problems(header, problems, hint + " Nothing was written."), problems)


def convert_folder(
    images: str | os.PathLike,
    masks: str | os.PathLike,
    output_dir: str | os.PathLike,
    mask_suffix: Optional[str] = None,
    labels: Optional[str | Sequence[str]] = None,
    palette: Optional[str | os.PathLike | Mapping] = None,
    splits: Optional[str | os.PathLike] = None,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    seed: int = 2333,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    progress: bool = True,
    command: Optional[str] = None,
    card: Optional[DatasetCardInfo] = None,
) -> Path:
    """Convert a folder of images and a folder of masks into a Hub-style dataset folder.

    Args:
        images (`str` or `os.PathLike`): the images (any nesting; png, jpg, bmp, tif).
        masks (`str` or `os.PathLike`): the masks, sub-folders mirroring `images`.
        output_dir (`str` or `os.PathLike`): the dataset folder to create.
        mask_suffix (`str`, *optional*): suffix of mask stems (``"_mask"``: ``a.png`` pairs with ``a_mask.png``).
        labels (`str` or `Sequence[str]`, *optional*): foreground class names in index order
            (``"benign,malignant"``); default ``class_1..class_K``.
        palette (`str`, `os.PathLike` or `Mapping`, *optional*): colour masks: ``{"label": [r, g, b]}`` as a
            mapping, JSON file or JSON string; black is background.
        splits (`str` or `os.PathLike`, *optional*): split list (.json/.pkl, ``{"train": [...], "test": [...]}``)
            of example names (image paths relative to `images`, without extension); `validation_fraction` of
            its train list becomes validation. Without it, a seeded split by the fractions.
        test_fraction (`float`, defaults to 0.2): share of all pairs for test (without `splits`).
        validation_fraction (`float`, defaults to 0.1): share of all pairs (of the train list with `splits`)
            for validation; 0 for none.
        seed (`int`, defaults to 2333): seed of the split.
        max_shard_size (`int` or `str`, defaults to ``"500MB"``): parquet shard size limit.
        overwrite (`bool`, defaults to `False`): replace an existing non-empty `output_dir`.
        progress (`bool`, defaults to `True`): show a progress bar.
        command (`str`, *optional*): the command recorded in the card.
        card (`DatasetCardInfo`, *optional*): name, licence and description for the card.

    Returns:
        `Path`: `output_dir`.

    Raises:
        `RawDatasetError`: unpaired, duplicated, unreadable or mismatched files, or mask values outside the
            declared encoding (every offending name listed, nothing written).

    Example:
        >>> convert_folder("scans/images", "scans/masks", "my-dataset", labels="benign,malignant")
        >>> load_id2label("my-dataset")
        {0: 'background', 1: 'benign', 2: 'malignant'}
    """
    from tqdm.auto import tqdm

    label_names = parse_labels(labels)
    colours = read_palette(palette) if palette is not None else None
    if colours is not None and label_names is not None:
        raise ValueError("Pass either --labels or --palette: the palette's keys already name the classes.")
    found, problems = pair_folder(images, masks, mask_suffix)
    images_dir, masks_dir = found.images_dir, found.masks_dir

    # Sizes and mask values, every file checked before one report.
    problems.update({UNREADABLE_FILE: [], SIZE_MISMATCH: []})
    values_by_name: dict[str, tuple] = {}
    for name, (image_path, mask_path) in found.pairs.items():
        try:
            with Image.open(image_path) as image:
                image.load()  # decode everything: a truncated file fails here, before anything is written
                image_size = image.size
        except Exception as err:  # PIL raises several types for a bad file
            problems[UNREADABLE_FILE].append(f"{image_path.relative_to(images_dir).as_posix()} ({err})")
            continue
        try:
            pixels = _mask_pixels(mask_path, colour=colours is not None)
        except Exception as err:
            problems[UNREADABLE_FILE].append(f"{mask_path.relative_to(masks_dir).as_posix()} ({err})")
            continue
        mask_size = (pixels.shape[1], pixels.shape[0])
        if mask_size != image_size:
            problems[SIZE_MISMATCH].append(
                f"{name} (image {image_size[0]}x{image_size[1]}, mask {mask_size[0]}x{mask_size[1]})"
            )
            continue
        values_by_name[name] = _unique_values(pixels)
    _raise(
        f"Folders {images_dir} (images) and {masks_dir} (masks) do not pair up:",
        problems,
        "Every image needs exactly one mask of its size, with the same relative path and stem (or the stem plus "
        "--mask_suffix), and every mask an image.",
    )
    if not values_by_name:
        raise ValueError(f"No image files (png, jpg, bmp, tif) under {images_dir}.")
    encoding, value_problems = detect_mask_encoding(values_by_name, label_names, colours)
    _raise(
        f"Masks under {masks_dir} hold values outside the declared encoding:",
        value_problems,
        "Binary masks hold 0 and one foreground value, class-index masks 0..K (declare K with --labels), colour "
        "masks black and the --palette colours (no anti-aliasing or JPEG compression).",
    )
    logger.info("Masks read as %s; classes %s", encoding.describe(), encoding.id2label)
    present = Counter(v for values in values_by_name.values() for v in values)
    if encoding.kind == "index":
        absent = [encoding.id2label[i] for i in range(1, encoding.num_classes + 1) if present[i] == 0]
        if absent:
            logger.warning("Classes never present in any mask: %s", absent)

    split_names, provenance = _folder_splits(list(found.pairs), splits, test_fraction, validation_fraction, seed)
    provenance["mask_encoding"] = encoding.describe()
    provenance["command"] = command or "python -m gms_hub.data.prepare folder --images IMAGES --masks MASKS --output_dir OUTPUT_DIR"
    info = card or DatasetCardInfo(
        pretty_name=Path(output_dir).name,
        license="unknown",
        description="Images and segmentation masks from a local folder, converted with "
        "`python -m gms_hub.data.prepare folder`.",
    )
    features = features_for([])
    with staged_output_dir(output_dir, overwrite=overwrite) as staging:
        writers = {split: ParquetShardWriter(staging / "data", split, features, max_shard_size=max_shard_size)
                   for split in split_names}
        total = sum(len(names) for names in split_names.values())
        with tqdm(total=total, desc="folder", unit="img", disable=not progress) as bar:
            for split, names in split_names.items():
                for name in names:
                    image_path, mask_path = found.pairs[name]
                    image_bytes, suffix, _ = _read_image(image_path)
                    stored = _to_output(_mask_pixels(mask_path, colour=colours is not None), encoding)
                    writers[split].write_row({
                        "image": {"bytes": image_bytes, "path": f"{name}{suffix}"},
                        "mask": {"bytes": _encode_png(Image.fromarray(stored)), "path": f"{name}.png"},
                        "name": name,
                    })
                    bar.update(1)
        stats = [writer.close() for writer in writers.values()]
        write_folder_metadata(staging, info, features, stats, split_names, provenance, encoding.id2label)
    logger.info("Converted %s into %s: %s", images_dir, output_dir,
                ", ".join(f"{s.name} {s.num_examples}" for s in stats))
    return Path(output_dir)
