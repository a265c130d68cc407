"""The paper's per-example training and evaluation preprocessing, in torch (the augmentation itself lives in
`gms_hub.data.augmentation`).

Training (method.md): horizontal flip p .5, vertical flip p .5, random 90 degree rotation p .5, color jitter
(brightness, contrast, saturation, hue 0.1) p .2, shift-scale-rotate (shift 0.15, scale 0.1, rotate 20
degrees, reflect-101 borders) p .4, in this order, at the image's own resolution; then a bilinear resize
(half-pixel centres, no antialiasing: OpenCV's INTER_LINEAR) to the model size. Masks follow every
geometric step with nearest-neighbour sampling (torch ``"nearest"`` is OpenCV's INTER_NEAREST), so they
stay binary.

Why torch and not albumentations (the reference's library): no extra dependency, and the same code runs on
a batch on the GPU (`augment_batch`), which keeps a multi-GPU run from starving on a few CPU cores. Every
operation takes per-sample parameters (`AugmentParams`), so a batch of B images gets B independent draws.

Evaluation: the image resized bilinearly as above; the ground truth read as 8-bit gray, resized with PIL's
NEAREST rule (torch ``"nearest-exact"``), divided by 255 and thresholded at >= 0.5, exactly as the
paper's evaluation scores it; the original-size mask comes along for full-resolution metrics.

Multi-class data (`num_classes=K > 1`, masks holding class indices 0..K): the same geometry, every mask step
nearest-neighbour, so masks keep their class indices (float32 holding whole numbers) instead of being
thresholded; `augment_batch` treats them the same way. `num_classes=1` (the default) is the paper's binary path.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..models.processing import preprocess, resize_bilinear, to_float_rgb
from .augmentation import AugmentParams, apply_augmentation, augment_batch, sample_augment_params

__all__ = [
    "AugmentParams",
    "EvalTransform",
    "TrainTransform",
    "apply_augmentation",
    "augment_batch",
    "collate_batch",
    "sample_augment_params",
]

def _as_columns(examples: Mapping[str, Any]) -> tuple[dict[str, list], bool]:
    """`with_transform` passes columns as lists; a single example (``ds[i]`` without it) has scalars."""
    single = not isinstance(examples["image"], (list, tuple))
    return ({key: [value] for key, value in examples.items()} if single else dict(examples)), single


def _unwrap(output: dict[str, list], single: bool) -> dict:
    return {key: values[0] for key, values in output.items()} if single else output


def _gray_mask(mask: Image.Image) -> np.ndarray:
    return np.asarray(mask if mask.mode == "L" else mask.convert("L"))


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"`num_classes` counts foreground classes and must be an integer >= 1, got {num_classes!r}.")
    return int(num_classes)


def _class_mask(mask: Image.Image, num_classes: int, name: Any = None) -> np.ndarray:
    """A class-index mask (mode L, values 0..K) as uint8 (H, W), checked against `num_classes`."""
    if mask.mode not in ("L", "P", "I", "I;16"):
        raise ValueError(
            f"Multi-class mask {name!r} must be a class-index image (mode L, values 0..{num_classes}), got mode "
            f"{mask.mode}. Convert colour masks with `python -m gms_hub.data.prepare folder --palette ...`."
        )
    values = np.asarray(mask)
    if values.size and (int(values.min()) < 0 or int(values.max()) > num_classes):
        found = sorted(int(v) for v in np.unique(values))[:20]
        raise ValueError(
            f"Mask {name!r} holds values {found}, but num_classes={num_classes} allows class indices 0..{num_classes}. "
            "Is this a binary 0/255 mask? Then train with num_classes=1."
        )
    return values.astype(np.uint8)


class TrainTransform:
    """Training transform for `datasets.Dataset.with_transform`: paper augmentation, then resize.

    Args:
        image_size (`int`, defaults to 224): output side S.
        augment (`bool`, defaults to `True`): apply the augmentation per example at the image's own
            resolution; `False` only resizes (augment later on the GPU with `augment_batch`).
        seed (`int`, *optional*): seed a private generator, for reproducible single-process use. Leave it
            `None` with DataLoader workers: the global RNG, which the DataLoader seeds per worker, is used.
        num_classes (`int`, defaults to 1): foreground classes. 1: masks are 0/255, thresholded at 128. K > 1:
            masks hold class indices 0..K, kept as they are.

    Returns (per example): ``pixel_values`` float32 (3, S, S) in [-1, 1], ``masks`` float32 (1, S, S) in
    {0, 1} (class indices 0..K for `num_classes > 1`), ``name`` and ``orig_size`` (H, W).

    Example:
        >>> train = load_gms_dataset("outputs/gms-busi", "train").with_transform(TrainTransform(224))
        >>> train[0]["pixel_values"].shape, train[0]["masks"].shape
        (torch.Size([3, 224, 224]), torch.Size([1, 224, 224]))
    """

    def __init__(self, image_size: int = 224, augment: bool = True, seed: Optional[int] = None, num_classes: int = 1):
        if int(image_size) < 1:
            raise ValueError(f"`image_size` must be a positive integer, got {image_size}.")
        self.image_size = int(image_size)
        self.num_classes = _check_num_classes(num_classes)
        self.augment = augment
        self.seed = seed
        self._generator = None if seed is None else torch.Generator().manual_seed(int(seed))

    def __repr__(self) -> str:
        classes = f", num_classes={self.num_classes}" if self.num_classes > 1 else ""
        return f"TrainTransform(image_size={self.image_size}, augment={self.augment}, seed={self.seed}{classes})"

    def _one(self, image: Image.Image, mask: Image.Image, name: Any = None) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        rgb = torch.from_numpy(to_float_rgb(image)).permute(2, 0, 1)[None]  # (1, 3, H, W) in [0, 1]
        if self.num_classes > 1:
            values = _class_mask(mask, self.num_classes, name).astype(np.float32)  # class indices
        else:
            values = (_gray_mask(mask) >= 128).astype(np.float32)  # {0, 1}
        binary = torch.from_numpy(values)[None, None]  # (1, 1, H, W)
        if binary.shape[-2:] != rgb.shape[-2:]:
            raise ValueError(f"Mask size {tuple(binary.shape[-2:])} differs from image size {tuple(rgb.shape[-2:])}.")
        orig_size = (int(rgb.shape[-2]), int(rgb.shape[-1]))
        if self.augment:
            params = sample_augment_params(1, generator=self._generator)
            rgb, binary = apply_augmentation(rgb, binary, params)
        size = (self.image_size, self.image_size)
        pixel_values = resize_bilinear(rgb, size) * 2 - 1  # (1, 3, S, S)
        masks = F.interpolate(binary, size=size, mode="nearest")  # (1, 1, S, S), OpenCV INTER_NEAREST
        return pixel_values[0].float(), masks[0].float(), orig_size

    def __call__(self, examples: Mapping[str, Any]) -> dict:
        columns, single = _as_columns(examples)
        output = {"pixel_values": [], "masks": [], "name": [], "orig_size": []}
        for image, mask, name in zip(columns["image"], columns["mask"], columns["name"]):
            pixel_values, masks, orig_size = self._one(image, mask, name)
            output["pixel_values"].append(pixel_values)
            output["masks"].append(masks)
            output["name"].append(name)
            output["orig_size"].append(orig_size)
        return _unwrap(output, single)


class EvalTransform:
    """Evaluation transform for `datasets.Dataset.with_transform`: the paper's test preprocessing.

    The image is resized exactly as `gms_hub.models.processing.preprocess` does for inference. The ground truth is
    read as 8-bit gray, resized with PIL's NEAREST rule (torch ``"nearest-exact"``), divided by 255 and
    thresholded at >= 0.5.

    Args:
        image_size (`int`, defaults to 224): output side S.
        num_classes (`int`, defaults to 1): foreground classes. K > 1: masks hold class indices 0..K, resized with
            the same NEAREST rule and kept as indices (no threshold).

    Returns (per example): ``pixel_values`` float32 (3, S, S) in [-1, 1], ``masks`` float32 (1, S, S) in
    {0, 1}, ``name``, ``orig_mask`` uint8 numpy (H, W) in {0, 1} and ``orig_size`` (H, W); for `num_classes > 1`
    ``masks`` and ``orig_mask`` hold class indices 0..K.

    Example:
        >>> test = load_gms_dataset("outputs/gms-busi", "test").with_transform(EvalTransform(224))
        >>> test[0]["orig_mask"].shape == test[0]["orig_size"]
        True
    """

    def __init__(self, image_size: int = 224, num_classes: int = 1):
        if int(image_size) < 1:
            raise ValueError(f"`image_size` must be a positive integer, got {image_size}.")
        self.image_size = int(image_size)
        self.num_classes = _check_num_classes(num_classes)

    def __repr__(self) -> str:
        classes = f", num_classes={self.num_classes}" if self.num_classes > 1 else ""
        return f"EvalTransform(image_size={self.image_size}{classes})"

    def __call__(self, examples: Mapping[str, Any]) -> dict:
        columns, single = _as_columns(examples)
        output = {"pixel_values": [], "masks": [], "name": [], "orig_mask": [], "orig_size": []}
        size = (self.image_size, self.image_size)
        for image, mask, name in zip(columns["image"], columns["mask"], columns["name"]):
            pixel_values, (orig_size,) = preprocess([image], self.image_size)  # (1, 3, S, S)
            gray = _class_mask(mask, self.num_classes, name) if self.num_classes > 1 else _gray_mask(mask)
            if gray.shape != orig_size:
                raise ValueError(f"Mask size {gray.shape} of {name!r} differs from its image size {orig_size}.")
            gt = torch.from_numpy(gray.astype(np.float32))[None, None]  # (1, 1, H, W), 0..255
            resized = F.interpolate(gt, size=size, mode="nearest-exact")  # PIL's NEAREST rule
            output["pixel_values"].append(pixel_values[0])
            output["name"].append(name)
            if self.num_classes > 1:
                output["masks"].append(resized[0])  # (1, S, S) class indices
                output["orig_mask"].append(gray)  # (H, W) uint8 class indices
            else:
                output["masks"].append((resized[0] / 255.0 >= 0.5).float())  # (1, S, S)
                output["orig_mask"].append((gray / 255.0 >= 0.5).astype(np.uint8))
            output["orig_size"].append(tuple(int(v) for v in orig_size))
        return _unwrap(output, single)


def collate_batch(examples: Sequence[Mapping[str, Any]]) -> dict:
    """Collate transformed examples for a `torch.utils.data.DataLoader`.

    Tensors are stacked (``pixel_values`` (B, 3, S, S), ``masks`` (B, 1, S, S)); ``orig_size`` becomes a
    long tensor (B, 2); ``orig_mask`` (sizes differ), ``name`` and other non-tensor values stay lists.

    Args:
        examples (`Sequence[Mapping]`): outputs of `TrainTransform` or `EvalTransform`, one per example.

    Returns:
        `dict`: the batch.

    Example:
        >>> loader = DataLoader(train, batch_size=8, shuffle=True, drop_last=True, collate_fn=collate_batch)
    """
    if not examples:
        raise ValueError("collate_batch got an empty list of examples.")
    batch = {}
    for key in examples[0]:
        values = [example[key] for example in examples]
        if key == "orig_size":
            batch[key] = torch.tensor([list(v) for v in values], dtype=torch.long)
        elif key != "orig_mask" and all(isinstance(v, torch.Tensor) for v in values):
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    return batch
