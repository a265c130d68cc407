"""Mask encodings of a user's folder: binary, class indices, or RGB colours with a palette.

`detect_mask_encoding` decides, from the distinct values of every mask, how masks are read
(`MaskEncoding`); `gms_hub.data.folder` uses it to check every mask before writing and to convert each one
to the stored form (0/255 for binary, class indices otherwise). The rules are in the
`gms_hub.data.folder` module docstring.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_INFERRED_CLASSES",
    "MaskEncoding",
    "detect_mask_encoding",
    "mask_pixels",
    "parse_labels",
    "read_palette",
    "stored_mask",
    "unique_values",
]

MAX_INFERRED_CLASSES = 31
"""Largest class index inferred without ``--labels``: more distinct values look like an 8-bit grey mask
(anti-aliased or JPEG-compressed), not like class indices. Declare more classes with ``labels``."""

VALUE_OUTSIDE = "mask values outside the declared set"


@dataclass(frozen=True)
class MaskEncoding:
    """How the masks of a folder are read, and what they become.

    Args:
        kind (`str`): ``"binary"``, ``"index"`` or ``"palette"``.
        id2label (`dict[int, str]`): class names, 0 = background.
        foreground_value (`int`, *optional*): binary only, the ``v`` of ``{0, v}``.
        palette (`dict[tuple[int, int, int], int]`, *optional*): palette only, colour -> class index.
    """

    kind: str
    id2label: dict[int, str]
    foreground_value: Optional[int] = None
    palette: Optional[dict[tuple[int, int, int], int]] = field(default=None)

    @property
    def num_classes(self) -> int:
        """Foreground classes."""
        return len(self.id2label) - 1

    def describe(self) -> str:
        """One line for the log and the card."""
        if self.kind == "binary":
            return (f"binary masks {{0, {self.foreground_value}}} (foreground `{self.id2label[1]}`), "
                    "written as 0/255")
        if self.kind == "index":
            return f"class-index masks 0..{self.num_classes}, written as class indices"
        colours = ", ".join(f"{list(colour)} -> {index}" for colour, index in self.palette.items())
        return f"RGB colour masks with a palette (black -> 0, {colours}), written as class indices"

    def allowed_values(self) -> set:
        if self.kind == "binary":
            return {0, self.foreground_value}
        if self.kind == "index":
            return set(range(self.num_classes + 1))
        return {(0, 0, 0), *self.palette}


# ---------------------------------------------------------------------------------------------- arguments
def parse_labels(labels: Optional[str | Sequence[str]]) -> Optional[list[str]]:
    """``"benign,malignant"`` (or a list) -> ``["benign", "malignant"]``; `None` stays `None`.

    Example:
        >>> parse_labels("benign, malignant")
        ['benign', 'malignant']
    """
    if labels is None:
        return None
    names = [name.strip() for name in (labels.split(",") if isinstance(labels, str) else labels)]
    if not names or any(not name for name in names):
        raise ValueError(f"--labels must be comma-separated non-empty names like 'benign,malignant', got {labels!r}.")
    if len(set(names)) != len(names) or "background" in names:
        raise ValueError(f"--labels must be unique foreground class names (not 'background'), got {names}.")
    if len(names) > 255:
        raise ValueError(f"At most 255 foreground classes fit an 8-bit mask, got {len(names)} labels.")
    return names


def read_palette(palette: str | os.PathLike | Mapping) -> dict[str, tuple[int, int, int]]:
    """Read a palette ``{"label": [r, g, b], ...}`` from a JSON file, a JSON string or a mapping.

    The order of the entries is the class order (first entry = class 1). An entry whose colour is black
    names the background and is dropped (black is always background).

    Returns:
        `dict[str, tuple[int, int, int]]`: foreground label -> colour.

    Example:
        >>> read_palette('{"benign": [255, 0, 0], "malignant": [0, 255, 0]}')
        {'benign': (255, 0, 0), 'malignant': (0, 255, 0)}
    """
    source = palette
    if not isinstance(palette, Mapping):
        text = os.fspath(palette)
        if os.path.isfile(text):
            text = Path(text).read_text(encoding="utf-8")
        elif not text.lstrip().startswith("{"):
            raise FileNotFoundError(f"--palette {text!r} is neither a JSON file nor a JSON object.")
        try:
            palette = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"--palette is not valid JSON ({err}); expected {{\"label\": [r, g, b], ...}}.") from err
    if not isinstance(palette, Mapping) or not palette:
        raise ValueError(f"--palette must be a non-empty JSON object {{\"label\": [r, g, b], ...}}, got {source!r}.")
    colours: dict[str, tuple[int, int, int]] = {}
    for label, colour in palette.items():
        if (not isinstance(colour, (list, tuple)) or len(colour) != 3
                or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in colour)):
            raise ValueError(f"--palette entry {label!r}: expected [r, g, b] with integers 0..255, got {colour!r}.")
        colour = tuple(int(c) for c in colour)
        if colour == (0, 0, 0):
            logger.info("Palette entry %r is black: black is always background", label)
            continue
        colours[str(label)] = colour
    repeated = [colour for colour, count in Counter(colours.values()).items() if count > 1]
    if repeated:
        raise ValueError(f"--palette gives the same colour to several classes: {repeated}.")
    if not colours:
        raise ValueError("--palette has no foreground colour (black is background).")
    from ..models.coding import MAX_CODED_CLASSES

    if len(colours) > MAX_CODED_CLASSES:
        raise ValueError(f"--palette names {len(colours)} classes; a GMS model segments at most {MAX_CODED_CLASSES} "
                         "foreground classes. Merge classes or give fewer colours.")
    return colours


# ---------------------------------------------------------------------------------------------- mask values
def mask_pixels(path: Path, colour: bool) -> np.ndarray:
    """A mask file as (H, W) integers (grey/index) or (H, W, 3) uint8 (`colour`, for a palette).

    Raises `ValueError` for a colour mask read without a palette.
    """
    with Image.open(path) as mask:
        mask.load()
        if colour:
            return np.asarray(mask.convert("RGB"))
        if mask.mode == "1":
            return np.asarray(mask.convert("L"))
        values = np.asarray(mask)  # L, P (palette indices), I;16, I: the stored values
        if values.ndim == 3:
            if mask.mode in ("LA", "La", "PA", "RGBA", "RGBa"):
                values = values[..., :-1]  # an alpha channel is not a label
            if values.shape[-1] > 1 and not (values == values[..., :1]).all():
                raise ValueError(
                    f"colour mask (mode {mask.mode}) without --palette; pass --palette '{{\"label\": [r, g, b]}}'"
                )
            values = values[..., 0]
        if values.dtype.kind == "f":
            if not np.array_equal(values, np.round(values)):
                raise ValueError(f"floating-point mask (mode {mask.mode}) with non-integer values")
            values = values.astype(np.int64)
        return values


def mask_frames(path: Path, colour: bool, slice_axis: int = -1) -> list[np.ndarray]:
    """The masks a file holds, one per frame: one for an image file (`mask_pixels`), one per frame or slice of a
    DICOM or NIfTI mask (`gms_hub.io.reading.read_label_frames`: stored values, no intensity rule).

    Raises `ValueError` for a DICOM/NIfTI mask with a palette (those hold class values, not colours).
    """
    from ..io.reading import detect_medical_format

    if detect_medical_format(path) is None:
        return [mask_pixels(path, colour)]
    if colour:
        raise ValueError("a DICOM/NIfTI mask holds class values, not colours; drop --palette (pass --labels)")
    from ..io.reading import read_label_frames

    return list(read_label_frames(path, slice_axis=slice_axis))


def unique_values(pixels: np.ndarray) -> tuple:
    if pixels.ndim == 3:
        codes = np.unique((pixels[..., 0].astype(np.int64) << 16) | (pixels[..., 1].astype(np.int64) << 8) | pixels[..., 2])
        return tuple((int(c >> 16), int((c >> 8) & 255), int(c & 255)) for c in codes)
    return tuple(int(v) for v in np.unique(pixels))


def _format_values(values: Sequence, limit: int = 8) -> str:
    shown = [list(v) if isinstance(v, tuple) else v for v in values[:limit]]
    text = ", ".join(str(v) for v in shown)
    return "{" + text + (f", ... ({len(values)} values)" if len(values) > limit else "") + "}"


def _majority_binary(values_by_name: Mapping[str, Sequence]) -> Optional[int]:
    """The foreground value `v` when more than half of the masks are `{0, v}` (or empty) for one `v`, else `None`."""
    foregrounds = Counter()
    for values in values_by_name.values():
        nonzero = [v for v in set(values) if v != 0]
        if len(nonzero) == 1 and isinstance(nonzero[0], (int, np.integer)):
            foregrounds[int(nonzero[0])] += 1
    if not foregrounds:
        return None
    value, count = foregrounds.most_common(1)[0]
    return value if count * 2 > len(values_by_name) else None


def detect_mask_encoding(
    values_by_name: Mapping[str, Sequence],
    labels: Optional[Sequence[str]] = None,
    palette: Optional[Mapping[str, tuple[int, int, int]]] = None,
) -> tuple[MaskEncoding, dict[str, list[str]]]:
    """Decide how masks are read from the values each one holds, and list the masks that do not fit.

    Args:
        values_by_name (`Mapping[str, Sequence]`): the distinct values of each mask (ints, or RGB tuples with
            a palette).
        labels (`Sequence[str]`, *optional*): foreground class names; declares K for grey masks.
        palette (`Mapping[str, tuple]`, *optional*): colour masks: label -> colour, in class order.

    Returns:
        `tuple[MaskEncoding, dict[str, list[str]]]`: the encoding (`None` when no encoding fits) and the
        problems: ``{"mask values outside the declared set (<declared>)": ["name (values ...)", ...]}`` or ``{}``.

    Raises:
        `ValueError`: `labels` together with `palette` (the palette names the classes).

    Example:
        >>> encoding, problems = detect_mask_encoding({"a": (0, 255), "b": (0,)})
        >>> encoding.kind, encoding.foreground_value
        ('binary', 255)
    """
    if palette is not None:
        if labels is not None:
            raise ValueError("Pass either --labels or --palette: the palette's keys already name the classes.")
        id2label = {0: "background", **{index: label for index, label in enumerate(palette, start=1)}}
        encoding = MaskEncoding("palette", id2label, palette={tuple(c): i for i, c in enumerate(palette.values(), 1)})
        declared = f"black or a palette colour {_format_values(list(encoding.palette))}"
    else:
        union = sorted(set().union(*map(set, values_by_name.values()))) if values_by_name else []
        nonzero = [v for v in union if v != 0]
        count_files = Counter(v for values in values_by_name.values() for v in set(values) if v != 0)
        num_labels = None if labels is None else len(labels)
        if num_labels == 1 or (num_labels is None and len(nonzero) <= 1):
            foreground = count_files.most_common(1)[0][0] if count_files else 255
            if not count_files:
                logger.warning("Every mask is empty (all 0): reading them as binary masks {0, 255}")
            encoding = MaskEncoding("binary", {0: "background", 1: labels[0] if labels else "class_1"}, foreground)
            declared = f"binary {{0, {foreground}}}" + (", one label given" if labels else "")
        elif num_labels is not None:
            names = {index: label for index, label in enumerate(labels, start=1)}
            encoding = MaskEncoding("index", {0: "background", **names})
            declared = f"class indices 0..{num_labels}, {num_labels} labels given"
            if len(nonzero) == 1:  # the commonest case: binary 0/255 masks with several class names
                declared += (
                    f"; every mask holds only 0 and {nonzero[0]}, i.e. binary masks: pass one name "
                    f"(--labels {labels[0]}) or no --labels for a binary model; for {num_labels} classes the masks "
                    f"must store the class index of each pixel (0 background, 1 = {labels[0]}, 2 = {labels[1]}, ...)"
                )
        elif max(union) <= MAX_INFERRED_CLASSES:
            k = max(union)
            encoding = MaskEncoding("index", {0: "background", **{i: f"class_{i}" for i in range(1, k + 1)}})
            declared = f"class indices 0..{k}"
        elif _majority_binary(values_by_name) is not None:  # a few bad masks must not make the good ones "bad"
            foreground = _majority_binary(values_by_name)
            encoding = MaskEncoding("binary", {0: "background", 1: "class_1"}, foreground)
            declared = f"binary {{0, {foreground}}}, as most masks are"
        else:
            encoding = None
            declared = (
                f"neither binary (one foreground value, {{0, v}}) nor class indices 0..K with K <= "
                f"{MAX_INFERRED_CLASSES}; all masks together hold {_format_values(union)}"
            )
    allowed = encoding.allowed_values() if encoding is not None else set(range(MAX_INFERRED_CLASSES + 1))
    outside = []
    for name, values in values_by_name.items():
        bad = [v for v in values if v not in allowed]
        if bad:
            outside.append(f"{name} (values {_format_values(list(values))}, outside: {_format_values(bad)})")
    if encoding is None and not outside:  # cannot happen: some value exceeds MAX_INFERRED_CLASSES
        raise AssertionError("no encoding and no offending mask")
    return encoding, ({f"{VALUE_OUTSIDE} ({declared})": outside} if outside else {})


def stored_mask(pixels: np.ndarray, encoding: MaskEncoding) -> np.ndarray:
    """The stored mask: (H, W) uint8, 0/255 for binary, class indices otherwise."""
    if encoding.kind == "binary":
        return (pixels == encoding.foreground_value).astype(np.uint8) * 255
    if encoding.kind == "index":
        return pixels.astype(np.uint8)
    codes = (pixels[..., 0].astype(np.int64) << 16) | (pixels[..., 1].astype(np.int64) << 8) | pixels[..., 2]
    out = np.zeros(codes.shape, dtype=np.uint8)
    for (r, g, b), index in encoding.palette.items():
        out[codes == ((r << 16) | (g << 8) | b)] = index
    return out
