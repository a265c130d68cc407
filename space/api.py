"""The single-image API endpoints: `/segment` and `/segment_uncertainty` (with its 16-bit uncertainty map).

Both read the upload, segment it with `space.handlers.Segmenter` and return files; user mistakes come back as
`gr.Error` with the message (`space.handlers.guarded`).
"""

from __future__ import annotations

import math

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gms_hub.models.processing import resize_probabilities

from .handlers import Segmenter, check_frame, guarded
from .results import InputError, check_threshold, uncertainty_from_probabilities

__all__ = ["ApiEndpoints"]


class ApiEndpoints:
    """`segment` and `segment_uncertainty`, the functions behind the Space's single-image API.

    Args:
        segmenter (`Segmenter`): reads, segments and renders one upload.
    """

    def __init__(self, segmenter: Segmenter):
        self.segmenter = segmenter

    @guarded
    def segment(self, image_file, model_name, threshold):
        """Segment an uploaded image.

        Args:
            image_file (`str`): path of the uploaded PNG, JPEG, BMP or TIFF (gray, RGB, RGBA, 8 or 16 bit), DICOM or
                NIfTI file (its first frame or slice; `/segment_uncertainty` takes a frame number).
            model_name (`str`): one of bus, busi, glas, ham10000, kvasir-instrument, or a name configured in GMS_MODELS.
            threshold (`float`): probability above which a pixel is foreground (0.5 in the paper).

        Returns:
            overlay image, mask PNG path (input size, values 0/255; 0..K for a multi-class model), probability map
            image, stats dict.
        """
        segmenter = self.segmenter
        threshold = check_threshold(threshold)
        result = segmenter.run_model(image_file, segmenter.registry.normalize(model_name))
        overlay, mask_path, stats, _ = segmenter.render(result, threshold)
        return overlay, mask_path, segmenter.probability_png(result, mask_path), stats

    @guarded
    def segment_uncertainty(self, image_file, model_name, threshold, num_samples, tta, seed, frame):
        """Segment one image (or one frame of a DICOM/NIfTI file) with posterior samples and/or TTA.

        Args:
            image_file (`str`): PNG, JPEG, BMP, TIFF, DICOM or NIfTI file.
            model_name (`str`): a model name (as `/segment`).
            threshold (`float`): probability above which a pixel is foreground.
            num_samples (`int`): posterior samples, 0..16 (0: the posterior mean, the paper's inference).
            tta (`bool`): also average over the 8 flips and quarter turns.
            seed (`int`): seed of the posterior noise (the same seed gives the same maps).
            frame (`int`): frame (DICOM) or slice (NIfTI volume), counted from 1; 1 for an ordinary image.

        Returns:
            overlay image, mask PNG path, probability map image, uncertainty map PNG path (16-bit, value / 65535 is
            the normalised predictive entropy at the input's size), stats dict (with `mean_uncertainty` inside the
            mask).
        """
        segmenter = self.segmenter
        threshold = check_threshold(threshold)
        num_samples, tta = segmenter.check_samples(num_samples, tta)
        seed = check_seed(seed)
        key = segmenter.registry.normalize(model_name)
        result = segmenter.run_model(image_file, key, check_frame(frame), num_samples, tta, seed)
        if result["uncertainty"] is None:  # no samples and no TTA: the entropy of the single pass
            result["uncertainty"] = uncertainty_from_probabilities(result["probs"])
        overlay, mask_path, stats, _ = segmenter.render(result, threshold)
        stats.setdefault("mean_uncertainty", None)
        stats["num_samples"], stats["tta"] = num_samples, tta
        uncertainty_path = uncertainty_png(result, Path(mask_path).with_name(f"{result['stem']}_uncertainty.png"))
        return overlay, mask_path, segmenter.probability_png(result, mask_path), uncertainty_path, stats


def uncertainty_png(result: dict, path: Path) -> str:
    """The uncertainty map at the input's size as a 16-bit PNG (value / 65535 = normalised predictive entropy)."""
    full = resize_probabilities(torch.from_numpy(result["uncertainty"]), result["size"]).numpy()  # (H, W) in [0, 1]
    Image.fromarray(np.rint(full * 65535.0).astype(np.uint16)).save(path, format="PNG")
    return str(path)


MAX_SEED = 2**64 - 1


def check_seed(seed) -> int:
    """A page/API seed -> int, or an `InputError` for NaN, infinity, fractions and values outside 0..2**64 - 1."""
    try:
        value = float(seed)
        number = int(value) if abs(value) < 2**64 else int(seed)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"seed must be a whole number in 0..{MAX_SEED}, got {seed!r}.") from None
    if not math.isfinite(value) or number != value or not 0 <= number <= MAX_SEED:
        raise InputError(f"seed must be a whole number in 0..{MAX_SEED}, got {seed!r}.")
    return number
