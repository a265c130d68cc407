"""Label colours and coloured overlays of masks on images, shared by the predict CLI and the Space.

Only numpy and PIL are needed here. A binary mask is label map {0, 1}; label 1 draws in the project's red
(255, 48, 48), so a binary overlay is the same image the Space always drew.
"""

from __future__ import annotations

import colorsys
from typing import Optional, Sequence, Tuple

import numpy as np
from PIL import Image

__all__ = ["DEFAULT_OPACITY", "FOREGROUND_COLOR", "label_colors", "overlay_labels"]

FOREGROUND_COLOR = (255, 48, 48)
"""Colour of label 1, and of every binary mask: a red that reads on grayscale scans and on skin."""

DEFAULT_OPACITY = 0.45
"""Fill opacity: the tissue under the mask stays visible; the solid outline marks the border."""

# Labels 2.. after the red: hues far from red and from each other, bright enough for gray backgrounds.
_FIXED = ((48, 160, 255), (64, 220, 96), (255, 200, 40), (200, 80, 255), (40, 230, 220), (255, 130, 40))


def label_colors(num_classes: int) -> np.ndarray:
    """Distinct RGB colours for background and `num_classes` foreground classes.

    Row 0 (background) is black and never drawn; row 1 is `FOREGROUND_COLOR`; rows 2..7 are fixed hues chosen
    apart from red and from each other; further rows step around the hue circle by the golden angle.

    Args:
        num_classes (`int`): number of foreground classes (1 for a binary model).

    Returns:
        `np.ndarray`: (num_classes + 1, 3) uint8.

    Example:
        >>> label_colors(2).tolist()
        [[0, 0, 0], [255, 48, 48], [48, 160, 255]]
    """
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes counts foreground classes and must be >= 1, got {num_classes}.")
    colors = [(0, 0, 0), FOREGROUND_COLOR, *_FIXED][: num_classes + 1]
    hue = 0.0
    while len(colors) < num_classes + 1:
        hue = (hue + 0.381966) % 1.0  # golden angle: successive hues stay apart
        colors.append(tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, 0.75, 1.0)))
    return np.asarray(colors, dtype=np.uint8)


def _resize_nearest(labels: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    if labels.shape == tuple(size):
        return labels
    resized = Image.fromarray(labels.astype(np.int32)).resize((size[1], size[0]), Image.NEAREST)
    return np.asarray(resized).astype(labels.dtype)


def overlay_labels(
    image: np.ndarray,
    labels: np.ndarray,
    colors: Optional[Sequence[Sequence[int]]] = None,
    opacity: float = DEFAULT_OPACITY,
) -> np.ndarray:
    """Blend each label's colour over an image, with a solid one-pixel outline per label.

    Label 0 is background and left as is. A pixel is on the outline of its label when one of its 4 neighbours
    carries another label (image borders count as the same label), so touching classes are separated by both
    outlines.

    Args:
        image (`np.ndarray`): (H, W, 3) uint8.
        labels (`np.ndarray`): (h, w) bool mask or integer label map, resized to the image with nearest neighbour.
        colors (`Sequence`, *optional*): (K+1, 3) RGB per label; defaults to `label_colors(labels.max())`.
        opacity (`float`, defaults to `DEFAULT_OPACITY`): fill opacity in [0, 1]; 0 leaves only the outlines.

    Returns:
        `np.ndarray`: (H, W, 3) uint8.

    Example:
        >>> overlay_labels(np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), bool), opacity=0.0)[0, 0].tolist()
        [255, 48, 48]
    """
    opacity = float(opacity)
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}.")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}; convert it with "
                         "`gms_hub.models.processing.to_float_rgb` and scale to 0..255 first.")
    labels = np.asarray(labels)
    if labels.ndim != 2 or not (labels.dtype == np.bool_ or np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"labels must be an (H, W) bool or integer label map, got {labels.shape} {labels.dtype}.")
    labels = _resize_nearest(labels.astype(np.int64), image.shape[:2])  # (H, W)
    top = int(labels.max(initial=0))
    palette = label_colors(max(top, 1)) if colors is None else np.asarray(colors, dtype=np.uint8)
    if palette.ndim != 2 or palette.shape[1] != 3 or top >= len(palette):
        raise ValueError(f"colors must give an RGB row for every label 0..{top}, got shape {palette.shape}.")
    if labels.min(initial=0) < 0:
        raise ValueError(f"labels must be >= 0, got {int(labels.min())}.")
    out = image.astype(np.float32)
    padded = np.pad(labels, 1, mode="edge")
    same = (
        (padded[:-2, 1:-1] == labels) & (padded[2:, 1:-1] == labels)
        & (padded[1:-1, :-2] == labels) & (padded[1:-1, 2:] == labels)
    )  # (H, W): all 4 neighbours carry this pixel's label
    for label in range(1, top + 1):
        region = labels == label
        if not region.any():
            continue
        color = palette[label].astype(np.float32)
        out[region] = (1.0 - opacity) * out[region] + opacity * color
        out[region & ~same] = color
    return np.rint(out).astype(np.uint8)
