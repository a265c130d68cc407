"""Decoding a raw benchmark and streaming it into a Hub-style dataset folder.

Conversion runs in two checked phases, so that every problem is reported in full, never one at a time:

1. names (`gms_hub.data.common.find_examples`): every split name must have exactly one image and at least
   one mask (errors: missing image, missing mask, duplicate name);
2. pixels (here): every file must decode and each mask must have its image's size (errors: unreadable
   file, size mismatch).

Decoding streams example by example, optionally in worker processes, into parquet row groups, so memory
stays bounded whatever the dataset size (measured for HAM10000's 10,015 images by
``benchmarks/data_convert_memory.py``).
"""

from __future__ import annotations

import io
import itertools
import logging
import multiprocessing
import os
from functools import partial
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from PIL import Image

from ..io.images import apply_exif_orientation
from ..io.safety import check_output_dir
from .common import (
    SIZE_MISMATCH,
    UNREADABLE_FILE,
    BenchmarkConverter,
    RawDatasetError,
    RawExample,
    find_examples,
    format_problems,
    relative_path,
    scan_raw_dir,
)
from .hub import DEFAULT_MAX_SHARD_SIZE, ParquetShardWriter, staged_output_dir, write_folder_metadata
from .splits import _preview, carve_validation, load_split_lists

logger = logging.getLogger(__name__)

__all__ = ["convert_benchmark", "features_for"]

KEPT_FORMATS = frozenset({"JPEG", "PNG"})  # stored as the original bytes; anything else is re-encoded as PNG


def _encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _read_image(path: Path, exif: bool = False) -> tuple[bytes, str, tuple[int, int]]:
    """The bytes to store for an image (original JPEG/PNG bytes when already RGB or L), its suffix and size.

    With `exif`, an image with an EXIF orientation is stored turned as viewers show it (re-encoded as PNG); the
    benchmarks' converters keep the paper's bytes. Raises whatever PIL raises for a file that does not fully decode.
    """
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()  # decode everything: a truncated file fails here, not during training
        image = apply_exif_orientation(opened) if exif else opened
        if image is opened and image.format in KEPT_FORMATS and image.mode in ("RGB", "L"):
            return data, path.suffix.lower(), image.size
        if image.mode in ("RGB", "L"):
            converted = image
        elif image.mode in ("1", "LA", "La"):
            converted = image.convert("L")
        elif image.mode in ("P", "PA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
            converted = image.convert("RGB")  # alpha dropped, palette expanded: the pixels as displayed
        else:
            raise ValueError(f"unsupported image mode {image.mode!r} (expected 8-bit RGB or grayscale)")
        return _encode_png(converted), ".png", image.size


FRAME_BATCH = 8  # DICOM frames / NIfTI slices decoded per read while converting a scan


def _read_scan_frames(path: Path, slice_axis: int = -1) -> tuple[str, int, Iterator[tuple[bytes, tuple[int, int]]]]:
    """A DICOM or NIfTI image's kind (`"dicom"`/`"nifti"`), its number of frames, and its frames as 8-bit PNGs.

    The frames are read by `gms_hub.io.reading.read_input`, so the library's intensity rules apply (rescale,
    VOI LUT or window, else min..max; MONOCHROME1 inverted; colour to RGB; one range per NIfTI volume); the
    [0, 1] values are stored rounded to 0..255, grayscale (`L`) or RGB, as the benchmarks' images are. The
    iterator yields `(png bytes, (width, height))` per frame, decoding `FRAME_BATCH` frames at a time.
    """
    from ..io.reading import read_input

    scan = read_input(path, slice_axis=slice_axis)

    def frames() -> Iterator[tuple[bytes, tuple[int, int]]]:
        for batch in scan.batches(FRAME_BATCH):
            for frame in batch:  # float32 (H, W) or (H, W, 3) in [0, 1]
                pixels = np.rint(np.clip(frame, 0.0, 1.0) * 255).astype(np.uint8)
                yield _encode_png(Image.fromarray(pixels)), (pixels.shape[1], pixels.shape[0])

    return scan.kind, scan.num_frames, frames()


def _image_frame_sizes(path: Path, slice_axis: int = -1) -> tuple[Optional[str], list[tuple[int, int]]]:
    """The kind (`"dicom"`, `"nifti"`, `None` for an image file) and each frame's (width, height), decoding every
    frame: a truncated file fails here, before anything is written."""
    from ..io.reading import detect_medical_format

    if detect_medical_format(path) is None:
        with Image.open(path) as image:
            image.load()
            return None, [apply_exif_orientation(image).size]  # the size as viewers show it
    kind, _, frames = _read_scan_frames(path, slice_axis)
    return kind, [size for _, size in frames]


def _load_example(converter: BenchmarkConverter, raw_dir: Path, example: RawExample) -> tuple[Optional[dict], list, dict]:
    """Decode one example into a row; returns ``(row or None, problems, notes)`` and never raises for bad files."""
    problems: list[tuple[str, str]] = []
    notes = {"zero_one": False, "empty": False}
    try:
        image_bytes, suffix, size = _read_image(example.image)
    except Exception as err:  # PIL raises several types (OSError, SyntaxError, ValueError, DecompressionBomb...)
        problems.append((UNREADABLE_FILE, f"{example.name} ({relative_path(example.image, raw_dir)}: {err})"))
        image_bytes, size = None, None
    foreground = None
    for mask_path in example.masks:
        try:
            with Image.open(mask_path) as mask:
                mask.load()
                mask_fg, zero_one = converter.mask_foreground(mask)
        except Exception as err:
            problems.append((UNREADABLE_FILE, f"{example.name} ({relative_path(mask_path, raw_dir)}: {err})"))
            continue
        notes["zero_one"] |= zero_one
        mask_size = (mask_fg.shape[1], mask_fg.shape[0])
        reference = size  # the image's size, or the first readable mask's when the image is unreadable
        if reference is None and foreground is not None:
            reference = (foreground.shape[1], foreground.shape[0])
        if reference is not None and mask_size != reference:
            problems.append(
                (SIZE_MISMATCH, f"{example.name} (image {reference[0]}x{reference[1]}, "
                                f"mask {relative_path(mask_path, raw_dir)} {mask_size[0]}x{mask_size[1]})")
            )
            continue
        foreground = mask_fg if foreground is None else (foreground | mask_fg)
    if problems or image_bytes is None or foreground is None:
        return None, problems, notes
    notes["empty"] = not foreground.any()
    mask_bytes = _encode_png(Image.fromarray(foreground.astype(np.uint8) * converter.mask_value(example)))
    row = {
        "image": {"bytes": image_bytes, "path": f"{example.name}{suffix}"},
        "mask": {"bytes": mask_bytes, "path": f"{example.name}.png"},
        "name": example.name,
        **example.metadata,
    }
    return row, problems, notes


def _batched(items: Sequence, size: int) -> Iterator[Sequence]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _decoded(examples: Sequence[RawExample], load, num_proc: int) -> Iterator[tuple]:
    """Yield `load(example)` in order, in `num_proc` processes, a bounded block at a time.

    Blocks keep at most ``32 * num_proc`` decoded rows in flight, whereas an unbounded ``imap`` lets the
    workers run ahead of the writer and fill memory.
    """
    if num_proc <= 1:
        yield from map(load, examples)
        return
    block = 32 * num_proc
    with multiprocessing.get_context().Pool(num_proc) as pool:
        for chunk in _batched(examples, block):
            yield from pool.imap(load, chunk, chunksize=4)


def features_for(metadata_columns: Sequence[str]):
    """The `datasets.Features` of a converted benchmark: image, mask, name, then string metadata columns."""
    from datasets import Features, Image as ImageFeature, Value

    columns = {"image": ImageFeature(), "mask": ImageFeature(), "name": Value("string")}
    columns.update({column: Value("string") for column in metadata_columns})
    return Features(columns)


def convert_benchmark(
    converter: BenchmarkConverter,
    raw_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    splits: Optional[str | os.PathLike] = None,
    validation_fraction: float = 0.1,
    seed: int = 2333,
    num_proc: int = 1,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    progress: bool = True,
    command: Optional[str] = None,
) -> Path:
    """Convert a raw benchmark download into a Hub-style dataset folder with the paper's split.

    Args:
        converter (`BenchmarkConverter`): the benchmark (e.g. `gms_hub.data.busi.BUSIConverter()`).
        raw_dir (`str` or `os.PathLike`): the extracted raw download.
        output_dir (`str` or `os.PathLike`): the dataset folder to create.
        splits (`str` or `os.PathLike`, *optional*): split list (.pkl/.json path or URL); defaults to the
            paper's pickle URL.
        validation_fraction (`float`, defaults to 0.1): share of the paper's train list held out as validation.
        seed (`int`, defaults to 2333): seed of the validation carve-out.
        num_proc (`int`, defaults to 1): processes decoding files.
        max_shard_size (`int` or `str`, defaults to ``"500MB"``): parquet shard size limit.
        overwrite (`bool`, defaults to `False`): replace an existing non-empty `output_dir`.
        progress (`bool`, defaults to `True`): show a progress bar.
        command (`str`, *optional*): the command line recorded in the dataset card.

    Returns:
        `Path`: `output_dir`.

    Raises:
        `RawDatasetError`: files are missing, duplicated, unreadable or of mismatched sizes (all listed).

    Example:
        >>> from gms_hub.data.busi import BUSIConverter
        >>> convert_benchmark(BUSIConverter(), "Dataset_BUSI_with_GT", "gms-busi", splits="busi.json")
    """
    raw_dir = Path(raw_dir)
    check_output_dir(output_dir, [raw_dir], input_flag="--raw_dir")  # outputs never among the inputs
    index = scan_raw_dir(raw_dir, converter)  # first: a wrong --raw_dir fails before any download
    lists = load_split_lists(splits, dataset=converter.dataset)
    examples, split_names, columns, labels = _split_examples(converter, raw_dir, index, lists, validation_fraction, seed)
    features = features_for(columns)
    with staged_output_dir(output_dir, overwrite=overwrite) as staging:
        stats = _write_examples(converter, raw_dir, staging, examples, split_names, features, num_proc=num_proc,
                                max_shard_size=max_shard_size, progress=progress)
        provenance = {
            # a local path says nothing to others (and may name the user's folders): keep the file name
            "split_source": lists.source if "://" in lists.source else Path(lists.source).name,
            "split_sha256": lists.sha256,
            "validation_fraction": validation_fraction,
            "seed": seed,
            "stratify_by": converter.stratify_by if labels is not None else None,
            "validation_names": split_names["validation"],
            "command": command
            or f"python -m gms_hub.data.prepare {converter.dataset} --raw_dir RAW_DIR --output_dir OUTPUT_DIR",
        }
        write_folder_metadata(staging, converter.card, features, stats, split_names, provenance, converter.id2label)
    logger.info(
        "Converted %s into %s: %s", converter.display_name, output_dir,
        ", ".join(f"{s.name} {s.num_examples}" for s in stats),
    )
    return Path(output_dir)


def _split_examples(converter: BenchmarkConverter, raw_dir: Path, index, lists, validation_fraction: float, seed: int):
    """Find every listed example's files and metadata, and carve the validation split from the train list
    (stratified by `converter.stratify_by` when the metadata has that column).

    Returns:
        `(examples, split_names, columns, labels)`: the `RawExample`s in split order, the names per split, the
        metadata columns, and the stratification labels (`None` when not stratified).
    """
    all_names = list(lists.train) + list(lists.test)
    found = find_examples(index, all_names, raw_dir, converter, lists.source)

    metadata = converter.collect_metadata(raw_dir, all_names)
    columns = list(next(iter(metadata.values()), {}))
    if any(list(values) != columns for values in metadata.values()):
        raise AssertionError("collect_metadata must give every name the same columns")
    labels = None
    if converter.stratify_by is not None and converter.stratify_by in columns:
        labels = {name: str(metadata[name][converter.stratify_by]) for name in lists.train}
    train, validation = carve_validation(lists.train, validation_fraction, seed, labels=labels)
    split_names = {"train": train, "validation": validation, "test": list(lists.test)}
    examples = [
        RawExample(name, split, found[name][0], found[name][1], metadata[name])
        for split, names in split_names.items()
        for name in names
    ]
    return examples, split_names, columns, labels


def _write_examples(converter: BenchmarkConverter, raw_dir: Path, staging: Path, examples: list[RawExample],
                    split_names: dict[str, list[str]], features, *, num_proc: int, max_shard_size, progress: bool) -> list:
    """Decode every example (in `num_proc` processes) and write the rows as parquet shards under `staging`.

    Every file is checked; after the first problem nothing more is written, and all problems are raised in one
    `RawDatasetError` at the end. Masks read as 0/1 label maps and empty masks are logged. Returns the shard stats.
    """
    from tqdm.auto import tqdm

    load = partial(_load_example, converter, raw_dir)
    problems: dict[str, list[str]] = {UNREADABLE_FILE: [], SIZE_MISMATCH: []}
    zero_one, empty = [], []
    writers = {split: ParquetShardWriter(staging / "data", split, features, max_shard_size=max_shard_size)
               for split in split_names}
    bar = tqdm(total=len(examples), desc=converter.display_name, unit="img", disable=not progress)
    try:
        for example, (row, example_problems, notes) in zip(examples, _decoded(examples, load, num_proc)):
            for kind, detail in example_problems:
                problems[kind].append(detail)
            if notes["zero_one"]:
                zero_one.append(example.name)
            if notes["empty"]:
                empty.append(example.name)
            if row is not None and not any(problems.values()):  # after a problem: check the rest, write nothing
                writers[example.split].write_row(row)
            bar.update(1)
    finally:
        bar.close()
    if any(problems.values()):
        for writer in writers.values():
            writer.abort()
        header = f"Raw {converter.display_name} folder {raw_dir}: some files cannot be converted:"
        hint = (
            "Re-download or re-extract the unreadable files; an image and its mask(s) must have the same "
            "width and height. Nothing was written."
        )
        raise RawDatasetError(format_problems(header, problems, hint), problems)
    stats = [writer.close() for writer in writers.values()]
    counts = {s.name: s.num_examples for s in stats}
    assert counts == {split: len(names) for split, names in split_names.items()}, counts
    if zero_one:
        logger.warning("%d masks had values 0/1 and were read as 0/1 label maps: %s", len(zero_one), _preview(zero_one))
    if empty:
        logger.warning("%d masks have no foreground pixel: %s", len(empty), _preview(empty))
    return stats
