"""The door every input comes in by: the format is decided once here, then the file goes down to its reader.

`detect_format` looks at a path once (extension, else the DICOM `DICM` preamble) and `read_input` hands the file
to the reader of that format: `gms_hub.io.images` (PNG/JPEG/BMP/TIFF), `gms_hub.io.dicom` or `gms_hub.io.nifti`.
A caller that already knows the format (the Space detects it to name its outputs) passes it on as `kind=` and
nothing is sniffed again. The readers never sniff; the types they share are `gms_hub.io.medical`. Dependencies
run downward only: this module -> the format readers -> the shared types.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np

from .images import (
    ALLOWED_FORMATS,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    MIN_SIDE,
    ImageReadError,
    read_image,
)
from .medical import (
    DICOM_SUFFIXES,
    INPUT_KINDS,
    NIFTI_SUFFIXES,
    FrameSequence,
    MedicalImage,
    MedicalImageError,
    PathLike,
    check_window,
    strip_suffix,
)

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_VOXELS",
    "IMAGE_EXTENSIONS",
    "MEDICAL_EXTENSIONS",
    "MIN_SIDE",
    "ImageReadError",
    "InputFile",
    "detect_format",
    "detect_medical_format",
    "has_dicom_preamble",
    "is_input_file",
    "list_input_files",
    "VolumeTooLargeError",
    "scan_input_folder",
    "read_image",
    "read_input",
    "read_label_frames",
    "read_medical_image",
]

MEDICAL_EXTENSIONS = (".dcm", ".dicom", ".nii", ".nii.gz")
"""File extensions (lower case) of the DICOM and NIfTI files we read. DICOM files without an extension are
recognised by their `DICM` preamble (`is_input_file`); `Path.suffix` cannot see `.nii.gz`, so match with
`str.endswith`."""

DEFAULT_MAX_VOXELS = 2_000_000_000
"""Largest accepted DICOM/NIfTI volume (frames x rows x columns), read from the header before any voxel is decoded:
the intensity range of a NIfTI volume is a pass over every voxel, and its masks are held as uint8 (2 GB here).
The Space sets a far lower limit (`GMS_MAX_VOLUME_VOXELS`)."""

logger = logging.getLogger(__name__)


class VolumeTooLargeError(MedicalImageError):
    """A DICOM/NIfTI volume over the voxel limit, refused from its header before any voxel is decoded."""


# ------------------------------------------------------------------------------ deciding the format
def has_dicom_preamble(path: PathLike) -> bool:
    """True if the file has the DICOM Part 10 signature: a 128-byte preamble followed by `DICM`."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def detect_format(path: PathLike) -> str:
    """The kind of input a file is, decided once: `"nifti"` for `.nii`/`.nii.gz`, `"dicom"` for `.dcm`/`.dicom`
    or any file with the `DICM` preamble, else `"image"` (an ordinary image, left to the PIL reader).

    Pass the result on as `kind=` to `read_input`, `read_medical_image` or `read_label_frames` so the file is not
    looked at again.

    Example:
        >>> detect_format("scan.nii.gz"), detect_format("us.png")
        ('nifti', 'image')
    """
    lower = str(path).lower()
    if lower.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if lower.endswith(DICOM_SUFFIXES):
        return "dicom"
    return "dicom" if os.path.isfile(path) and has_dicom_preamble(path) else "image"


def detect_medical_format(path: PathLike) -> Optional[str]:
    """`detect_format`, with `None` for an ordinary image: `"nifti"`, `"dicom"` or `None`.

    Example:
        >>> detect_medical_format("scan.nii.gz")
        'nifti'
    """
    kind = detect_format(path)
    return None if kind == "image" else kind


def _decided(kind: Optional[str], path: PathLike) -> str:
    """The caller's pre-detected `kind`, checked, or the format detected now."""
    if kind is None:
        return detect_format(path)
    if kind not in INPUT_KINDS:
        raise ValueError(f"kind must be one of {INPUT_KINDS} (as detect_format returns) or None, got {kind!r}.")
    return kind


# ------------------------------------------------------------------------------ listing input files
def is_input_file(path: PathLike) -> bool:
    """True if `path` is a file `read_input` may open: an image or medical extension, or the DICOM preamble.

    Example:
        >>> is_input_file("scan.nii.gz"), is_input_file("notes.txt")
        (True, False)
    """
    path = Path(path)
    if not path.is_file() or path.name.startswith("."):
        return False
    lower = path.name.lower()
    if lower.endswith(IMAGE_EXTENSIONS + MEDICAL_EXTENSIONS):
        return True
    return "." not in lower and has_dicom_preamble(path)  # PACS exports often carry no extension


def list_input_files(folder: PathLike) -> List[Path]:
    """The files of `folder` (not recursive) that `read_input` may open, sorted by name.

    Example:
        >>> list_input_files("scans/")
        [PosixPath('scans/IM0001'), PosixPath('scans/ct.nii.gz'), PosixPath('scans/us.png')]
    """
    return sorted(p for p in Path(folder).iterdir() if is_input_file(p))


def skip_reason(path: PathLike) -> Optional[str]:
    """Why a folder entry that looks like an input cannot be read, or `None` when it is a readable file or not an
    input at all: a dangling symbolic link, a symbolic link loop, or a folder named like an image (`x.png`)."""
    path = Path(path)
    if path.name.startswith("."):
        return None
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:
            return "a symbolic link loop; point the link at a file"
        except OSError as err:
            if getattr(err, "errno", None) == 40:  # ELOOP
                return "a symbolic link loop; point the link at a file"
            return "a dangling symbolic link (its target does not exist); restore the target or remove the link"
    if path.is_dir() and path.name.lower().endswith(IMAGE_EXTENSIONS + MEDICAL_EXTENSIONS):
        return "a folder named like an image file; segment the files inside it with --input on the folder"
    return None


def scan_input_folder(folder: PathLike) -> Tuple[List[Path], List[Tuple[Path, str]]]:
    """The files of `folder` that `read_input` may open, and the entries passed over with the reason (dangling or
    looping symbolic links, folders named like images: `skip_reason`), both sorted by name.

    Ordinary non-input files (`notes.txt`) and hidden entries are neither.

    Example:
        >>> files, skipped = scan_input_folder("scans/")
        >>> skipped
        [(PosixPath('scans/old.png'), 'a dangling symbolic link (its target does not exist); ...')]
    """
    files, skipped = [], []
    for entry in sorted(Path(folder).iterdir()):
        reason = skip_reason(entry)
        if reason is not None:
            skipped.append((entry, reason))
        elif is_input_file(entry):
            files.append(entry)
    return files, skipped


# ------------------------------------------------------------------------------ DICOM and NIfTI
def read_medical_image(
    path: PathLike, *, window: Optional[Tuple[float, float]] = None, slice_axis: int = -1, kind: Optional[str] = None
) -> MedicalImage:
    """Open a DICOM file or a NIfTI image; frames are decoded later, when indexed or iterated.

    Intensity rules (the same for every frame): DICOM applies Rescale Slope/Intercept (or the Modality LUT),
    then the VOI LUT or Window Center/Width when present, else the frame's own min..max; MONOCHROME1 is
    inverted; YBR and palette colour become RGB. NIfTI uses `cal_min..cal_max` when set, else the min..max of
    the whole volume (so slices stay comparable). `window` overrides both.

    Args:
        path (`str` or `os.PathLike`): a `.dcm` file, an extensionless DICOM file, or a `.nii`/`.nii.gz` file.
        window (`tuple(float, float)`, *optional*): (center, width) in stored units after rescale (e.g. HU),
            overriding the file's own window.
        slice_axis (`int`, defaults to -1): NIfTI axis to slice a 3D volume along.
        kind (`str`, *optional*): the format from `detect_format`, when the caller has decided it already.

    Returns:
        `MedicalImage`.

    Raises:
        `FileNotFoundError`: the path is not a file.
        `MedicalImageError`: the file is not a readable scan (the message says why and what to do).

    Example:
        >>> image = read_medical_image("ct.nii.gz", window=(40, 400))
        >>> image.num_frames, image.spacing
        (300, (0.7, 0.7))
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' is not a file. Pass a DICOM (.dcm) or NIfTI (.nii, .nii.gz) file.")
    if path.stat().st_size == 0:
        raise MedicalImageError(f"'{path.name}' is empty (0 bytes). Export the scan again.")
    if window is not None:
        window = check_window(window)
    kind = _decided(kind, path)
    if kind == "nifti":
        from .nifti import read_nifti  # nibabel is imported only when a NIfTI file is read

        return read_nifti(path, window=window, slice_axis=slice_axis)
    if kind == "dicom":
        from .dicom import read_dicom  # pydicom likewise

        return read_dicom(path, window=window)
    raise MedicalImageError(
        f"'{path.name}' is neither NIfTI (.nii, .nii.gz) nor DICOM (.dcm or the 'DICM' preamble). "
        "Open ordinary images (PNG, JPEG, TIFF) with the image reader instead."
    )


def read_label_frames(path: PathLike, *, slice_axis: int = -1, kind: Optional[str] = None) -> np.ndarray:
    """The class values of a DICOM or NIfTI mask, frame by frame as `read_medical_image` gives its image's frames.

    A mask's stored values are its labels: no rescale, window or inversion applies.

    Args:
        path (`str` or `os.PathLike`): a DICOM or NIfTI mask.
        slice_axis (`int`, defaults to -1): axis a 3D NIfTI mask is sliced along (that of its image).
        kind (`str`, *optional*): the format from `detect_format`, when the caller has decided it already.

    Returns:
        `np.ndarray` (num_frames, H, W) of integers.

    Raises:
        `gms_hub.io.medical.MedicalImageError`: not a readable grayscale DICOM or NIfTI mask.

    Example:
        >>> read_label_frames("ct_mask.nii.gz").shape
        (300, 512, 512)
    """
    kind = _decided(kind, path)
    if kind == "nifti":
        from .nifti import read_nifti_labels

        return read_nifti_labels(path, slice_axis=slice_axis)
    if kind == "dicom":
        from .dicom import read_dicom_labels

        return read_dicom_labels(path)
    raise MedicalImageError(f"'{Path(path).name}' is neither a DICOM nor a NIfTI mask; read image masks with PIL.")


# ------------------------------------------------------------------------------ one reader for every input
@dataclass
class InputFile:
    """A file opened for segmentation: an ordinary image (one frame), a DICOM file or a NIfTI image.

    Attributes:
        path (`Path`): the source file.
        kind (`str`): `"image"`, `"dicom"` or `"nifti"`.
        frames (`Sequence`): the frames, decoded on demand for DICOM/NIfTI (`gms_hub.io.medical.FrameSequence`,
            float32 in [0, 1]); for an image, one `PIL.Image.Image` in its own mode. Has `batches(n)`.
        value_range (`tuple(float, float)` or `None`): pass it to `GMS.segment` / `to_float_rgb` with the frames
            (`None` for ordinary images: their own dtype rule applies).
        spacing (`tuple(float, float)` or `None`): pixel size in mm along (rows, columns), where the file says.
        medical (`MedicalImage` or `None`): the DICOM/NIfTI reader's object, needed to write a NIfTI mask or a
            DICOM SEG. Its `dataset` holds patient data: never log, print or display it.
    """

    path: Path
    kind: str
    frames: Any = field(repr=False)
    value_range: Optional[Tuple[float, float]] = None
    spacing: Optional[Tuple[float, float]] = None
    medical: Optional[MedicalImage] = field(default=None, repr=False)

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def name(self) -> str:
        """The file name without its format suffix (`ct.nii.gz` -> `ct`, `us.png` -> `us`), to name outputs."""
        if self.kind == "image":
            return self.path.stem
        return strip_suffix(self.path.name)

    def batches(self, batch_size: int) -> Iterator[List[Any]]:
        """Consecutive lists of at most `batch_size` frames; see `FrameSequence.batches`."""
        return self.frames.batches(batch_size)


def read_input(
    path: PathLike,
    *,
    window: Optional[Tuple[float, float]] = None,
    slice_axis: int = -1,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    kind: Optional[str] = None,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> InputFile:
    """Open any input GMS segments: PNG/JPEG/BMP/TIFF (`read_image`), DICOM or NIfTI (`read_medical_image`).

    The format is decided by the extension, and for DICOM without one by the `DICM` preamble (`detect_format`),
    once; a caller that decided it already passes `kind`. DICOM and NIfTI frames are decoded lazily (a volume
    streams through `InputFile.batches`); an image is decoded now.

    Args:
        path (`str` or `os.PathLike`): the file.
        window (`tuple(float, float)`, *optional*): (center, width) overriding a DICOM/NIfTI file's own window;
            ignored (with a log line) for ordinary images.
        slice_axis (`int`, defaults to -1): axis a 3D NIfTI volume is sliced along.
        max_pixels (`int`, defaults to `DEFAULT_MAX_PIXELS`): largest accepted image or DICOM/NIfTI frame
            (width x height); sides below `MIN_SIDE` are refused for both too.
        kind (`str`, *optional*): `"image"`, `"dicom"` or `"nifti"` from `detect_format`; detected when `None`.
        max_voxels (`int`, defaults to `DEFAULT_MAX_VOXELS`): largest accepted DICOM/NIfTI volume (frames x
            rows x columns), checked from the header.
        max_bytes (`int`, defaults to `DEFAULT_MAX_BYTES`): largest accepted image file, checked before decoding.

    Returns:
        `InputFile`.

    Raises:
        `ImageReadError` (an image) or `gms_hub.io.medical.MedicalImageError` (DICOM/NIfTI), both `ValueError`s
        naming the file and the fix; `FileNotFoundError` for a path that is not a file.

    Example:
        >>> scan = read_input("ct.nii.gz", window=(40, 400))
        >>> for frames in scan.batches(16):
        ...     masks = model.segment(frames, value_range=scan.value_range)
    """
    if path is None or str(path) == "":
        raise ImageReadError("No input path was given. Pass an image, DICOM or NIfTI file.")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' is not a file. Pass an image (PNG, JPEG, BMP, TIFF), DICOM or NIfTI file.")
    kind = _decided(kind, path)
    if kind != "image":
        return _open_medical(path, kind, window, slice_axis, max_pixels, max_voxels)
    return _open_image(path, window, max_pixels, max_bytes)


def _open_medical(
    path: Path, kind: str, window: Optional[Tuple[float, float]], slice_axis: int, max_pixels: int, max_voxels: int
) -> InputFile:
    image = read_medical_image(path, window=window, slice_axis=slice_axis, kind=kind)
    _check_frame_size(image, max_pixels)
    rows, cols = image.frame_size
    if image.num_frames * rows * cols > max_voxels:
        raise VolumeTooLargeError(
            f"'{path.name}' holds {image.num_frames} frames of {cols}x{rows} = {image.num_frames * rows * cols / 1e6:.0f} "
            f"million voxels; the limit here is {max_voxels / 1e6:g} million. Crop or downsample the volume."
        )
    return InputFile(path=path, kind=image.kind, frames=image.frames, value_range=image.value_range,
                     spacing=image.spacing, medical=image)


def _open_image(path: Path, window: Optional[Tuple[float, float]], max_pixels: int, max_bytes: int) -> InputFile:
    if window is not None:
        logger.info("'%s' is an ordinary image; the window applies to DICOM and NIfTI only.", path.name)
    pil_image = read_image(path, max_pixels=max_pixels, max_bytes=max_bytes)
    frames = FrameSequence(1, lambda start, stop: [pil_image])
    return InputFile(path=path, kind="image", frames=frames)


def _check_frame_size(image: MedicalImage, max_pixels: int) -> None:
    """The size limits of `read_image`, applied to one frame of a DICOM/NIfTI file (read from its header)."""
    rows, cols = image.frame_size
    if rows * cols > max_pixels:
        raise MedicalImageError(
            f"'{image.path.name}' has {cols}x{rows} = {rows * cols / 1e6:.1f} megapixel frames; the limit is "
            f"{max_pixels / 1e6:g} megapixels. Downscale it."
        )
    if min(rows, cols) < MIN_SIDE:
        raise MedicalImageError(
            f"'{image.path.name}' has {cols}x{rows} pixel frames; each side must be at least {MIN_SIDE} pixels."
        )
