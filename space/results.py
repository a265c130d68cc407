"""Image in and results out for the Space (app.py): upload reading, masks, overlays, statistics.

Everything here is pure and model-free, so the Gradio layer only wires components to these functions and
turns `InputError` into `gr.Error`. Reading files is the library's `gms_hub.io.reading.read_input` (PNG, JPEG,
BMP, TIFF, DICOM, NIfTI); this module only words its errors for someone uploading and picks the frame (or
slice) to segment. Nothing here reads or returns patient attributes: an upload's
`MedicalImage.dataset` is only handed on to `write_dicom_seg`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from gms_hub.io.reading import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    InputFile,
    VolumeTooLargeError,
    read_image,
    read_input,
)
from gms_hub.io.medical import MedicalImageError, pixel_area_mm2
from gms_hub.models.processing import postprocess_probabilities, resize_bilinear, resize_probabilities

MAX_VOLUME_VOXELS = int(os.environ.get("GMS_MAX_VOLUME_VOXELS", 64_000_000))
"""Largest DICOM/NIfTI volume the Space segments (frames x rows x columns; 512 x 512 x 244 by default), refused from
the header in milliseconds with the predict command to run instead: one visitor's huge volume must not hold the
server for everyone."""

logger = logging.getLogger(__name__)

__all__ = [
    "DISPLAY_MAX_SIDE",
    "InputError",
    "UploadFrame",
    "check_threshold",
    "class_stats",
    "display_image",
    "mask_from_probabilities",
    "mask_stats",
    "mean_inside",
    "open_upload",
    "probability_image",
    "read_upload",
    "read_upload_frame",
    "result_labels",
    "result_stats",
    "uncertainty_from_probabilities",
    "upload_frame",
]


class InputError(ValueError):
    """A request the Space cannot serve (bad upload, bad threshold); the message is meant for the user."""


def read_upload(path: Optional["os.PathLike | str"], max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read an uploaded image with `gms_hub.io.reading.read_image`, as an `InputError` for the user if it fails.

    Example:
        >>> read_upload("examples/ultrasound.png").size
        (128, 128)
    """
    if path is None or str(path) == "":
        raise InputError(
            "No image was uploaded. Upload a PNG, JPEG, BMP or TIFF image, a DICOM file or a NIfTI image, or click an example."
        )
    try:
        return read_image(path, max_pixels=max_pixels)
    except ImageReadError as err:
        raise InputError(str(err)) from None


@dataclass
class UploadFrame:
    """One frame of an upload, ready for `ModelRegistry.prepare(name, image, value_range)`.

    Attributes:
        image (`PIL.Image.Image` or `np.ndarray`): the picture (a DICOM/NIfTI frame is float32 in [0, 1]).
        value_range (`tuple(float, float)` or `None`): what to pass to `to_float_rgb` (`None`: the image rule).
        kind (`str`): `"image"`, `"dicom"` or `"nifti"`.
        frame (`int`): the frame (or slice) index, counted from 0.
        num_frames (`int`): frames (DICOM) or slices (NIfTI volume) in the file; 1 for an image.
        spacing (`tuple(float, float)` or `None`): pixel size in mm along rows and columns, where the file says.
        medical (`MedicalImage` or `None`): the opened scan (for a DICOM SEG); holds patient data, never show it.
    """

    image: Any
    value_range: Optional[Tuple[float, float]]
    kind: str
    frame: int = 0
    num_frames: int = 1
    spacing: Optional[Tuple[float, float]] = None
    medical: Any = field(default=None, repr=False)

    @property
    def pixel_area_mm2(self) -> Optional[float]:
        """Area of one pixel in mm², or `None` when the spacing is unknown."""
        return pixel_area_mm2(self.spacing)


def open_upload(
    path: Optional["os.PathLike | str"], max_pixels: int = DEFAULT_MAX_PIXELS, kind: Optional[str] = None
) -> InputFile:
    """Open an upload with `gms_hub.io.reading.read_input` (frames of DICOM/NIfTI decoded later), errors worded for
    the user (the reader applies the image size limits to DICOM/NIfTI frames too).

    Args:
        path (`str` or `os.PathLike`): the uploaded file.
        max_pixels (`int`, defaults to `DEFAULT_MAX_PIXELS`): largest accepted rows x columns of a frame.
        kind (`str`, *optional*): the format already decided at the door (`upload_kind`); detected here if `None`.

    Returns:
        `gms_hub.io.reading.InputFile`.

    Raises:
        `InputError`: an unreadable file, or frames too large or too small (the message says what to do).

    Example:
        >>> open_upload("scan.nii.gz").num_frames
        5
    """
    if path is None or str(path) == "":
        read_upload(path)  # raises the page's "No image was uploaded" message
    try:
        opened = read_input(path, max_pixels=max_pixels, kind=kind, max_voxels=MAX_VOLUME_VOXELS)
    except VolumeTooLargeError as err:  # refused from the header in milliseconds: say where it can run
        raise InputError(f"{err} Or segment it on your machine: `python -m gms_hub.predict --input "
                         f"{Path(str(path)).name} --output_dir masks/`.") from None
    except (ImageReadError, MedicalImageError, FileNotFoundError) as err:
        raise InputError(str(err)) from None
    return opened


def upload_frame(opened: InputFile, frame: int = 0) -> UploadFrame:
    """Frame (or slice) `frame`, counted from 0, of an opened upload (`open_upload`); only that frame is decoded.

    Raises:
        `InputError`: a frame that the file does not have, or one that cannot be decoded.

    Example:
        >>> upload_frame(open_upload("scan.nii.gz"), 2).frame
        2
    """
    try:
        frame = int(frame)
    except (TypeError, ValueError):
        raise InputError(f"The frame must be a whole number, got {frame!r}.") from None
    name = opened.path.name
    if opened.kind == "image":
        if frame != 0:
            raise InputError(f"'{name}' has a single frame; ask for frame 1, not {frame + 1}.")
        return UploadFrame(image=opened.frames[0], value_range=None, kind="image")
    if not 0 <= frame < opened.num_frames:
        raise InputError(f"'{name}' has {opened.num_frames} frame(s); frame {frame + 1} does not exist. "
                         f"Choose 1 to {opened.num_frames}.")
    try:
        pixels = opened.frames[frame]  # (H, W) or (H, W, 3) float32 in [0, 1]
    except MedicalImageError as err:
        raise InputError(str(err)) from None
    return UploadFrame(image=pixels, value_range=opened.value_range, kind=opened.kind, frame=frame,
                       num_frames=opened.num_frames, spacing=opened.spacing, medical=opened.medical)


def read_upload_frame(
    path: Optional["os.PathLike | str"], frame: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS
) -> UploadFrame:
    """Read one frame of an upload: an image file (frame 0), or a frame/slice of a DICOM or NIfTI file.

    DICOM is recognised by `.dcm`/`.dicom` or the `DICM` preamble (extensionless exports), NIfTI by `.nii` and
    `.nii.gz`; only the requested frame is decoded (`open_upload` then `upload_frame`).

    Args:
        path (`str` or `os.PathLike`): the uploaded file.
        frame (`int`, defaults to 0): frame or slice, counted from 0.
        max_pixels (`int`, defaults to `DEFAULT_MAX_PIXELS`): largest accepted rows x columns.

    Returns:
        `UploadFrame`.

    Raises:
        `InputError`: unreadable file, or a frame that the file does not have (the message says what to do).

    Example:
        >>> read_upload_frame("scan.nii.gz", frame=2).num_frames
        5
    """
    try:
        frame = int(frame)
    except (TypeError, ValueError):
        raise InputError(f"The frame must be a whole number, got {frame!r}.") from None
    return upload_frame(open_upload(path, max_pixels=max_pixels), frame)


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
    return result_labels({"probs": probs, "size": size}, threshold)


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


def uncertainty_from_probabilities(probs: np.ndarray) -> np.ndarray:
    """Normalised predictive entropy in [0, 1] at the model's resolution (`gms_hub.inference.uncertainty.predictive_entropy`).

    Args:
        probs (`np.ndarray`): (S, S) foreground probability, or (K+1, S, S) class probabilities.

    Returns:
        `np.ndarray`: (S, S) float32.
    """
    from gms_hub.inference.uncertainty import predictive_entropy

    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim == 3:
        return np.asarray(predictive_entropy(probs, num_classes=probs.shape[0] - 1), dtype=np.float32)
    return np.asarray(predictive_entropy(probs), dtype=np.float32)


def mean_inside(values: np.ndarray, mask: np.ndarray) -> Optional[float]:
    """Mean of a model-resolution map (S, S) inside a mask at the input's size (H, W); `None` for an empty mask.

    The map is resized bilinearly to the mask's size first, as `GMS.segment` resizes its uncertainty maps.

    Example:
        >>> mean_inside(np.full((8, 8), 0.25, np.float32), np.ones((3, 5), bool))
        0.25
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return None
    full = resize_probabilities(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)), mask.shape)  # (H, W)
    return round(float(full.numpy()[mask].mean()), 4)


def class_stats(labels: np.ndarray, id2label: Mapping[int, str], pixel_area: Optional[float] = None) -> List[Dict]:
    """Area of each foreground class of a label map: name, pixels, percent, and mm² where the spacing is known.

    Args:
        labels (`np.ndarray`): (H, W) label map with values 0..K.
        id2label (`Mapping[int, str]`): class names, 0 = background (left out).
        pixel_area (`float`, *optional*): mm² of one pixel.

    Returns:
        `list[dict]`: one dict per foreground class, in label order.

    Example:
        >>> class_stats(np.array([[0, 1], [2, 2]]), {0: "background", 1: "benign", 2: "malignant"})[1]["area_px"]
        2
    """
    counts = np.bincount(np.asarray(labels).ravel(), minlength=max(id2label) + 1)
    total = int(np.asarray(labels).size)
    rows = []
    for index in sorted(k for k in id2label if k > 0):
        area = int(counts[index])
        row = {"label": index, "name": str(id2label[index]), "area_px": area,
               "area_percent": round(100.0 * area / total, 4) if total else 0.0}
        if pixel_area is not None:
            row["area_mm2"] = round(area * pixel_area, 3)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- cached results
def result_labels(result: Mapping, threshold: float) -> np.ndarray:
    """A cached result (the Space's dict: `probs` at the model's resolution, `size`) at the input's size: a bool
    mask for a binary model (probability > threshold), a uint8 label map 0..K (arg-max) for a multi-class one."""
    threshold = check_threshold(threshold)
    probs = torch.from_numpy(np.ascontiguousarray(result["probs"], dtype=np.float32))  # (S, S) or (K+1, S, S)
    return postprocess_probabilities(probs, tuple(result["size"]), threshold)[0]  # the library's rule, as segment


def result_stats(result: Mapping, labels: np.ndarray, threshold: float) -> Dict[str, Any]:
    """The stats dict of the API: the `/segment` keys, plus `area_mm2`, `frame`, `classes` and `mean_uncertainty`
    only where they apply (spacing known, several frames, several classes, uncertainty computed)."""
    multiclass = labels.dtype != bool
    foreground = labels > 0 if multiclass else labels  # (H, W) bool
    stats = {"model": result["model"], "source": result["source"], "source_kind": result["source_kind"]}
    if not multiclass:
        stats["threshold"] = threshold
    stats.update(mask_stats(foreground))
    if result.get("pixel_area") is not None:
        stats["area_mm2"] = round(stats["area_px"] * result["pixel_area"], 3)
    if result.get("num_frames", 1) > 1:
        stats["frame"], stats["num_frames"] = result["frame"] + 1, result["num_frames"]
    if multiclass:
        stats["classes"] = class_stats(labels, result["id2label"], result.get("pixel_area"))
    if result.get("uncertainty") is not None:
        stats["num_samples"], stats["tta"] = result["num_samples"], result["tta"]
        stats["mean_uncertainty"] = mean_inside(result["uncertainty"], foreground)
    stats["device"], stats["precision"] = result["device"], result["precision"]
    return stats
