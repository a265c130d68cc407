"""The shared types of the readers: input kinds, `MedicalImage` and its lazily decoded frames, errors, mm² areas.

This module sits at the bottom of `gms_hub.io` and imports nothing from it. The door,
`gms_hub.io.reading.read_input` / `read_medical_image`, decides the format once (`detect_format`) and hands
the file to its reader (`gms_hub.io.images`, `gms_hub.io.dicom`, `gms_hub.io.nifti`); the DICOM and NIfTI
readers return a `MedicalImage` whose `frames` decode one frame (DICOM) or one slice (NIfTI) at a time, already
mapped to [0, 1] by the format's intensity rules. A 512x512x300 volume therefore never exists in memory as
float: iterate `image.frames.batches(batch_size)` and pass each frame to
`gms_hub.models.processing.to_float_rgb(frame, value_range=image.value_range)`.

Nothing in this module (messages, logs, reprs) carries patient-identifying values: errors name the file's
basename and the technical attribute at fault, never names, IDs, dates or accession numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, os.PathLike]
Spacing = Optional[Tuple[float, float]]

INPUT_KINDS = ("image", "dicom", "nifti")
"""What `gms_hub.io.reading.detect_format` decides: an ordinary 2-D image (PNG, JPEG, BMP, TIFF), DICOM or NIfTI.
`InputFile.kind` and `MedicalImage.kind` hold the same strings."""

NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".dicom")


class MedicalImageError(ValueError):
    """A DICOM or NIfTI file that cannot be segmented; the message names the file and says what to do."""


class FrameSequence(Sequence):
    """The frames of a scan, decoded on demand.

    Indexing decodes one frame; `batches(n)` decodes `n` at a time (one read per batch, which matters for
    gzipped NIfTI volumes). Each frame is float32 in [0, 1], (H, W) for grayscale or (H, W, 3) for colour.

    Args:
        length (`int`): number of frames.
        read_batch (`Callable[[int, int], List[np.ndarray]]`): decodes frames `start` to `stop` (exclusive).
    """

    def __init__(self, length: int, read_batch: Callable[[int, int], List[np.ndarray]]):
        self._length = int(length)
        self._read_batch = read_batch

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._length))]
        index = int(index)
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(f"frame index {index} out of range for {self._length} frames")
        return self._read_batch(index, index + 1)[0]

    def __iter__(self) -> Iterator[np.ndarray]:
        for batch in self.batches(8):
            yield from batch

    def batches(self, batch_size: int) -> Iterator[List[np.ndarray]]:
        """Yield consecutive lists of at most `batch_size` frames, in order (frame 0 first).

        Example:
            >>> for batch in image.frames.batches(16):
            ...     masks = model.segment(batch, value_range=image.value_range)
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        for start in range(0, self._length, batch_size):
            yield self._read_batch(start, min(start + batch_size, self._length))


@dataclass
class MedicalImage:
    """A DICOM file or NIfTI image opened for segmentation.

    Attributes:
        path (`Path`): the source file.
        kind (`str`): `"dicom"` or `"nifti"`.
        frames (`FrameSequence`): the frames (DICOM) or slices (NIfTI), decoded lazily, float32 in [0, 1].
        spacing (`tuple(float, float)` or `None`): pixel size in mm along (rows, columns) of a frame.
        shape (`tuple(int)`): the stored array's shape: (frames, rows, columns) for DICOM, the data shape for
            NIfTI (before any trailing singleton axes are dropped).
        affine (`np.ndarray` or `None`): NIfTI voxel-to-world affine, (4, 4).
        slice_axis (`int` or `None`): NIfTI axis the frames are taken along (`None` for a 2D image).
        dataset (`pydicom.Dataset` or `None`): DICOM metadata without pixel data, kept to reference the source
            from a DICOM SEG. It holds patient data: never log, print or display it.
        header (`nibabel` header or `None`): NIfTI header, reused when writing the mask.
        slice_spacing (`float` or `None`): distance in mm between consecutive frames of a volume (NIfTI: the
            voxel size along the slice axis; a DICOM series or an enhanced multi-frame file: from the frames'
            positions); `None` for a 2D image or frames that are not slices (cine).
        datasets (`list` or `None`): a DICOM series' headers (no pixel data), one per frame in spatial order,
            referenced by a DICOM SEG; `None` for a single file. They hold patient data: never log them.
    """

    path: Path
    kind: str
    frames: FrameSequence = field(repr=False)
    spacing: Spacing = None
    shape: Tuple[int, ...] = ()
    affine: Optional[np.ndarray] = field(default=None, repr=False)
    slice_axis: Optional[int] = None
    dataset: Any = field(default=None, repr=False)
    header: Any = field(default=None, repr=False)
    slice_spacing: Optional[float] = None
    datasets: Optional[List[Any]] = field(default=None, repr=False)

    value_range = (0.0, 1.0)
    """What `frames` hold: pass it to `to_float_rgb` / `segment` so the values are not stretched again."""

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def is_volume(self) -> bool:
        """True for a stack of more than one frame: a 3D NIfTI, a DICOM series or a multi-frame DICOM file."""
        return self.num_frames > 1 and (self.kind == "dicom" or self.slice_axis is not None)

    @property
    def voxel_volume_mm3(self) -> Optional[float]:
        """mm³ of one voxel (pixel area x slice spacing), or `None` when either is unknown."""
        area = pixel_area_mm2(self.spacing)
        if area is None or self.slice_spacing is None or not self.slice_spacing > 0:
            return None
        return area * float(self.slice_spacing)

    @property
    def frame_size(self) -> Tuple[int, int]:
        """(rows, columns) of one frame: DICOM's stored (frames, rows, columns), or the NIfTI data shape without
        its slice axis (and trailing singletons)."""
        if self.kind == "dicom":
            return int(self.shape[1]), int(self.shape[2])
        shape = [int(n) for n in self.shape]
        while len(shape) > 2 and shape[-1] == 1:
            shape.pop()
        if self.slice_axis is not None and len(shape) == 3:
            shape.pop(self.slice_axis)
        return shape[0], shape[1]

    @property
    def name(self) -> str:
        """The file name without its format suffix (`scan.nii.gz` -> `scan`), used to name outputs."""
        return strip_suffix(self.path.name)


def strip_suffix(filename: str) -> str:
    lower = filename.lower()
    for suffix in NIFTI_SUFFIXES[::-1] + DICOM_SUFFIXES:
        if lower.endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def frame_stem(stem: str, kind: str, index: int, num_frames: int) -> str:
    """The name of frame `index` of a file named `stem`: `stem` itself for a single frame, else
    `<stem>_frame<k>` for DICOM (k = index + 1, as DICOM counts frames) and `<stem>_slice<k>` for NIfTI (k = index).

    Example:
        >>> frame_stem("cine", "dicom", 0, 40), frame_stem("ct", "nifti", 0, 300), frame_stem("us", "dicom", 0, 1)
        ('cine_frame1', 'ct_slice0', 'us')
    """
    if num_frames == 1:
        return stem
    return f"{stem}_frame{index + 1}" if kind == "dicom" else f"{stem}_slice{index}"


def check_window(window: Iterable[float]) -> Tuple[float, float]:
    values = tuple(float(v) for v in window)
    if len(values) != 2 or not all(np.isfinite(values)) or values[1] <= 0:
        raise ValueError(f"window must be (center, width) with width > 0, got {tuple(window)}.")
    return values


def normalise(data: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map `lo..hi` to 0..1 (clipped) as float32; a flat range gives zeros. `lo > hi` inverts."""
    if hi == lo:
        return np.zeros(data.shape, dtype=np.float32)
    out = (np.asarray(data, dtype=np.float32) - np.float32(lo)) / np.float32(hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)


def pixel_area_mm2(spacing: Spacing) -> Optional[float]:
    """Area of one pixel in mm², or `None` when the spacing is unknown.

    Args:
        spacing (`tuple(float, float)` or `None`): pixel size in mm along rows and columns.

    Example:
        >>> pixel_area_mm2((0.5, 0.25)) * 1200  # a 1200-pixel mask
        150.0
    """
    if spacing is None:
        return None
    row, col = (float(v) for v in spacing)
    if not (row > 0 and col > 0):
        raise ValueError(f"spacing must be two positive sizes in mm, got {tuple(spacing)}.")
    return row * col


def check_masks(masks: Union[np.ndarray, Sequence[np.ndarray]], reference: MedicalImage, what: str) -> np.ndarray:
    """Stack per-frame masks into (num_frames, H, W) uint8 and check them against the reference's frames."""
    array = np.stack([np.asarray(m) for m in masks]) if not isinstance(masks, np.ndarray) else masks
    if array.ndim == 2 and reference.num_frames == 1:
        array = array[None]
    if array.ndim != 3 or array.shape[0] != reference.num_frames:
        raise ValueError(
            f"{what} needs one (H, W) mask per frame of '{reference.path.name}' ({reference.num_frames} frames); "
            f"got an array of shape {array.shape}."
        )
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer) or (array.size and (array.min() < 0 or array.max() > 255)):
        raise ValueError(f"{what} expects integer label masks in 0..255, got dtype {array.dtype}.")
    return array.astype(np.uint8, copy=False)
