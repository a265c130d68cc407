"""Running a loaded model on an upload: preprocessing (CPU) and the forward pass(es) to probabilities."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from .sources import LoadedModel, PreparedInput

__all__ = ["mask_probabilities", "prepare_input"]


def prepare_input(loaded: LoadedModel, image, value_range: Optional[Tuple[float, float]] = None) -> PreparedInput:
    """Preprocess `image` for `loaded` (CPU work, no forward pass).

    Args:
        loaded (`LoadedModel`): the model the input is for (its `image_size`).
        image (`PIL.Image.Image` or `np.ndarray`): any mode the library reads (8/16-bit, gray, RGB, RGBA), or a
            DICOM/NIfTI frame from `gms_hub.io.medical.MedicalImage.frames`.
        value_range (`tuple(float, float)`, *optional*): the intensities mapped to 0 and 1 (a medical frame's
            `MedicalImage.value_range`); by default the library's rule for the image's dtype.

    Returns:
        `PreparedInput`.
    """
    from gms_hub.models.processing import preprocess, to_float_rgb

    from .results import display_image

    rgb = to_float_rgb(image, value_range=value_range)  # (H, W, 3) in [0, 1]: the library's intensity rule
    display = display_image(rgb)
    # value_range=(0, 1) makes preprocess's own to_float_rgb the identity on `rgb`.
    pixel_values, sizes = preprocess([rgb], loaded.image_size, value_range=(0.0, 1.0))  # (1, 3, S, S)
    del rgb
    return PreparedInput(pixel_values=pixel_values, size=sizes[0], display=display)


@torch.inference_mode()
def mask_probabilities(
    loaded: LoadedModel, pixel_values: torch.Tensor, num_samples: int = 0, tta: bool = False, seed: Optional[int] = None
) -> np.ndarray:
    """Run `loaded` on prepared pixel values (1, 3, S, S).

    Args:
        loaded (`LoadedModel`): the model.
        pixel_values (`torch.Tensor`): (1, 3, S, S) in [-1, 1], from `prepare_input`.
        num_samples (`int`, defaults to 0): posterior samples (`gms_hub.inference.uncertainty.predict_probabilities`);
            0 with `tta=False` is the paper's single pass, bit for bit.
        tta (`bool`, defaults to `False`): also average over the flips and quarter turns.
        seed (`int`, *optional*): seed of the posterior noise (the same seed gives the same maps).

    Returns:
        `np.ndarray`: float32 (S, S) foreground probabilities for a binary model, (K+1, S, S) class
        probabilities (background first) for a model with K > 1 classes.
    """
    from gms_hub.inference.uncertainty import predict_probabilities

    generator = None if seed is None else torch.Generator().manual_seed(int(seed))
    probs = predict_probabilities(
        loaded.model, pixel_values.to(loaded.device, loaded.dtype), num_samples=int(num_samples), tta=bool(tta),
        generator=generator,
    )  # (1, C, S, S): C = 1 (binary) or K + 1
    probs = probs[0].float().cpu().numpy()  # (C, S, S)
    return probs[0] if probs.shape[0] == 1 else probs
