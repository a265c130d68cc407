"""Image in and results out for the Space (app.py): upload reading, masks, overlays, statistics.

Everything here is pure and model-free, so the Gradio layer only wires components to these functions and
turns `InputError` into `gr.Error`. Reading files is the library's `gms_hub.image_io.read_image`; this
module only words its errors for someone uploading.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from gms_hub.image_io import DEFAULT_MAX_PIXELS, ImageReadError, read_image
from gms_hub.processing import resize_bilinear, resize_probabilities

logger = logging.getLogger(__name__)

__all__ = [
    "DISPLAY_MAX_SIDE",
    "InputError",
    "check_threshold",
    "display_image",
    "mask_from_probabilities",
    "mask_stats",
    "probability_image",
    "read_upload",
]


class InputError(ValueError):
    """A request the Space cannot serve (bad upload, bad threshold); the message is meant for the user."""


def read_upload(path: Optional["os.PathLike | str"], max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read an uploaded image with `gms_hub.image_io.read_image`, as an `InputError` for the user if it fails.

    Example:
        >>> read_upload("examples/ultrasound.png").size
        (128, 128)
    """
    if path is None or str(path) == "":
        raise InputError("No image was uploaded. Upload a PNG, JPEG, BMP or TIFF image, or click an example.")
    try:
        return read_image(path, max_pixels=max_pixels)
    except ImageReadError as err:
        raise InputError(str(err)) from None


DISPLAY_MAX_SIDE = 1024
"""Overlay and probability previews are shown at most this large; the downloadable mask is always
at the input's full size."""



def display_image(float_rgb: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """Turn a float RGB image in [0, 1] into a uint8 preview no larger than `max_side`.

    Args:
        float_rgb (`np.ndarray`): (H, W, 3) float32 in [0, 1], as from `processing.to_float_rgb`.
        max_side (`int`, defaults to `DISPLAY_MAX_SIDE`): longest side of the preview.

    Returns:
        `np.ndarray`: (h, w, 3) uint8.

    Example:
        >>> display_image(np.zeros((2048, 1024, 3), np.float32)).shape
        (1024, 512, 3)
    """
    height, width = float_rgb.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        tensor = torch.from_numpy(np.ascontiguousarray(float_rgb)).permute(2, 0, 1)[None]  # (1, 3, H, W)
        # Antialiased for a clean preview; the model input uses the paper's rule in `preprocess`.
        tensor = torch.nn.functional.interpolate(tensor, size=size, mode="bilinear", antialias=True, align_corners=False)
        float_rgb = tensor[0].permute(1, 2, 0).numpy()  # (h, w, 3)
    return np.rint(np.clip(float_rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def mask_from_probabilities(probs: np.ndarray, size: Tuple[int, int], threshold: float) -> np.ndarray:
    """Threshold a model-resolution probability map at the input's size (mask = probability > threshold).

    Args:
        probs (`np.ndarray`): (S, S) float probabilities in [0, 1] at the model's resolution.
        size (`tuple(int, int)`): the input's (H, W).
        threshold (`float`): in [0, 1].

    Returns:
        `np.ndarray`: (H, W) bool.

    Example:
        >>> mask_from_probabilities(np.full((8, 8), 0.7, np.float32), (20, 30), 0.5).shape
        (20, 30)
    """
    check_threshold(threshold)
    full = resize_probabilities(torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32)), tuple(size))  # (H, W)
    return (full > float(threshold)).numpy()


def check_threshold(threshold) -> float:
    """Return `threshold` as a float, or raise `InputError` if it is not a number in [0, 1]."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise InputError(f"The threshold must be a number in [0, 1], got {threshold!r}.") from None
    if not 0.0 <= value <= 1.0:
        raise InputError(f"The threshold must be in [0, 1], got {value}. 0.5 is the paper's value.")
    return value


def probability_image(probs: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Render a probability map as an 8-bit grayscale image of the given (h, w) (white = 1).

    Example:
        >>> probability_image(np.ones((8, 8), np.float32), (16, 16)).max()
        255
    """
    tensor = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32))[None, None]  # (1, 1, S, S)
    resized = resize_bilinear(tensor, tuple(size))[0, 0].clamp(0.0, 1.0).numpy()  # (h, w)
    return np.rint(resized * 255.0).astype(np.uint8)


def mask_stats(mask: np.ndarray) -> Dict[str, float]:
    """Segmented area of a bool mask, in pixels and in percent of the image.

    Example:
        >>> mask_stats(np.eye(4, dtype=bool))
        {'area_px': 4, 'area_percent': 25.0, 'height': 4, 'width': 4}
    """
    area = int(np.count_nonzero(mask))
    total = int(mask.size)
    return {
        "area_px": area,
        "area_percent": round(100.0 * area / total, 4) if total else 0.0,
        "height": int(mask.shape[0]),
        "width": int(mask.shape[1]),
    }
