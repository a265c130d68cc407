"""Ordinary 2-D images in (PNG, JPEG, BMP, TIFF): decoded defensively, bit depth kept.

Empty files, unknown formats, decompression bombs and truncated files all become an `ImageReadError` that says
what to do. The door, `gms_hub.io.reading.read_input`, sends ordinary images here; turning pixels into model input
is `gms_hub.models.processing`. Only PIL is needed.
"""

from __future__ import annotations

import os
import warnings
from typing import Optional

from PIL import Image, ImageOps, UnidentifiedImageError

from .medical import PathLike

__all__ = [
    "ALLOWED_FORMATS", "DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "MIN_SIDE", "ImageReadError", "apply_exif_orientation",
    "read_image",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""File extensions (lower case) of the image files we read: folder listings, upload pickers, raw datasets."""

ALLOWED_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "TIFF")
"""Container formats `read_image` decodes (what PIL reports in `Image.format`). MPO is the multi-picture JPEG many
cameras and phones write as `.jpg`: its first picture is read."""

EXIF_ORIENTATION = 0x0112

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest accepted image (width x height). The size is read from the header before any decoding:
a 50 MP RGB image already needs ~600 MB as float32 during preprocessing, and a 30000x30000 PNG of
zeros (a decompression bomb) is ~1 MB on disk but 900 MP once decoded."""

DEFAULT_MAX_BYTES = 1 << 30
"""Largest accepted image file (1 GiB), checked before the header is read: a 50 MP 16-bit RGB TIFF stored
uncompressed is 300 MB."""

MIN_SIDE = 8
"""Smallest accepted width or height: the VAE downsamples by 8, so anything smaller carries no
structure the model can see (and a 1x1 image is almost always a mistake)."""

_USE = (
    "Use a PNG, JPEG, BMP or TIFF image, a DICOM file (.dcm, or with the DICM preamble) or a NIfTI image "
    "(.nii, .nii.gz)."
)


class ImageReadError(ValueError):
    """An image file that cannot be segmented; the message says what is wrong and what to do."""


def read_image(
    path: Optional[PathLike], max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = MIN_SIDE,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Image.Image:
    """Open an image file safely and decode it, keeping its bit depth (16-bit stays 16-bit).

    Checks happen in order of cost: empty file, unreadable header, format, size (from the header, so a
    decompression bomb is rejected before any pixel is decoded), then a full decode that catches
    truncated files. Multi-frame files (TIFF stacks, MPO) use the first frame. The EXIF orientation is applied
    (`apply_exif_orientation`), so the pixels are as every viewer shows them.

    Args:
        path (`str` or `os.PathLike`): the image file.
        max_pixels (`int`, defaults to `DEFAULT_MAX_PIXELS`): largest accepted width x height.
        min_side (`int`, defaults to `MIN_SIDE`): smallest accepted width and height.
        max_bytes (`int`, defaults to `DEFAULT_MAX_BYTES`): largest accepted file size.

    Returns:
        `PIL.Image.Image`: the decoded image in its own mode (`L`, `RGB`, `RGBA`, `I;16`, `I`, ...).

    Raises:
        `ImageReadError`: with a message that says what is wrong and what to use instead.

    Example:
        >>> image = read_image("examples/ultrasound.png")
        >>> image.mode, image.size
        ('L', (128, 128))
    """
    name = _check_file(path)
    size = os.path.getsize(path)
    if size > max_bytes:
        raise ImageReadError(f"'{name}' is {size / 2**20:.0f} MiB; the limit is {max_bytes / 2**20:g} MiB per image "
                             "file. Downscale or compress it.")
    image = _open_header(path, name, max_pixels)
    _check_header(image, name, max_pixels, min_side)
    return apply_exif_orientation(_decode(image, name))


def apply_exif_orientation(image: Image.Image) -> Image.Image:
    """The image as viewers show it: turned by its EXIF Orientation tag (phone photos are stored in sensor
    orientation), or the image itself when it has none (no copy).

    Example:
        >>> apply_exif_orientation(Image.open("phone.jpg")).size  # stored 4032x3024 with orientation 6
        (3024, 4032)
    """
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError):  # an unreadable EXIF block: the pixels as stored
        return image
    if orientation in (None, 1) or orientation not in range(2, 9):
        return image
    turned = ImageOps.exif_transpose(image)
    image.close()
    return turned


def _check_file(path: Optional[PathLike]) -> str:
    """The file's basename, once it is known to be a non-empty file."""
    if path is None or str(path) == "":
        raise ImageReadError(f"No image path was given. {_USE}")
    name = os.path.basename(str(path))
    if not os.path.isfile(path):
        raise ImageReadError(f"'{name}' is not a file. {_USE}")
    if os.path.getsize(path) == 0:
        raise ImageReadError(f"The file '{name}' is empty (0 bytes). {_USE}")
    return name


def _open_header(path: PathLike, name: str, max_pixels: int) -> Image.Image:
    """Read the header only (PIL decodes lazily)."""
    with warnings.catch_warnings():
        # PIL warns between its own limit and twice it; our own (lower) limit below decides.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except Image.DecompressionBombError as err:
            raise ImageReadError(
                f"'{name}' is too large to decode safely ({err}). The limit is {max_pixels / 1e6:g} megapixels; "
                "downscale the image."
            ) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise ImageReadError(f"'{name}' is not an image PIL can read ({type(err).__name__}). {_USE}") from None


def _check_header(image: Image.Image, name: str, max_pixels: int, min_side: int) -> None:
    """Format and size from the header, before any pixel is decoded; the image is closed if refused."""
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


def _decode(image: Image.Image, name: str) -> Image.Image:
    """Decode the first frame in full, which catches truncated files."""
    try:
        image.seek(0)
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        image.close()
        raise ImageReadError(
            f"'{name}' could not be decoded: the file is truncated or corrupt ({err}). Use the complete file."
        ) from None
    return image
