"""Context slices (2.5D): the three VAE input channels carry a slice and its neighbours instead of three copies.

A GMS with `context_slices = K` (`config.json`; 0, the default, is the paper's 2D model) sees, for slice k of a
volume, the grayscale slices k-1, k, k+1 as its red, green and blue channels (K = 1; the VAE has three input
channels, so K = 1 is the only context there is room for). At the ends of the volume the missing neighbour is the
end slice itself. The same stacking is applied everywhere the model meets slices:

- training and evaluation (`with_context_slices` on a dataset split): a row named `<volume>_slice<k>` (NIfTI volumes
  and DICOM series, from `prepare folder`; k from 0), `<volume>_frame<k>` (DICOM; k from 1) or
  `<volume>_<axial|coronal|sagittal>_<k>` (`prepare mni152`, e.g. `mni152_axial_010`) gets its neighbours from the
  rows of the same volume in the same split; a row whose name is not a slice name, or whose neighbour is not in the
  split, repeats itself, as at a volume's end. A split in which no row finds a neighbour is warned about: the
  2.5D model would then see exactly what a 2D model sees;
- prediction on a volume (`context_frames`): the frames are streamed with their neighbours read alongside.

Fallback for a single 2D image given to a 2.5D model: it is its own neighbour on both sides, i.e. the three
channels are three copies of the image, which is exactly what a 2D model sees (a grey image fills the three
channels with copies); a log line says so. Colour images cannot carry context and are refused.
"""

from __future__ import annotations

import logging
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..io.medical import FrameSequence

logger = logging.getLogger(__name__)

__all__ = ["MAX_CONTEXT_SLICES", "check_context_slices", "context_frames", "context_input", "neighbour_indices", "parse_slice_name",
           "stack_context", "with_context_slices"]

MAX_CONTEXT_SLICES = 1
"""Neighbours on each side the three VAE input channels hold: k-1, k, k+1."""

SLICE_NAME = re.compile(r"^(?:(?P<volume>.+)_(?:slice|frame)(?P<index>\d+)"
                        r"|(?P<plane_volume>.+_(?:axial|coronal|sagittal))_(?P<plane_index>\d+))$")
"""A slice's name: `<volume>_slice<k>` (`prepare folder`), `<volume>_frame<k>` (DICOM frames) or
`<volume>_<plane>_<k>` with plane axial, coronal or sagittal (`prepare mni152`: `mni152_axial_010` is slice 10 of the
volume `mni152_axial`)."""


def check_context_slices(value: int) -> int:
    """`value` as an int, once it is 0 (2D) or 1 (2.5D, channels k-1, k, k+1)."""
    if int(value) != value or not 0 <= int(value) <= MAX_CONTEXT_SLICES:
        raise ValueError(f"context_slices must be 0 (2D, the paper) or 1 (the three VAE channels carry slices "
                         f"k-1, k, k+1), got {value!r}.")
    return int(value)


def neighbour_indices(index: int, num_slices: int, context_slices: int) -> List[int]:
    """The slices stacked for slice `index`: `index - K .. index + K`, clipped to the volume (ends repeat).

    Example:
        >>> neighbour_indices(0, 5, 1), neighbour_indices(2, 5, 1), neighbour_indices(4, 5, 1)
        ([0, 0, 1], [1, 2, 3], [3, 4, 4])
    """
    return [min(max(index + offset, 0), num_slices - 1) for offset in range(-context_slices, context_slices + 1)]


def stack_context(slices: Sequence[np.ndarray]) -> np.ndarray:
    """Stack grayscale (H, W) slices as the channels of one (H, W, C) image, in order.

    Example:
        >>> stack_context([np.zeros((4, 4)), np.ones((4, 4)), np.zeros((4, 4))]).shape
        (4, 4, 3)
    """
    arrays = [np.asarray(s) for s in slices]
    shapes = {a.shape for a in arrays}
    if any(a.ndim != 2 for a in arrays) or len(shapes) != 1:
        raise ValueError(f"Context slices must be grayscale slices of one size, got shapes {sorted(shapes)}; a colour "
                         "image cannot carry neighbouring slices. Use a 2D model (context_slices = 0) for it.")
    return np.stack(arrays, axis=-1)


def context_frames(frames: FrameSequence, context_slices: int) -> FrameSequence:
    """The frames of a volume as 2.5D inputs: frame k becomes (H, W, 3) slices k-1, k, k+1 (float32, [0, 1]).

    Reads stay batched: a batch of frames `start..stop` reads `start - K .. stop + K` once.

    Args:
        frames (`FrameSequence`): the volume's grayscale frames (`MedicalImage.frames`).
        context_slices (`int`): K, the model's `context_slices`; 0 returns `frames` unchanged.

    Returns:
        `FrameSequence` of the same length.

    Example:
        >>> scan = read_input("ct.nii.gz")
        >>> for batch in context_frames(scan.frames, model.context_slices).batches(16):
        ...     masks = model.segment(batch, value_range=scan.value_range)
    """
    if check_context_slices(context_slices) == 0:
        return frames
    total = len(frames)

    def read_batch(start: int, stop: int) -> List[np.ndarray]:
        first, last = max(start - context_slices, 0), min(stop + context_slices, total)
        read = frames._read_batch(first, last)  # one read for the batch and its neighbours
        return [stack_context([read[j - first] for j in neighbour_indices(k, total, context_slices)])
                for k in range(start, stop)]

    return FrameSequence(total, read_batch)


def parse_slice_name(name: str) -> Optional[Tuple[str, int]]:
    """`(volume, k)` for a slice name (`SLICE_NAME`: `<volume>_slice<k>`, `<volume>_frame<k>`, `<volume>_<plane>_<k>`),
    else `None`.

    Example:
        >>> parse_slice_name("case7_slice12"), parse_slice_name("mni152_axial_010"), parse_slice_name("us_001")
        (('case7', 12), ('mni152_axial', 10), None)
    """
    match = SLICE_NAME.match(str(name))
    if match is None:
        return None
    if match["volume"] is not None:
        return match["volume"], int(match["index"])
    return match["plane_volume"], int(match["plane_index"])


def _neighbour_rows(names: Sequence[str], context_slices: int) -> List[List[int]]:
    """For each row, the rows stacked into its channels (itself where a neighbour is missing)."""
    where: Dict[Tuple[str, int], int] = {}
    parsed = [parse_slice_name(n) for n in names]
    for row, key in enumerate(parsed):
        if key is not None:
            where[key] = row
    stacks = []
    for row, key in enumerate(parsed):
        if key is None:
            stacks.append([row] * (2 * context_slices + 1))
            continue
        volume, index = key
        stack = []
        for offset in range(-context_slices, context_slices + 1):
            stack.append(where.get((volume, index + offset), row))
        stacks.append(stack)
    return stacks


def _gray(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        if image.mode not in ("L", "I;16", "I", "F"):
            if image.mode == "RGB" and _is_grey_rgb(np.asarray(image)):
                return np.asarray(image)[..., 0]
            raise ValueError(f"Context slices need grayscale slices; got a {image.mode} image. Prepare the dataset "
                             "from grayscale volumes or train a 2D model (context_slices = 0).")
        return np.asarray(image)
    array = np.asarray(image)
    return array[..., 0] if array.ndim == 3 and _is_grey_rgb(array) else array


def _is_grey_rgb(array: np.ndarray) -> bool:
    return array.ndim == 3 and array.shape[-1] == 3 and (array == array[..., :1]).all()


def with_context_slices(split, context_slices: int):
    """A dataset split whose images carry their neighbouring slices as channels (see the module docstring).

    Args:
        split (`datasets.Dataset`): rows with `image`, `mask`, `name` (e.g. from `prepare folder` on volumes).
        context_slices (`int`): K; 0 returns `split` itself (the 2D path, untouched).

    Returns:
        `datasets.Dataset` with the same rows, names and masks; `image` is RGB, channel c = slice k - K + c.

    Example:
        >>> train = with_context_slices(load_gms_dataset("outputs/mni152")["train"], 1)
    """
    if check_context_slices(context_slices) == 0:
        return split
    names = [str(n) for n in split["name"]]
    stacks = _neighbour_rows(names, context_slices)
    lone = sum(1 for n in names if parse_slice_name(n) is None)
    if lone:
        logger.warning("%d of %d rows have no slice name (<volume>_slice<k>, <volume>_frame<k> or "
                       "<volume>_<axial|coronal|sagittal>_<k>); they are their own neighbours (three copies, as a 2D "
                       "model sees them).", lone, len(names))
    with_neighbour = sum(1 for row, stack in enumerate(stacks) if any(j != row for j in stack))
    if names and with_neighbour == 0:
        logger.warning("context_slices=%d, but none of the %d rows of this split found a neighbouring slice (row "
                       "names such as %r); every row is its own neighbour, so the 2.5D model sees what a 2D model "
                       "sees. Name rows <volume>_slice<k> (as `prepare folder` does for volumes) so that slices of "
                       "one volume find each other.", context_slices, len(names), names[0])
    else:
        logger.info("Context slices: %d of %d rows have at least one neighbouring slice in the split.",
                    with_neighbour, len(names))
    images = split.select_columns(["image"])

    def stack_row(row, index):
        gray = [_gray(images[j]["image"]) if j != index else _gray(row["image"]) for j in stacks[index]]
        if len({g.shape for g in gray}) != 1:
            gray = [_gray(row["image"])] * len(gray)  # neighbours of another size: no context for this row
        array = stack_context(gray)
        if array.dtype != np.uint8:
            array = np.clip(array, 0, 255).astype(np.uint8)
        return {"image": Image.fromarray(array, mode="RGB")}

    return split.map(stack_row, with_indices=True, load_from_cache_file=False, desc="Stacking context slices")


def context_input(opened, context_slices: int):
    """An opened input (`gms_hub.io.reading.InputFile`) as a model with `context_slices` sees it.

    A grayscale volume streams `context_frames`; a single image or frame falls back to being its own neighbour
    (three copies, what a 2D model sees), with a log line; a colour volume is an error.

    Example:
        >>> scan = context_input(read_input("ct.nii.gz"), model.context_slices)
    """
    import dataclasses

    if check_context_slices(context_slices) == 0:
        return opened
    medical = opened.medical
    if medical is None or not medical.is_volume:
        logger.info("'%s' is a single image; the 2.5D model sees it as its own neighbours (three copies).",
                    opened.path.name)
        return opened
    if len(medical.shape) != 3:
        raise ValueError(f"'{opened.path.name}' is a colour volume; the model's context slices (k-1, k, k+1 as "
                         "channels) need grayscale slices. Use a 2D model (context_slices = 0).")
    return dataclasses.replace(opened, frames=context_frames(opened.frames, context_slices))
