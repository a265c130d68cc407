"""Image files in and mask files out, shared by the predict CLI, the dataset converters and the Space.

Reading is defensive (empty files, unknown formats, decompression bombs, truncated files all become an
`ImageReadError` that says what to do) and keeps the bit depth; turning pixels into model input is
`gms_hub.models.processing`. Only PIL and numpy are needed here.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    from .medical import MedicalImage

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "MEDICAL_EXTENSIONS",
    "MIN_SIDE",
    "ImageReadError",
    "InputFile",
    "is_input_file",
    "list_input_files",
    "read_image",
    "read_input",
    "read_label_frames",
    "read_medical_image",
    "resolve_segment_inputs",
    "write_mask_png",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""File extensions (lower case) of the image files we read: folder listings, upload pickers, raw datasets."""

MEDICAL_EXTENSIONS = (".dcm", ".dicom", ".nii", ".nii.gz")
"""File extensions (lower case) of the DICOM and NIfTI files we read. DICOM files without an extension are
recognised by their `DICM` preamble (`is_input_file`); `Path.suffix` cannot see `.nii.gz`, so match with
`str.endswith`."""

ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")
"""Container formats `read_image` decodes (what PIL reports in `Image.format`)."""

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest accepted image (width x height). The size is read from the header before any decoding:
a 50 MP RGB image already needs ~600 MB as float32 during preprocessing, and a 30000x30000 PNG of
zeros (a decompression bomb) is ~1 MB on disk but 900 MP once decoded."""

MIN_SIDE = 8
"""Smallest accepted width or height: the VAE downsamples by 8, so anything smaller carries no
structure the model can see (and a 1x1 image is almost always a mistake)."""

logger = logging.getLogger(__name__)

_USE = "Use a PNG, JPEG, BMP or TIFF image."

PathLike = Union[str, os.PathLike]


class ImageReadError(ValueError):
    """An image file that cannot be segmented; the message says what is wrong and what to do."""


def read_image(path: Optional[PathLike], max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = MIN_SIDE) -> Image.Image:
    """Open an image file safely and decode it, keeping its bit depth (16-bit stays 16-bit).

    Checks happen in order of cost: empty file, unreadable header, format, size (from the header, so a
    decompression bomb is rejected before any pixel is decoded), then a full decode that catches
    truncated files. Multi-frame files (TIFF stacks) use the first frame.

    Args:
        path (`str` or `os.PathLike`): the image file.
        max_pixels (`int`, defaults to `DEFAULT_MAX_PIXELS`): largest accepted width x height.
        min_side (`int`, defaults to `MIN_SIDE`): smallest accepted width and height.

    Returns:
        `PIL.Image.Image`: the decoded image in its own mode (`L`, `RGB`, `RGBA`, `I;16`, `I`, ...).

    Raises:
        `ImageReadError`: with a message that says what is wrong and what to use instead.

    Example:
        >>> image = read_image("examples/ultrasound.png")
        >>> image.mode, image.size
        ('L', (128, 128))
    """
    if path is None or str(path) == "":
        raise ImageReadError(f"No image path was given. {_USE}")
    name = os.path.basename(str(path))
    if not os.path.isfile(path):
        raise ImageReadError(f"'{name}' is not a file. {_USE}")
    if os.path.getsize(path) == 0:
        raise ImageReadError(f"The file '{name}' is empty (0 bytes). {_USE}")

    with warnings.catch_warnings():
        # PIL warns between its own limit and twice it; our own (lower) limit below decides.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError as err:
            raise ImageReadError(
                f"'{name}' is too large to decode safely ({err}). The limit is {max_pixels / 1e6:g} megapixels; "
                "downscale the image."
            ) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise ImageReadError(f"'{name}' is not an image PIL can read ({type(err).__name__}). {_USE}") from None

    if image.format not in ALLOWED_FORMATS:
        image.close()
        raise ImageReadError(
            f"'{name}' is a {image.format} image; supported formats are {', '.join(ALLOWED_FORMATS)}. Convert it first."
        )
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageReadError(
            f"'{name}' is {width}x{height} = {width * height / 1e6:.1f} megapixels; the limit is "
            f"{max_pixels / 1e6:g} megapixels (decompression-bomb protection). Downscale it."
        )
    if min(width, height) < min_side:
        image.close()
        raise ImageReadError(
            f"'{name}' is {width}x{height} pixels; each side must be at least {min_side} pixels. "
            "Use the full-resolution image."
        )
    try:
        image.seek(0)
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        image.close()
        raise ImageReadError(
            f"'{name}' could not be decoded: the file is truncated or corrupt ({err}). Use the complete file."
        ) from None
    return image


def write_mask_png(mask: np.ndarray, path: PathLike) -> str:
    """Write a bool (H, W) mask as a lossless 8-bit PNG with values 0 and 255; returns the path.

    Example:
        >>> write_mask_png(np.ones((3, 5), bool), "mask.png")
        'mask.png'
    """
    Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255).save(path, format="PNG")
    return str(path)


# ------------------------------------------------------------------------------ DICOM and NIfTI
def read_medical_image(
    path: PathLike, *, window: Optional[Tuple[float, float]] = None, slice_axis: int = -1
) -> "MedicalImage":
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
    from .medical import MedicalImageError, check_window, detect_medical_format

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' is not a file. Pass a DICOM (.dcm) or NIfTI (.nii, .nii.gz) file.")
    if path.stat().st_size == 0:
        raise MedicalImageError(f"'{path.name}' is empty (0 bytes). Export the scan again.")
    if window is not None:
        window = check_window(window)
    kind = detect_medical_format(path)
    if kind == "nifti":
        from .nifti import read_nifti

        return read_nifti(path, window=window, slice_axis=slice_axis)
    if kind == "dicom":
        from .dicom import read_dicom

        return read_dicom(path, window=window)
    raise MedicalImageError(
        f"'{path.name}' is neither NIfTI (.nii, .nii.gz) nor DICOM (.dcm or the 'DICM' preamble). "
        "Open ordinary images (PNG, JPEG, TIFF) with the image reader instead."
    )


def read_label_frames(path: PathLike, *, slice_axis: int = -1) -> np.ndarray:
    """The class values of a DICOM or NIfTI mask, frame by frame as `read_medical_image` gives its image's frames.

    A mask's stored values are its labels: no rescale, window or inversion applies.

    Args:
        path (`str` or `os.PathLike`): a DICOM or NIfTI mask.
        slice_axis (`int`, defaults to -1): axis a 3D NIfTI mask is sliced along (that of its image).

    Returns:
        `np.ndarray` (num_frames, H, W) of integers.

    Raises:
        `gms_hub.io.medical.MedicalImageError`: not a readable grayscale DICOM or NIfTI mask.

    Example:
        >>> read_label_frames("ct_mask.nii.gz").shape
        (300, 512, 512)
    """
    from .medical import MedicalImageError, detect_medical_format

    kind = detect_medical_format(path)
    if kind == "nifti":
        from .nifti import read_nifti_labels

        return read_nifti_labels(path, slice_axis=slice_axis)
    if kind == "dicom":
        from .dicom import read_dicom_labels

        return read_dicom_labels(path)
    raise MedicalImageError(f"'{Path(path).name}' is neither a DICOM nor a NIfTI mask; read image masks with PIL.")


# ------------------------------------------------------------------------------ one reader for every input
def is_input_file(path: PathLike) -> bool:
    """True if `path` is a file `read_input` may open: an image or medical extension, or the DICOM preamble.

    Example:
        >>> is_input_file("scan.nii.gz"), is_input_file("notes.txt")
        (True, False)
    """
    from .medical import has_dicom_preamble

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
    medical: Optional["MedicalImage"] = field(default=None, repr=False)

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def name(self) -> str:
        """The file name without its format suffix (`ct.nii.gz` -> `ct`, `us.png` -> `us`), to name outputs."""
        from .medical import strip_suffix

        if self.kind == "image":
            return self.path.stem
        return strip_suffix(self.path.name)

    def batches(self, batch_size: int) -> Iterator[List[Any]]:
        """Consecutive lists of at most `batch_size` frames; see `FrameSequence.batches`."""
        return self.frames.batches(batch_size)


def _check_frame_size(image: "MedicalImage", max_pixels: int) -> None:
    """The size limits of `read_image`, applied to one frame of a DICOM/NIfTI file (read from its header)."""
    from .medical import MedicalImageError

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


def read_input(
    path: PathLike,
    *,
    window: Optional[Tuple[float, float]] = None,
    slice_axis: int = -1,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> InputFile:
    """Open any input GMS segments: PNG/JPEG/BMP/TIFF (`read_image`), DICOM or NIfTI (`read_medical_image`).

    The format is decided by the extension, and for DICOM without one by the `DICM` preamble. DICOM and NIfTI
    frames are decoded lazily (a volume streams through `InputFile.batches`); an image is decoded now.

    Args:
        path (`str` or `os.PathLike`): the file.
        window (`tuple(float, float)`, *optional*): (center, width) overriding a DICOM/NIfTI file's own window;
            ignored (with a log line) for ordinary images.
        slice_axis (`int`, defaults to -1): axis a 3D NIfTI volume is sliced along.
        max_pixels (`int`, defaults to `DEFAULT_MAX_PIXELS`): largest accepted image or DICOM/NIfTI frame
            (width x height); sides below `MIN_SIDE` are refused for both too.

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
    from .medical import FrameSequence, detect_medical_format

    if path is None or str(path) == "":
        raise ImageReadError("No input path was given. Pass an image, DICOM or NIfTI file.")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' is not a file. Pass an image (PNG, JPEG, BMP, TIFF), DICOM or NIfTI file.")
    if detect_medical_format(path) is not None:
        image = read_medical_image(path, window=window, slice_axis=slice_axis)
        _check_frame_size(image, max_pixels)
        return InputFile(path=path, kind=image.kind, frames=image.frames, value_range=image.value_range,
                         spacing=image.spacing, medical=image)
    if window is not None:
        logger.info("'%s' is an ordinary image; the window applies to DICOM and NIfTI only.", path.name)
    pil_image = read_image(path, max_pixels=max_pixels)
    frames = FrameSequence(1, lambda start, stop: [pil_image])
    return InputFile(path=path, kind="image", frames=frames)


def resolve_segment_inputs(items: Sequence[Any], value_range: Optional[Tuple[float, float]]):
    """Read the paths among `segment`'s inputs; arrays and PIL images pass through. Used by `GMS.segment`.

    Without any path, `items` and `value_range` come back unchanged (the array path stays byte-identical). With
    a path, each file is read by `read_input` (a DICOM/NIfTI frame by its own intensity rules, an image with
    `value_range` like an array) and every item becomes float32 RGB in [0, 1] with `value_range=(0, 1)`, so
    DICOM frames and arrays can share one call. A path to a multi-frame file (cine DICOM, NIfTI volume) is an
    error: stream it with `read_input(path).batches(n)` instead.

    Returns:
        `(items, value_range)` to pass on to preprocessing.
    """
    if not any(isinstance(item, (str, os.PathLike)) for item in items):
        return items, value_range
    from ..models.processing import to_float_rgb

    resolved = []
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            resolved.append(to_float_rgb(item, value_range))  # (H, W, 3)
            continue
        opened = read_input(item)
        if opened.num_frames != 1:
            raise ValueError(
                f"'{opened.path.name}' holds {opened.num_frames} frames; segment() takes one image per path. Stream "
                "it instead: `scan = gms_hub.io.reading.read_input(path)`, then `for frames in scan.batches(16): "
                "model.segment(frames, value_range=scan.value_range)` (or use `python -m gms_hub.predict`)."
            )
        own_range = opened.value_range if opened.kind != "image" else value_range
        resolved.append(to_float_rgb(opened.frames[0], own_range))  # (H, W, 3)
    return resolved, (0.0, 1.0)
