"""The paper's training augmentation, in torch, on one image or a batch.

Training (method.md): horizontal flip p .5, vertical flip p .5, random 90 degree rotation p .5, color jitter
(brightness, contrast, saturation, hue 0.1) p .2, shift-scale-rotate (shift 0.15, scale 0.1, rotate 20
degrees, reflect-101 borders) p .4, in this order, at the image's own resolution. Masks follow every
geometric step with nearest-neighbour sampling (torch ``"nearest"`` is OpenCV's INTER_NEAREST), so they
stay binary, or keep their class indices for multi-class data.

Why torch and not albumentations (the reference's library): no extra dependency, and the same code runs on
a batch on the GPU (`augment_batch`), which keeps a multi-GPU run from starving on a few CPU cores. Every
operation takes per-sample parameters (`AugmentParams`), so a batch of B images gets B independent draws.
`gms_hub.data.transforms` applies it per example before the resize to the model size.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["AugmentParams", "apply_augmentation", "augment_batch", "sample_augment_params"]

# The paper's augmentation (reference: albumentations, see method.md). Probabilities, then magnitudes.
HFLIP_P = 0.5
VFLIP_P = 0.5
ROT90_P = 0.5
JITTER_P = 0.2
JITTER_STRENGTH = 0.1  # brightness, contrast, saturation factors in [0.9, 1.1]; hue shift in [-0.1, 0.1] turns
SSR_P = 0.4
SHIFT_LIMIT = 0.15  # fraction of width / height
SCALE_LIMIT = 0.1  # zoom factor in [0.9, 1.1]
ROTATE_LIMIT = 20.0  # degrees

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 weights, as used by PIL, OpenCV and torchvision for grayscale
_JITTER_OPS = ("brightness", "contrast", "saturation", "hue")


@dataclass
class AugmentParams:
    """Per-sample random draws of the paper augmentation; every field is a tensor of shape (B,) (or (B, 4)).

    Args:
        hflip, vflip (`torch.BoolTensor`): flip left-right / up-down.
        rot90_k (`torch.LongTensor`): number of quarter turns, 0..3 (0 when the rotation is not applied).
        jitter (`torch.BoolTensor`): apply color jitter.
        brightness, contrast, saturation (`torch.Tensor`): jitter factors around 1.
        hue (`torch.Tensor`): hue shift in turns.
        jitter_order (`torch.LongTensor` of shape (B, 4)): order of the four jitter operations.
        ssr (`torch.BoolTensor`): apply shift-scale-rotate.
        angle (`torch.Tensor`): rotation in degrees; scale (`torch.Tensor`): zoom factor;
        shift_x, shift_y (`torch.Tensor`): shifts as fractions of width and height.
    """

    hflip: torch.Tensor
    vflip: torch.Tensor
    rot90_k: torch.Tensor
    jitter: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    jitter_order: torch.Tensor
    ssr: torch.Tensor
    angle: torch.Tensor
    scale: torch.Tensor
    shift_x: torch.Tensor
    shift_y: torch.Tensor

    def to(self, device) -> "AugmentParams":
        return AugmentParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def sample_augment_params(
    batch_size: int, generator: Optional[torch.Generator] = None, device: str | torch.device = "cpu"
) -> AugmentParams:
    """Draw the paper augmentation's random parameters for `batch_size` samples.

    Args:
        batch_size (`int`): number of samples.
        generator (`torch.Generator`, *optional*): source of randomness (on `device`); the global RNG if `None`.
        device (`str` or `torch.device`, defaults to ``"cpu"``): where the tensors live.

    Returns:
        `AugmentParams`.

    Example:
        >>> params = sample_augment_params(8, torch.Generator().manual_seed(0))
        >>> params.rot90_k.shape
        torch.Size([8])
    """
    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(batch_size, generator=generator, device=device)

    def coin(p: float) -> torch.Tensor:
        return torch.rand(batch_size, generator=generator, device=device) < p

    rotate = coin(ROT90_P)
    k = torch.randint(0, 4, (batch_size,), generator=generator, device=device)  # albumentations draws 0..3
    order = torch.argsort(torch.rand(batch_size, 4, generator=generator, device=device), dim=1)
    return AugmentParams(
        hflip=coin(HFLIP_P),
        vflip=coin(VFLIP_P),
        rot90_k=torch.where(rotate, k, torch.zeros_like(k)),
        jitter=coin(JITTER_P),
        brightness=uniform(1 - JITTER_STRENGTH, 1 + JITTER_STRENGTH),
        contrast=uniform(1 - JITTER_STRENGTH, 1 + JITTER_STRENGTH),
        saturation=uniform(1 - JITTER_STRENGTH, 1 + JITTER_STRENGTH),
        hue=uniform(-JITTER_STRENGTH, JITTER_STRENGTH),
        jitter_order=order,
        ssr=coin(SSR_P),
        angle=uniform(-ROTATE_LIMIT, ROTATE_LIMIT),
        scale=uniform(1 - SCALE_LIMIT, 1 + SCALE_LIMIT),
        shift_x=uniform(-SHIFT_LIMIT, SHIFT_LIMIT),
        shift_y=uniform(-SHIFT_LIMIT, SHIFT_LIMIT),
    )


def _where(selected: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(selected.view(-1, 1, 1, 1), new, old)


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)  # (B, 1, H, W)


def _rgb_to_hsv(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r, g, b = images.unbind(1)
    value, argmax = images.max(dim=1)
    chroma = value - images.min(dim=1).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    saturation = chroma / torch.where(value > 0, value, torch.ones_like(value))  # 0 where value is 0 (chroma is)
    hue = torch.stack([(g - b) / safe, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe], dim=1)  # sector by max channel
    hue = hue.gather(1, argmax.unsqueeze(1)).squeeze(1)
    hue = torch.where(chroma > 0, torch.remainder(hue / 6.0, 1.0), torch.zeros_like(hue))
    return hue, saturation, value


def _hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    # Channel n of {R: 5, G: 3, B: 1}: v - v*s*clamp(min(k, 4 - k), 0, 1) with k = (n + 6h) mod 6.
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(n + hue * 6.0, 6.0)
        channels.append(value - value * saturation * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(channels, dim=1)


def _jitter_op(op: str, images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    factor = factor.view(-1, 1, 1, 1)
    if op == "brightness":
        out = images * factor
    elif op == "contrast":
        mean = _grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
        out = factor * images + (1 - factor) * mean
    elif op == "saturation":
        out = factor * images + (1 - factor) * _grayscale(images)
    else:  # hue: rotate the hue circle
        hue, saturation, value = _rgb_to_hsv(images)
        out = _hsv_to_rgb(torch.remainder(hue + factor.view(-1, 1, 1), 1.0), saturation, value)
    return out.clamp(0.0, 1.0)


def _color_jitter(images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """Brightness, contrast, saturation and hue, each sample in its own random order (as albumentations)."""
    factors = {"brightness": params.brightness, "contrast": params.contrast,
               "saturation": params.saturation, "hue": params.hue}
    color = images.shape[1] == 3  # saturation and hue do nothing to gray
    for position in range(len(_JITTER_OPS)):
        for index, op in enumerate(_JITTER_OPS):
            if op in ("saturation", "hue") and not color:
                continue
            selected = params.jitter & (params.jitter_order[:, position] == index)
            if selected.any():
                images = _where(selected, _jitter_op(op, images, factors[op]), images)
    return images


def _reflect_101(coordinate: torch.Tensor, size: int) -> torch.Tensor:
    """Fold pixel coordinates into [0, size - 1] like OpenCV's BORDER_REFLECT_101 (gfedcb|abcdefgh|gfedcb)."""
    if size == 1:
        return torch.zeros_like(coordinate)
    period = 2.0 * (size - 1)
    folded = torch.remainder(coordinate, period)
    return torch.where(folded > size - 1, period - folded, folded)


def _shift_scale_rotate(
    images: torch.Tensor, masks: torch.Tensor, params: AugmentParams, sizes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine warp about the centre: rotate by `angle`, zoom by `scale`, shift by (shift_x W, shift_y H).

    The geometry is that of the image at its original size `sizes` (B, 2) = (H, W): on a batch already
    resized to a square, the warp is conjugated by the resize, so a 20 degree rotation stays a rotation of
    the original picture rather than becoming a shear. Out-of-image samples reflect (reflect-101).
    """
    batch, _, height, width = images.shape
    device, dtype = images.device, images.dtype
    half_h = (sizes[:, 0].to(device=device, dtype=dtype) / 2).view(-1, 1, 1)  # original half extents, (B, 1, 1)
    half_w = (sizes[:, 1].to(device=device, dtype=dtype) / 2).view(-1, 1, 1)
    theta = torch.deg2rad(params.angle.to(dtype)).view(-1, 1, 1)
    scale = params.scale.to(dtype).view(-1, 1, 1)
    # Output pixel centres in normalized coordinates (-1..1, half-pixel centres), then in original pixels.
    ys = (torch.arange(height, device=device, dtype=dtype) * 2 + 1) / height - 1
    xs = (torch.arange(width, device=device, dtype=dtype) * 2 + 1) / width - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # (H, W)
    px = grid_x * half_w - params.shift_x.to(dtype).view(-1, 1, 1) * 2 * half_w  # (B, H, W)
    py = grid_y * half_h - params.shift_y.to(dtype).view(-1, 1, 1) * 2 * half_h
    # Inverse of OpenCV's getRotationMatrix2D (positive angle = counter-clockwise on screen, y down):
    # source = R(theta)^T-like map of (p - t), divided by the zoom.
    cos, sin = torch.cos(theta), torch.sin(theta)
    qx = (cos * px - sin * py) / scale
    qy = (sin * px + cos * py) / scale
    # Back to this tensor's pixel coordinates, folded into the image, as align_corners=True grid values.
    src_x = _reflect_101((qx / half_w + 1) * width / 2 - 0.5, width)
    src_y = _reflect_101((qy / half_h + 1) * height / 2 - 0.5, height)
    grid = torch.stack(
        [src_x / max(width - 1, 1) * 2 - 1, src_y / max(height - 1, 1) * 2 - 1], dim=-1
    )  # (B, H, W, 2)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)
    warped_masks = F.grid_sample(masks, grid.to(masks.dtype), mode="nearest", padding_mode="border", align_corners=True)
    return warped, warped_masks


def apply_augmentation(
    images: torch.Tensor,
    masks: torch.Tensor,
    params: AugmentParams,
    sizes: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the paper augmentation with given parameters: flips, rot90, color jitter, shift-scale-rotate.

    Args:
        images (`torch.Tensor` of shape (B, C, H, W)): float in [0, 1], C = 1 or 3.
        masks (`torch.Tensor` of shape (B, 1, H, W)): float, values 0 and 1.
        params (`AugmentParams`): per-sample draws (`sample_augment_params`), on the images' device.
        sizes (`torch.Tensor` of shape (B, 2), *optional*): each image's original (H, W) when the batch was
            resized to a square before augmenting; defaults to (H, W) of `images`.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: augmented images in [0, 1] and masks with values 0 and 1. A
        quarter turn of a non-square image swaps H and W, so a batch of B > 1 must be square.

    Example:
        >>> params = sample_augment_params(4)
        >>> images, masks = apply_augmentation(torch.rand(4, 3, 64, 64), torch.zeros(4, 1, 64, 64), params)
    """
    batch, _, height, width = images.shape
    if sizes is None:
        sizes = torch.tensor([[height, width]], dtype=torch.float32).expand(batch, 2)
    sizes = sizes.to(device=images.device, dtype=torch.float32)
    images = _where(params.hflip, images.flip(-1), images)
    masks = _where(params.hflip, masks.flip(-1), masks)
    images = _where(params.vflip, images.flip(-2), images)
    masks = _where(params.vflip, masks.flip(-2), masks)

    k = params.rot90_k
    if height == width:
        rotated_images, rotated_masks = images.clone(), masks.clone()
        for turns in (1, 2, 3):
            selected = k == turns
            if selected.any():
                rotated_images[selected] = torch.rot90(images[selected], turns, dims=(-2, -1))
                rotated_masks[selected] = torch.rot90(masks[selected], turns, dims=(-2, -1))
        images, masks = rotated_images, rotated_masks
    elif batch == 1:
        turns = int(k[0])
        images, masks = torch.rot90(images, turns, dims=(-2, -1)), torch.rot90(masks, turns, dims=(-2, -1))
    elif bool((k % 2 == 1).any()):
        raise ValueError(
            f"A quarter turn changes the shape of non-square images ({height}x{width}), so they cannot stay in "
            "one batch: augment them one at a time (TrainTransform) or resize them to a square first "
            "(TrainTransform(augment=False), then augment_batch)."
        )
    else:
        half = k == 2  # only half turns here: they keep the shape
        images = _where(half, torch.rot90(images, 2, dims=(-2, -1)), images)
        masks = _where(half, torch.rot90(masks, 2, dims=(-2, -1)), masks)
    sizes = torch.where((k % 2 == 1).view(-1, 1), sizes.flip(-1), sizes)  # a quarter turn swaps H and W

    if params.jitter.any():
        images = _color_jitter(images, params)
    if params.ssr.any():
        warped, warped_masks = _shift_scale_rotate(images, masks, params, sizes)
        images = _where(params.ssr, warped, images)
        masks = _where(params.ssr, warped_masks, masks)
    return images, masks


def augment_batch(
    pixel_values: torch.Tensor,
    masks: torch.Tensor,
    orig_sizes: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper augmentation on a batch already resized to a square, on its own device (GPU included).

    Use with ``TrainTransform(image_size, augment=False)`` to move augmentation off the data-loader CPUs.
    Flips and quarter turns commute exactly with the resize; the shift-scale-rotate is conjugated by the
    resize (`orig_sizes`), so the geometry matches augmenting at the original resolution; only the order
    of the two interpolations differs.

    Args:
        pixel_values (`torch.Tensor` of shape (B, 3, S, S)): images in [-1, 1].
        masks (`torch.Tensor` of shape (B, 1, S, S)): values 0 and 1, or class indices (float; nearest-neighbour
            sampling keeps them).
        orig_sizes (`torch.Tensor` of shape (B, 2), *optional*): original (H, W) per image (the collated
            ``orig_size``); square originals are assumed when `None`.
        generator (`torch.Generator`, *optional*): on the batch's device.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: pixel values in [-1, 1] and binary masks, same shapes.

    Example:
        >>> train_ds = train_ds.with_transform(TrainTransform(224, augment=False))
        >>> batch = collate_batch([train_ds[i] for i in range(8)])
        >>> pixel_values, masks = augment_batch(batch["pixel_values"].cuda(), batch["masks"].cuda(), batch["orig_size"])
    """
    params = sample_augment_params(pixel_values.shape[0], generator=generator, device=pixel_values.device)
    images, masks = apply_augmentation((pixel_values + 1) / 2, masks, params, sizes=orig_sizes)
    return images * 2 - 1, masks
