"""Image files in and mask files out, shared by the predict CLI, the dataset converters and the Space.

Reading is defensive (empty files, unknown formats, decompression bombs, truncated files all become an
`ImageReadError` that says what to do) and keeps the bit depth; turning pixels into model input is
`gms_hub.processing`. Only PIL and numpy are needed here.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Tuple, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    from .medical import MedicalImage

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "MIN_SIDE",
    "ImageReadError",
    "read_image",
    "read_medical_image",
    "write_mask_png",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""File extensions (lower case) of the image files we read: folder listings, upload pickers, raw datasets."""

ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")
"""Container formats `read_image` decodes (what PIL reports in `Image.format`)."""

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest accepted image (width x height). The size is read from the header before any decoding:
a 50 MP RGB image already needs ~600 MB as float32 during preprocessing, and a 30000x30000 PNG of
zeros (a decompression bomb) is ~1 MB on disk but 900 MP once decoded."""

MIN_SIDE = 8
"""Smallest accepted width or height: the VAE downsamples by 8, so anything smaller carries no
structure the model can see (and a 1x1 image is almost always a mistake)."""

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
