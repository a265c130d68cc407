"""What the Space's handlers share: the error guard, upload names and checks, and `Segmenter`, which segments one
frame into the cached result every view renders from and writes its mask and overlay.

User mistakes become `gr.Error` with the message; anything else is logged (no upload contents, no patient data)
and answered without taking the server down. The handlers built on this: `space.api` (the single-image API
endpoints), `space.views` (the page's result views), `space.preview` (the upload preview and frame selector),
`space.about` (model description and card), `space.gallery` (the examples) and `space.batch` (the batch tab).
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable, Tuple

import gradio as gr
import numpy as np
from PIL import Image

from gms_hub.io.mask_files import write_label_png
from gms_hub.io.safety import describe_error
from gms_hub.io.medical import MedicalImageError, strip_suffix
from gms_hub.io.reading import detect_format
from gms_hub.io.visualize import label_colors, overlay_labels

from .config import UnknownModelError
from .page import DEFAULT_OPACITY
from .registry import ModelRegistry, ModelUnavailableError
from .results import (
    InputError,
    UploadFrame,
    probability_image,
    read_upload_frame,
    result_labels,
    result_stats,
    uncertainty_from_probabilities,
)

logger = logging.getLogger(__name__)

__all__ = ["Segmenter", "check_frame", "guarded", "save_png", "upload_kind", "upload_stem", "user_error"]

USER_ERRORS = (InputError, UnknownModelError, ModelUnavailableError, MedicalImageError)
"""What a user can get wrong (a bad upload, setting or model name): answered with its message."""


def user_error(err: Exception) -> gr.Error:
    return gr.Error(str(err), print_exception=False)


def guarded(fn):
    """Turn what a user can get wrong into a gr.Error with the message; anything else is logged (no upload
    contents, no patient data) and answered without taking the server down."""
    @functools.wraps(fn)  # gradio documents the API from the signature
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            raise user_error(err) from None
        except gr.Error:
            raise
        except Exception as err:  # keep the server up and tell the user what happened
            # a third-party text may quote a header value: the kind of error only, in the log and on the page
            logger.error("Segmentation failed (%s)", describe_error(err))
            raise gr.Error(f"Segmentation failed ({describe_error(err)}). Try another image or model.") from None

    return wrapper


def save_png(array: np.ndarray, path: Path) -> str:
    # Images go out as PNG files we write ourselves: lossless, and gradio then copies them into its cache
    # atomically (its in-memory image path rewrites a shared cache file, which races under concurrent
    # identical results).
    Image.fromarray(array).save(path, format="PNG")
    return str(path)


def upload_kind(path) -> str:
    """What an upload is, decided once at the door: `"dicom"`, `"nifti"` or `"image"` (for the PIL reader).

    Example:
        >>> upload_kind("scan.nii.gz")
        'nifti'
    """
    return detect_format(path)


def upload_stem(path, kind: str) -> str:
    """The output name of an upload of `kind` (`upload_kind`, or the kind its reader reported): `scan.nii.gz` ->
    `scan`, `us.png` -> `us`, at most 64 characters.

    Example:
        >>> upload_stem("scan.nii.gz", "nifti")
        'scan'
    """
    name = Path(str(path)).name
    stem = strip_suffix(name) if kind != "image" else Path(name).stem
    return stem[:64] or "image"


def check_frame(frame) -> int:
    """An API/page frame number (counted from 1, as DICOM counts frames) -> index from 0."""
    try:
        number = int(frame)
    except (TypeError, ValueError):
        raise InputError(f"frame must be a whole number counted from 1, got {frame!r}.") from None
    if number != float(frame) or number < 1:
        raise InputError(f"frame must be a whole number counted from 1, got {frame!r}.")
    return number - 1



class Segmenter:
    """Segments one frame of an upload into the cached result (probabilities at the model's resolution, preview,
    provenance) and renders a result at a threshold into mask and overlay files, one folder per result.

    Args:
        registry (`ModelRegistry`): which model serves each name.
        forward (`Callable`): `(model_name, pixel_values, num_samples, tta, seed) -> probabilities`, the GPU part
            (decorated for ZeroGPU in `app.py`).
        output_dir (`Path`): where results are written, one folder per result, pruned after `output_max_age_s`.
        max_pixels (`int`): largest accepted frame (rows x columns).
        max_samples (`int`, defaults to 16): most posterior samples per request.
        output_max_age_s (`float`, defaults to 3600): age at which result folders are deleted.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        forward: Callable,
        output_dir: Path,
        max_pixels: int,
        *,
        max_samples: int = 16,
        output_max_age_s: float = 3600,
    ):
        self.registry, self.forward, self.output_dir = registry, forward, Path(output_dir)
        self.max_pixels, self.max_samples = int(max_pixels), int(max_samples)
        self.output_max_age_s = output_max_age_s

    def new_output_folder(self) -> Path:
        """A fresh folder for one result (download names stay readable); results older than the limit go."""
        now = time.time()
        for old in self.output_dir.iterdir():
            if now - old.stat().st_mtime > self.output_max_age_s:
                shutil.rmtree(old, ignore_errors=True)
        folder = self.output_dir / uuid.uuid4().hex
        folder.mkdir()
        return folder

    def check_samples(self, num_samples, tta) -> Tuple[int, bool]:
        try:
            samples = int(num_samples)
        except (TypeError, ValueError):
            raise InputError(f"num_samples must be a whole number in 0..{self.max_samples}, got {num_samples!r}.") from None
        if samples != float(num_samples) or not 0 <= samples <= self.max_samples:
            raise InputError(f"num_samples must be a whole number in 0..{self.max_samples}, got {num_samples!r}. "
                             "Each sample is one more decode.")
        return samples, bool(tta)

    def segment_frame(self, upload: UploadFrame, key: str, image_file, num_samples: int = 0, tta: bool = False,
                      seed=None) -> dict:
        """Preprocess and segment one frame: the cached result the page and the API render from. Posterior samples
        or TTA also compute the uncertainty map. The upload's kind, decided when it was read, names the outputs."""
        started = time.perf_counter()
        prepared = self.registry.prepare(key, upload.image, value_range=upload.value_range)
        probs = self.forward(key, prepared.pixel_values, num_samples, tta, seed)  # (S, S) or (K+1, S, S)
        loaded = self.registry.get(key)
        uncertain = num_samples > 0 or tta
        return {
            "probs": probs,
            "uncertainty": uncertainty_from_probabilities(probs) if uncertain else None,  # (S, S) in [0, 1]
            "num_samples": num_samples,
            "tta": tta,
            "id2label": self.registry.class_names(key),
            "size": prepared.size,
            "display": prepared.display,
            "stem": upload_stem(image_file, upload.kind),
            "path": str(image_file),
            "kind": upload.kind,
            "frame": upload.frame,
            "num_frames": upload.num_frames,
            "pixel_area": upload.pixel_area_mm2,
            "model": key,
            "source": loaded.source.label,
            "source_location": loaded.source.location,
            "source_kind": loaded.source.kind,
            "device": loaded.device.type,
            "precision": "float16" if loaded.dtype.itemsize == 2 else "float32",
            "seconds": time.perf_counter() - started,
        }

    def run_model(self, image_file, key: str, frame: int = 0, num_samples: int = 0, tta: bool = False, seed=None) -> dict:
        """Read one upload (one frame of a DICOM/NIfTI file) and segment it (`segment_frame`)."""
        upload = read_upload_frame(image_file, frame=frame, max_pixels=self.max_pixels)
        return self.segment_frame(upload, key, image_file, num_samples, tta, seed)

    def render(self, result: dict, threshold: float, opacity: float = DEFAULT_OPACITY):
        """Threshold cached probabilities: (overlay PNG path, mask PNG path, stats, labels at the input's size)."""
        labels = result_labels(result, threshold)
        stats = result_stats(result, labels, threshold)
        folder = self.new_output_folder()
        num_classes = 1 if labels.dtype == bool else len(result["id2label"]) - 1
        # multi-class: one colour per class; the mask is an index PNG with values 0..K
        overlay = overlay_labels(result["display"], labels, label_colors(num_classes), opacity)
        mask_path = write_label_png(labels, folder / f"{result['stem']}_mask.png", num_classes)
        overlay_path = save_png(overlay, folder / f"{result['stem']}_overlay.png")
        return overlay_path, mask_path, stats, labels

    def probability_png(self, result: dict, mask_path: str) -> str:
        """The API's probability map (8-bit, white = 1; for multi-class the foreground probability 1 - background)."""
        probs = result["probs"] if result["probs"].ndim == 2 else 1.0 - result["probs"][0]  # (S, S)
        return save_png(probability_image(probs, result["display"].shape[:2]),
                        Path(mask_path).with_name(f"{result['stem']}_probability.png"))
