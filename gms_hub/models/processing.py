"""Tensors in and out: intensity scaling, the paper's resize rule, and probabilities at the original size.

Reading image files (formats, size limits) is `gms_hub.io.reading`; `resolve_segment_inputs` reads the paths
given to `GMS.segment` with it.
"""

from __future__ import annotations

import os
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..io.reading import read_input

ImageInput = Union[Image.Image, np.ndarray]
ValueRange = Optional[Tuple[float, float]]


def _pil_to_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(image, dtype=np.uint16)
    if mode in ("I", "F"):
        return np.asarray(image).astype(np.float32)
    if mode in ("RGBA", "LA", "PA", "P", "1", "CMYK", "YCbCr", "HSV", "LAB", "RGBX", "La", "RGBa"):
        image = image.convert("RGBA" if mode in ("P", "PA") else "RGB" if mode not in ("LA", "La", "1") else "L")
    return np.asarray(image)


def to_float_rgb(image: ImageInput, value_range: ValueRange = None) -> np.ndarray:
    """Turn one image into float32 RGB in [0, 1], shape (H, W, 3).

    uint8 is divided by 255 (the paper). uint16, other integers and floats are stretched per image from
    their min to their max unless `value_range=(lo, hi)` is given (16-bit scanners rarely fill the range).
    Alpha is dropped and grayscale is repeated to three channels.

    Args:
        image (`PIL.Image.Image` or `np.ndarray`): (H, W), (H, W, 1), (H, W, 3) or (H, W, 4).
        value_range (`tuple(float, float)`, *optional*): the intensities mapped to 0 and 1.

    Returns:
        `np.ndarray` of float32, (H, W, 3), values in [0, 1].
    """
    if isinstance(image, Image.Image):
        array = _pil_to_array(image)
    elif isinstance(image, np.ndarray):
        array = image
    elif isinstance(image, torch.Tensor):
        raise TypeError(
            "Got a torch.Tensor; segment() takes PIL images or numpy arrays (H, W[, C]). "
            "For preprocessed (B, 3, S, S) tensors in [-1, 1] call the model directly: model(pixel_values)."
        )
    else:
        raise TypeError(f"Expected a PIL.Image.Image or a numpy array, got {type(image).__name__}.")

    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        array = array[..., :3] if array.shape[2] == 4 else array
    elif array.ndim != 2:
        raise ValueError(f"Expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {array.shape}.")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"Got an empty image of shape {array.shape}.")
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"Expected uint8, uint16 or float pixels, got dtype {array.dtype}.")

    data = array.astype(np.float32)
    if not np.isfinite(data).all():
        raise ValueError("The image contains NaN or infinite values; clean them before segmenting.")
    if value_range is not None:
        lo, hi = (float(v) for v in value_range)
        if not hi > lo:
            raise ValueError(f"value_range must be (lo, hi) with hi > lo, got {value_range}.")
    elif array.dtype == np.uint8:
        lo, hi = 0.0, 255.0
    else:
        lo, hi = float(data.min()), float(data.max())
    data = (data - lo) / (hi - lo) if hi > lo else np.zeros_like(data)
    data = np.clip(data, 0.0, 1.0)
    if data.ndim == 2:
        data = data[..., None]
    if data.shape[2] == 1:
        data = np.repeat(data, 3, axis=2)
    return np.ascontiguousarray(data)


def resolve_segment_inputs(items: Sequence[Any], value_range: Optional[Tuple[float, float]]):
    """Read the paths among `segment`'s inputs; arrays and PIL images pass through. Used by `GMS.segment`.

    Without any path, `items` and `value_range` come back unchanged (the array path stays byte-identical). With
    a path, each file is read by `gms_hub.io.reading.read_input` (a DICOM/NIfTI frame by its own intensity rules,
    an image with `value_range` like an array) and every item becomes float32 RGB in [0, 1] with
    `value_range=(0, 1)`, so DICOM frames and arrays can share one call. A path to a multi-frame file (cine DICOM,
    NIfTI volume) is an error: stream it with `read_input(path).batches(n)` instead.

    Returns:
        `(items, value_range)` to pass on to preprocessing.
    """
    if not any(isinstance(item, (str, os.PathLike)) for item in items):
        return items, value_range
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


def resize_bilinear(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with half-pixel centres and no antialiasing (OpenCV's INTER_LINEAR rule)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)


def preprocess(
    images: Sequence[ImageInput], image_size: int, value_range: ValueRange = None
) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
    """Images -> pixel values (B, 3, S, S) in [-1, 1], plus each image's original (H, W).

    Example:
        >>> pixel_values, sizes = preprocess([Image.open("scan.png")], image_size=224)
        >>> pixel_values.shape  # torch.Size([1, 3, 224, 224])
    """
    batch, sizes = [], []
    for image in images:
        rgb = torch.from_numpy(to_float_rgb(image, value_range)).permute(2, 0, 1)[None]  # (1, 3, H, W)
        sizes.append((int(rgb.shape[-2]), int(rgb.shape[-1])))
        batch.append(resize_bilinear(rgb, (image_size, image_size)))
    pixel_values = torch.cat(batch) * 2.0 - 1.0  # (B, 3, S, S)
    return pixel_values, sizes


def resize_probabilities(probs: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Resize a (1, S, S) or (S, S) probability map to `size` = (H, W), bilinearly."""
    x = probs.reshape(1, 1, *probs.shape[-2:]).float()
    return resize_bilinear(x, size)[0, 0].clamp_(0.0, 1.0)


def postprocess_probabilities(
    probs: torch.Tensor, size: Tuple[int, int], threshold: float = 0.5
) -> Tuple[np.ndarray, np.ndarray]:
    """Model-resolution probabilities of one image -> its mask and probabilities at the original `size` (H, W).

    One channel (binary foreground probability, or any [0, 1] map such as an uncertainty map): resized
    bilinearly and clamped, mask = probability > `threshold`. K + 1 channels (class probabilities, background
    first): each channel resized bilinearly (a convex combination per pixel, so the sum stays 1; renormalised
    against rounding), label map = arg-max over classes.

    Args:
        probs (`torch.Tensor`): (1, S, S), (S, S) or (K+1, S, S).
        size (`tuple(int, int)`): the original (H, W).
        threshold (`float`, defaults to 0.5): binary threshold (unused for class probabilities).

    Returns:
        `tuple`: `(mask, probabilities)`: bool (H, W) and float32 (H, W), or uint8 (H, W) labels 0..K and float32
        (K+1, H, W).

    Example:
        >>> labels, class_probs = postprocess_probabilities(mask_probs[0], (480, 640))
    """
    if probs.ndim == 2 or probs.shape[0] == 1:
        full = resize_probabilities(probs, size).cpu().numpy()  # (H, W)
        return full > threshold, full
    full = resize_bilinear(probs[None].float(), size)[0].clamp_(0.0, 1.0)  # (K+1, H, W)
    full = full / full.sum(dim=0, keepdim=True).clamp_min(1e-12)  # (K+1, H, W), sums to 1
    labels = full.argmax(dim=0).to(torch.uint8)  # (H, W)
    return labels.cpu().numpy(), full.cpu().numpy()


def segment_images(
    predict: Callable[[torch.Tensor], torch.Tensor],
    images: Union[ImageInput, Sequence[ImageInput]],
    image_size: int,
    threshold: float,
    return_probabilities: bool = False,
    value_range: ValueRange = None,
    batch_size: int = 8,
    return_uncertainty: bool = False,
    num_classes: int = 1,
):
    """The body of `segment`, shared by [`GMS`] and [`ONNXGMS`]: batches, preprocessing, resizing back, masks.

    Args:
        predict (`Callable`): pixel values (b, 3, S, S) float32 on the CPU in [-1, 1] -> probabilities (b, 1, S, S)
            (binary) or class probabilities (b, K+1, S, S).
        images, value_range, batch_size, return_probabilities, return_uncertainty: as in [`GMS.segment`].
        image_size (`int`): the model's input side S.
        threshold (`float`): probability above which a pixel is foreground (binary models).
        num_classes (`int`, defaults to 1): foreground classes K (normalises the uncertainty by log(K+1)).

    Returns:
        As [`GMS.segment`]: masks, then probabilities if asked, then uncertainty if asked; single items for one
        image, lists for a list.

    Example:
        >>> masks = segment_images(lambda x: model(x).mask_probs, images, 224, threshold=0.5)
    """
    from ..inference.uncertainty import predictive_entropy

    single = not isinstance(images, (list, tuple))
    items = [images] if single else list(images)
    if not items:
        raise ValueError("segment() got an empty list of images.")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}.")
    masks: List[np.ndarray] = []
    probabilities: List[np.ndarray] = []
    uncertainties: List[np.ndarray] = []
    for start in range(0, len(items), batch_size):
        pixel_values, sizes = preprocess(items[start : start + batch_size], image_size, value_range)
        probs = predict(pixel_values).float()  # (b, 1, S, S) or (b, K+1, S, S)
        entropy = probs  # unused unless return_uncertainty
        if return_uncertainty:
            entropy = predictive_entropy(probs, num_classes=num_classes)
            entropy = entropy.reshape(probs.shape[0], 1, *probs.shape[-2:])  # (b, 1, S, S)
        for prob, uncertainty, size in zip(probs, entropy, sizes):
            mask, full = postprocess_probabilities(prob, size, threshold)  # (H, W); (H, W) or (K+1, H, W)
            masks.append(mask)
            probabilities.append(full)
            if return_uncertainty:
                uncertainties.append(postprocess_probabilities(uncertainty, size)[1])  # (H, W)
    outputs = [masks]
    if return_probabilities:
        outputs.append(probabilities)
    if return_uncertainty:
        outputs.append(uncertainties)
    if single:
        outputs = [output[0] for output in outputs]
    return tuple(outputs) if len(outputs) > 1 else outputs[0]
