"""A user's own folder of images and masks, binary or multi-class, into a Hub-style dataset folder.

``python -m gms_hub.data.prepare folder --images DIR --masks DIR --output_dir DIR`` runs `convert_folder`:

1. **Pairing** (`pair_folder`): an image ``IMAGES/sub/a.jpg`` pairs with the mask ``MASKS/sub/a.<ext>`` or
   ``MASKS/sub/a<mask_suffix>.<ext>`` (any supported extension; sub-folders mirrored). The example's name is
   the relative path without extension (``sub/a``).
2. **Checks**, all reported in one `RawDatasetError` before anything is written: unpaired images, unpaired
   masks, names matching several files, unreadable files, size mismatches; then mask values outside the
   declared encoding, naming each file and the values found.
3. **Mask encoding** (`gms_hub.data.mask_encoding.detect_mask_encoding`), logged and recorded in the card:

   - binary: every mask is ``{0, v}`` for one value ``v`` (``{0, 255}``, ``{0, 1}``, ...); written as 0/255,
     the benchmarks' schema;
   - class indices ``0..K`` (0 = background); written as indices, with ``id2label``;
   - RGB colour masks with a palette ``{"label": [r, g, b], ...}`` (black = background); written as indices
     in the palette's order.

   ``labels`` names the foreground classes in index order (default ``class_1..class_K``) and, for grey masks,
   declares K: one label means binary, several mean class indices ``0..K``. Without it, one foreground value
   is binary and values ``0..K`` (K <= `MAX_INFERRED_CLASSES`) are class indices.
4. **DICOM series** (`group_series`): single-frame DICOM images sharing a Series Instance UID are one volume, grouped
   and put in spatial order by the rules of the predict CLI (`gms_hub.io.series`: Image Position (Patient) along
   the slice normal, Instance Number only as the documented fallback). The series ``IMAGES/case1/*.dcm`` is named
   ``case1/series<Series Number>`` (``series<n>`` when the numbers are not distinct, as predict names it) and its
   rows ``case1/series7_slice<k>``, k from 0 in spatial order, so that 2.5D training (`context_slices`) finds each
   slice's neighbours. Each slice file pairs with its own mask file (same relative path and stem, rule 1; PNG or
   single-frame DICOM); one mask volume for a whole series is not paired. A series whose geometry is not one
   volume (mixed sizes or orientations, two slices at one position, missing slices) is an error naming the files.
5. **Splits**: a split list (``--splits``, the JSON/pickle forms of the benchmarks, see
   `gms_hub.data.splits.load_split_lists`) plus a seeded validation carve-out, or a seeded split of all pairs
   by ``test_fraction`` and ``validation_fraction``. The card and ``splits.json`` record which, with the seed.
   A split is drawn by file, and by series for a DICOM series: all slices of a volume stay in one split (a split
   list names a series as ``case1/series7``).

Multi-class folders carry ``id2label.json`` (``{"0": "background", "1": ...}``) and the same mapping in the
card's metadata; `gms_hub.data.load_id2label` reads it back.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

from PIL import Image

from ..io.medical import MedicalImageError
from ..io.reading import detect_format, detect_medical_format, is_input_file
from ..io.safety import check_output_dir
from ..io.medical import frame_stem, strip_suffix
from .common import (
    DUPLICATE_NAME,
    SIZE_MISMATCH,
    UNREADABLE_FILE,
    RawDatasetError,
    _iter_raw_files,
    format_problems,
)
from .convert import _encode_png, _image_frame_sizes, _read_image, _read_scan_frames, features_for
from .hub import DEFAULT_MAX_SHARD_SIZE, DatasetCardInfo, ParquetShardWriter, staged_output_dir, write_folder_metadata
from .mask_encoding import (
    MAX_INFERRED_CLASSES,
    MaskEncoding,
    detect_mask_encoding,
    mask_frames,
    parse_labels,
    read_palette,
    stored_mask,
    unique_values,
)
from .splits import _preview, carve_validation, load_split_lists

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_INFERRED_CLASSES",
    "FolderPairs",
    "MaskEncoding",
    "convert_folder",
    "detect_mask_encoding",
    "group_series",
    "pair_folder",
    "parse_labels",
    "read_palette",
]


UNPAIRED_IMAGE = "unpaired image"
UNPAIRED_MASK = "unpaired mask"
AMBIGUOUS_PAIR = "image matching several masks"
INCONSISTENT_SERIES = "DICOM series that is not one volume"


@dataclass(frozen=True)
class FolderPairs:
    """Images paired with masks: ``{name: (image path, mask path)}``, names in sorted order."""

    pairs: Mapping[str, tuple[Path, Path]]
    images_dir: Path
    masks_dir: Path


# ---------------------------------------------------------------------------------------------- pairing
def _is_under(path: Path, folder: Path) -> bool:
    return folder == path or folder in path.parents


def _index(folder: Path, skip: Optional[Path]) -> dict[str, list[Path]]:
    """Image, DICOM and NIfTI files by relative path without extension (posix; `a.nii.gz` -> `a`), skipping the
    `skip` subtree."""
    found: dict[str, list[Path]] = {}
    for path in _iter_raw_files(folder, accept=is_input_file):
        if skip is not None and _is_under(path.resolve(), skip):
            continue
        relative = path.relative_to(folder)
        key = relative.with_name(strip_suffix(relative.name)) if detect_medical_format(path) else relative.with_suffix("")
        found.setdefault(key.as_posix(), []).append(path)
    return found


def pair_folder(
    images: str | os.PathLike, masks: str | os.PathLike, mask_suffix: Optional[str] = None
) -> tuple[FolderPairs, dict[str, list[str]]]:
    """Pair every image under `images` with its mask under `masks`.

    Args:
        images (`str` or `os.PathLike`): folder of images (any nesting; png/jpg/bmp/tif, DICOM, NIfTI).
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


# ---------------------------------------------------------------------------------------------- DICOM series
@dataclass(frozen=True)
class SeriesVolume:
    """The paired single-frame DICOM files of one series, as one volume.

    Attributes:
        name (`str`): the volume's name, its folder relative to the images plus `series<n>` (``case1/series7``).
        pairs (`tuple[str, ...]`): the pair names of its files (keys of `FolderPairs.pairs`), in spatial order.
        ordered_by (`str`): `"position"` or `"instance_number"` (`gms_hub.io.series.DicomSeries.ordered_by`).
    """

    name: str
    pairs: tuple
    ordered_by: str

    @property
    def example_names(self) -> list[str]:
        """The rows' names, ``<name>_slice<k>``, k from 0 in spatial order."""
        return [f"{self.name}_slice{k}" for k in range(len(self.pairs))]


def group_series(found: FolderPairs) -> tuple[list[SeriesVolume], list[str]]:
    """Group the paired images that are single-frame DICOM files of one series into volumes in spatial order.

    The grouping and ordering are the predict CLI's (`gms_hub.io.series.group_dicom_series`, `order_series`):
    files sharing a Series Instance UID that can be ordered as slices are a series; any other file stays an
    example of its own.

    Args:
        found (`FolderPairs`): from `pair_folder`.

    Returns:
        `tuple[list[SeriesVolume], list[str]]`: the series, and one problem per series whose geometry does not make
        one volume (its files named, what to do said), for `RawDatasetError`.

    Example:
        >>> pairs, _ = pair_folder("study/images", "study/masks")
        >>> volumes, problems = group_series(pairs)
        >>> volumes[0].name, volumes[0].example_names[:2]
        ('case1/series7', ['case1/series7_slice0', 'case1/series7_slice1'])
    """
    from ..io.series import group_dicom_series

    name_of = {image: name for name, (image, _) in found.pairs.items()}
    candidates = [image for image in name_of if detect_format(image) == "dicom"]
    if len(candidates) < 2:
        return [], []
    series, _ = group_dicom_series(candidates)
    volumes, problems = [], []
    for item in series:
        folder = Path(os.path.commonpath([str(p.parent) for p in item.paths]))
        name = (folder / item.name).relative_to(found.images_dir).as_posix()
        try:
            ordered = item.order()
        except MedicalImageError as err:
            where = folder.relative_to(found.images_dir).as_posix()
            problems.append(f"{name}, {len(item.paths)} files in {where or '.'}/ ({err})")
            continue
        volumes.append(SeriesVolume(name=name, pairs=tuple(name_of[p] for p in ordered.paths),
                                    ordered_by=ordered.ordered_by))
        logger.info("DICOM series %s: %d slices, ordered by %s", name, len(ordered.paths), ordered.ordered_by)
    return volumes, problems


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
                    "Names are image paths relative to --images, without extension (e.g. sub/a), and for a "
                    "DICOM series its folder plus series<n> (e.g. case1/series7; its slices are not listed one by "
                    "one). Fix the list or the folders.",
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
    slice_axis: int = -1,
) -> Path:
    """Convert a folder of images and a folder of masks into a Hub-style dataset folder.

    DICOM and NIfTI images are read by `gms_hub.io.reading.read_input` (the library's intensity rules) and stored as
    8-bit PNGs. A multi-frame DICOM or a 3D NIfTI volume gives one example per frame or slice, named as the predict
    CLI names its outputs (`gms_hub.io.medical.frame_stem`: `<name>_frame<k>` from 1, `<name>_slice<k>` from 0), its
    mask read frame by frame from a mask file of the same format and frame count (stored values as labels); all
    frames of a file go to the same split, since splits are drawn by file.

    Args:
        images (`str` or `os.PathLike`): the images (any nesting; png, jpg, bmp, tif, DICOM, NIfTI).
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
        slice_axis (`int`, defaults to -1): axis 3D NIfTI images and masks are sliced along.

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
    check_output_dir(output_dir, [images], input_flag="--images")  # before anything is read or written
    check_output_dir(output_dir, [masks], input_flag="--masks")
    label_names = parse_labels(labels)
    colours = read_palette(palette) if palette is not None else None
    if colours is not None and label_names is not None:
        raise ValueError("Pass either --labels or --palette: the palette's keys already name the classes.")
    found, problems = pair_folder(images, masks, mask_suffix)
    volumes, problems[INCONSISTENT_SERIES] = group_series(found)
    renames = {pair: example for volume in volumes for pair, example in zip(volume.pairs, volume.example_names)}
    values_by_name, examples = _check_pairs(found, problems, colour=colours is not None, slice_axis=slice_axis,
                                            renames=renames)
    encoding = _check_mask_values(found, values_by_name, label_names, colours)
    # Splits are drawn by unit: a file, or a whole DICOM series (its slices in spatial order).
    units = {name: [name] for name in found.pairs if name not in renames}
    units.update({volume.name: list(volume.pairs) for volume in volumes})
    split_units, provenance = _folder_splits(sorted(units), splits, test_fraction, validation_fraction, seed)
    split_files = {split: [pair for unit in names for pair in units[unit]] for split, names in split_units.items()}
    provenance = _record_provenance(provenance, examples, encoding, command, volumes)
    info = card or DatasetCardInfo(
        pretty_name=Path(output_dir).name,
        license="unknown",
        description="Images and segmentation masks from a local folder, converted with "
        "`python -m gms_hub.data.prepare folder`.",
    )
    stats = _write_folder(found, examples, split_files, encoding, output_dir, info, provenance, colour=colours is not None,
                          slice_axis=slice_axis, max_shard_size=max_shard_size, overwrite=overwrite, progress=progress)
    logger.info("Converted %s into %s: %s", found.images_dir, output_dir,
                ", ".join(f"{s.name} {s.num_examples}" for s in stats))
    return Path(output_dir)


def _check_pairs(
    found: FolderPairs, problems: dict[str, list[str]], colour: bool, slice_axis: int,
    renames: Optional[Mapping[str, str]] = None,
) -> tuple[dict[str, tuple], dict[str, list[str]]]:
    """Read every pair's frame sizes and mask values, adding to `problems` (unreadable files, size mismatches,
    duplicate example names) and raising them all in one `RawDatasetError`. `renames` gives the example name of a
    single-frame pair that is a slice of a DICOM series (``case1/series7_slice3``).

    Returns:
        `(values_by_name, examples)`: the mask values per example (a frame of a multi-frame file is an example),
        and the examples' names per pair name.
    """
    images_dir, masks_dir = found.images_dir, found.masks_dir
    problems.update({UNREADABLE_FILE: [], SIZE_MISMATCH: []})
    values_by_name: dict[str, tuple] = {}
    examples: dict[str, list[str]] = {}
    for name, (image_path, mask_path) in found.pairs.items():
        try:
            kind, sizes = _image_frame_sizes(image_path, slice_axis)
        except Exception as err:  # PIL and the DICOM/NIfTI readers raise several types for a bad file
            problems[UNREADABLE_FILE].append(f"{image_path.relative_to(images_dir).as_posix()} ({err})")
            continue
        try:
            masks = mask_frames(mask_path, colour=colour, slice_axis=slice_axis)
        except Exception as err:
            problems[UNREADABLE_FILE].append(f"{mask_path.relative_to(masks_dir).as_posix()} ({err})")
            continue
        if len(masks) != len(sizes):
            problems[SIZE_MISMATCH].append(f"{name} (image {len(sizes)} frames, mask {len(masks)} frames)")
            continue
        if renames and name in renames and len(sizes) == 1:
            names = [renames[name]]
        else:
            names = [frame_stem(name, kind, index, len(sizes)) for index in range(len(sizes))]
        for example, size, pixels in zip(names, sizes, masks):
            mask_size = (pixels.shape[1], pixels.shape[0])
            if mask_size != size:
                problems[SIZE_MISMATCH].append(f"{example} (image {size[0]}x{size[1]}, mask {mask_size[0]}x{mask_size[1]})")
                break
            values_by_name[example] = unique_values(pixels)
        else:
            examples[name] = names
    counts = Counter(example for names in examples.values() for example in names)
    problems[DUPLICATE_NAME] += [f"{example} (a frame name and a file name)" for example, n in counts.items() if n > 1]
    _raise(
        f"Folders {images_dir} (images) and {masks_dir} (masks) do not pair up:",
        problems,
        "Every image needs exactly one mask of its size, with the same relative path and stem (or the stem plus "
        "--mask_suffix), and every mask an image; a multi-frame DICOM or 3D NIfTI image needs a mask file of the "
        "same format with as many frames; each slice file of a DICOM series needs its own mask file (one mask "
        "volume for a whole series is not paired), and a series must make one volume (one size and orientation, "
        "evenly spaced slices, none missing or duplicated).",
    )
    if not values_by_name:
        raise ValueError(f"No image files (png, jpg, bmp, tif, DICOM, NIfTI) under {images_dir}.")
    return values_by_name, examples


def _check_mask_values(
    found: FolderPairs, values_by_name: Mapping[str, tuple], label_names: Optional[Sequence[str]], colours
) -> MaskEncoding:
    """Detect the masks' encoding, raise every mask with values outside it, and log the classes (warning about
    classes no mask holds)."""
    encoding, value_problems = detect_mask_encoding(values_by_name, label_names, colours)
    _raise(
        f"Masks under {found.masks_dir} hold values outside the declared encoding:",
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
    return encoding


def _record_provenance(provenance: dict, examples: Mapping[str, list[str]], encoding: MaskEncoding,
                       command: Optional[str], volumes: Sequence[SeriesVolume] = ()) -> dict:
    """Add the frame naming (for multi-frame files and DICOM series), the mask encoding and the command to the split
    provenance."""
    if any(len(names) > 1 for names in examples.values()):
        provenance["scan_frames"] = ("DICOM frames (<file>_frame<k>, k from 1) and NIfTI slices (<file>_slice<k>, k "
                                     "from 0) are examples of their own; the split is drawn by file.")
    if volumes:
        provenance["dicom_series"] = {
            "rule": ("single-frame DICOM files sharing a Series Instance UID are one volume, rows <folder>/series<n>"
                     "_slice<k> with k from 0 in spatial order (Image Position (Patient) along the slice normal; "
                     "Instance Number when no file has a position); a series stays whole in one split."),
            "series": {volume.name: {"slices": len(volume.pairs), "ordered_by": volume.ordered_by} for volume in volumes},
        }
    provenance["mask_encoding"] = encoding.describe()
    provenance["command"] = command or "python -m gms_hub.data.prepare folder --images IMAGES --masks MASKS --output_dir OUTPUT_DIR"
    return provenance


def _write_folder(found: FolderPairs, examples: Mapping[str, list[str]], split_files: Mapping[str, list[str]],
                  encoding: MaskEncoding, output_dir, info: DatasetCardInfo, provenance: dict, *, colour: bool,
                  slice_axis: int, max_shard_size, overwrite: bool, progress: bool) -> list:
    """Write the examples of every split as parquet shards (images as stored, scan frames as 8-bit PNGs, masks in
    the encoding's stored form) with the card and metadata, into a staged `output_dir`; returns the shard stats."""
    from tqdm.auto import tqdm

    split_names = {split: [example for name in names for example in examples[name]] for split, names in split_files.items()}
    features = features_for([])
    with staged_output_dir(output_dir, overwrite=overwrite) as staging:
        writers = {split: ParquetShardWriter(staging / "data", split, features, max_shard_size=max_shard_size)
                   for split in split_names}
        total = sum(len(names) for names in split_names.values())
        with tqdm(total=total, desc="folder", unit="img", disable=not progress) as bar:
            for split, names in split_files.items():
                for name in names:
                    image_path, mask_path = found.pairs[name]
                    if detect_medical_format(image_path) is None:
                        image_bytes, suffix, _ = _read_image(image_path, exif=True)
                        images = [(image_bytes, suffix)]
                    else:  # frame by frame, as 8-bit PNGs
                        images = ((frame, ".png") for frame, _ in _read_scan_frames(image_path, slice_axis)[2])
                    masks = mask_frames(mask_path, colour=colour, slice_axis=slice_axis)
                    for example, (image_bytes, suffix), pixels in zip(examples[name], images, masks):
                        writers[split].write_row({
                            "image": {"bytes": image_bytes, "path": f"{example}{suffix}"},
                            "mask": {"bytes": _encode_png(Image.fromarray(stored_mask(pixels, encoding))),
                                     "path": f"{example}.png"},
                            "name": example,
                        })
                        bar.update(1)
        stats = [writer.close() for writer in writers.values()]
        write_folder_metadata(staging, info, features, stats, split_names, provenance, encoding.id2label)
    return stats
