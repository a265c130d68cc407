"""Segmentation metrics exactly as the paper's evaluation computes them.

The protocol (method.md, "Evaluation protocol"):

- the prediction is the mask probability at 224x224 thresholded with `> 0.5`;
- the ground truth is the mask file read as 8-bit grayscale, resized to 224x224 with PIL's NEAREST
  (which equals torch `mode="nearest-exact"`, not `"nearest"`), divided by 255 and thresholded with `>= 0.5`;
- per image, DSC = 2TP / (2TP + FP + FN) and IoU = TP / (TP + FP + FN), each 0 when its denominator is 0
  (so an image whose ground truth and prediction are both empty scores 0, as in the reference code);
- over images, the mean and the sample standard deviation (ddof 1).

Everything here is a pure function of its inputs.
"""

from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

ArrayLike = Union[np.ndarray, torch.Tensor]

PROTOCOL_DESCRIPTION = (
    "Paper protocol (Huo et al., GMS, AAAI 2025): image resized to {size}x{size} (bilinear, half-pixel centres, "
    "no antialiasing), prediction = mask probability > {threshold}; ground truth read as 8-bit grayscale, resized to "
    "{size}x{size} with PIL NEAREST, /255, >= 0.5; per image DSC = 2TP/(2TP+FP+FN), IoU = TP/(TP+FP+FN), 0 when the "
    "denominator is 0; mean and sample standard deviation (ddof 1) over images."
)


def _check_masks(pred: ArrayLike, gt: ArrayLike) -> None:
    for label, value in (("pred", pred), ("gt", gt)):
        dtype = value.dtype
        if dtype not in (np.bool_, torch.bool):
            raise TypeError(
                f"`{label}` must be a boolean mask, got dtype {dtype}. Threshold first, e.g. `probs > 0.5` for a "
                "prediction or `protocol_ground_truth(mask)` for a ground-truth file."
            )
    if tuple(pred.shape) != tuple(gt.shape):
        raise ValueError(f"`pred` and `gt` must have the same shape, got {tuple(pred.shape)} and {tuple(gt.shape)}.")


def _ratio(numerator: float, denominator: float) -> float:
    # The reference returns 0 (not 1, not NaN) for an empty denominator.
    return float(numerator) / float(denominator) if denominator > 0 else 0.0


def dice_iou(pred: ArrayLike, gt: ArrayLike) -> Tuple[float, float]:
    """DSC and IoU of one predicted mask against its ground truth.

    Args:
        pred (`np.ndarray` or `torch.Tensor` of bool): the predicted mask, any shape.
        gt (`np.ndarray` or `torch.Tensor` of bool): the ground-truth mask, same shape.

    Returns:
        `tuple(float, float)`: (DSC, IoU) = (2TP / (2TP + FP + FN), TP / (TP + FP + FN)), each 0.0 when its
        denominator is 0 (both masks empty).

    Example:
        >>> pred = np.array([[True, True], [False, False]]); gt = np.array([[True, False], [False, False]])
        >>> dice_iou(pred, gt)
        (0.6666666666666666, 0.5)
    """
    _check_masks(pred, gt)
    if isinstance(pred, torch.Tensor):
        pred = pred.detach().cpu().numpy()
    if isinstance(gt, torch.Tensor):
        gt = gt.detach().cpu().numpy()
    tp = int(np.count_nonzero(pred & gt))
    fp = int(np.count_nonzero(pred & ~gt))
    fn = int(np.count_nonzero(~pred & gt))
    return _ratio(2 * tp, 2 * tp + fp + fn), _ratio(tp, tp + fp + fn)


def dice_iou_batch(pred: torch.Tensor, gt: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-image DSC and IoU of a batch of masks, computed on the masks' device.

    Args:
        pred (`torch.Tensor` of bool): predicted masks (B, ...).
        gt (`torch.Tensor` of bool): ground-truth masks, same shape.

    Returns:
        `tuple(torch.Tensor, torch.Tensor)`: DSC and IoU, each (B,) float64, 0 where the denominator is 0.

    Example:
        >>> dsc, iou = dice_iou_batch(probs > 0.5, gt_masks)  # (B, 1, S, S) each
        >>> dsc.shape  # torch.Size([B])
    """
    _check_masks(pred, gt)
    if pred.ndim < 1:
        raise ValueError(f"Expected a batch of masks (B, ...), got a tensor of shape {tuple(pred.shape)}.")
    pred = pred.reshape(pred.shape[0], -1)
    gt = gt.reshape(gt.shape[0], -1)
    # Exact integer counts, then float64 ratios: no float32 rounding on large masks.
    tp = (pred & gt).sum(dim=1, dtype=torch.int64)
    fp = (pred & ~gt).sum(dim=1, dtype=torch.int64)
    fn = (~pred & gt).sum(dim=1, dtype=torch.int64)
    dice_den = (2 * tp + fp + fn).double()
    iou_den = (tp + fp + fn).double()
    dsc = torch.where(dice_den > 0, 2 * tp.double() / dice_den.clamp(min=1), torch.zeros_like(dice_den))
    iou = torch.where(iou_den > 0, tp.double() / iou_den.clamp(min=1), torch.zeros_like(iou_den))
    return dsc, iou


def protocol_ground_truth(mask: Union[Image.Image, np.ndarray], image_size: int = 224) -> np.ndarray:
    """Read a ground-truth mask the way the paper's evaluation does.

    The mask is taken as 8-bit grayscale, resized to `image_size` x `image_size` with PIL's NEAREST
    (== torch `mode="nearest-exact"`), divided by 255 and thresholded with `>= 0.5`.

    Args:
        mask (`PIL.Image.Image` or `np.ndarray`): the mask file's content; uint8 (H, W) with values 0/255,
            or any PIL image (converted to mode "L"), or a bool array (True -> 255).
        image_size (`int`, defaults to 224): the evaluation resolution.

    Returns:
        `np.ndarray` of bool, (image_size, image_size).

    Example:
        >>> gt = protocol_ground_truth(Image.open("benign_1_mask.png"))
        >>> gt.shape, gt.dtype  # ((224, 224), dtype('bool'))
    """
    if isinstance(mask, np.ndarray):
        if mask.dtype == np.bool_:
            mask = mask.astype(np.uint8) * 255
        if mask.ndim != 2 or mask.dtype != np.uint8:
            raise ValueError(
                f"Expected a uint8 (H, W) mask with values 0/255 (or a bool mask), got dtype {mask.dtype} and "
                f"shape {mask.shape}. Convert it with `Image.fromarray(...).convert('L')` first."
            )
        mask = Image.fromarray(mask, mode="L")
    elif isinstance(mask, Image.Image):
        mask = mask.convert("L")
    else:
        raise TypeError(f"Expected a PIL image or a numpy array, got {type(mask).__name__}.")
    resized = mask.resize((image_size, image_size), resample=Image.NEAREST)
    return (np.asarray(resized, dtype=np.float32) / 255.0) >= 0.5


def summarize(values: Sequence[float]) -> Dict[str, float]:
    """Mean and sample standard deviation (ddof 1) of per-image scores.

    With a single value the sample standard deviation is undefined; it is reported as 0.0 (not NaN, so
    that `metrics.json` stays valid JSON), and `n` says how many values there were.

    Args:
        values (`Sequence[float]`): per-image scores.

    Returns:
        `dict`: `{"mean": float, "std": float, "n": int}`.

    Example:
        >>> summarize([0.5, 1.0])
        {'mean': 0.75, 'std': 0.3535533905932738, 'n': 2}
    """
    array = np.asarray(list(values), dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"Expected a non-empty list of per-image scores, got {array.size} values.")
    std = float(np.std(array, ddof=1)) if array.size > 1 else 0.0
    mean = float(np.mean(array))
    if not (math.isfinite(mean) and math.isfinite(std)):
        raise ValueError("The per-image scores contain NaN or infinite values.")
    return {"mean": mean, "std": std, "n": int(array.size)}


def summarize_scores(dsc: Sequence[float], iou: Sequence[float]) -> Dict[str, float]:
    """The paper's summary of per-image DSC and IoU lists.

    Args:
        dsc (`Sequence[float]`): per-image DSC.
        iou (`Sequence[float]`): per-image IoU, same length.

    Returns:
        `dict`: `{"dsc_mean", "dsc_std", "iou_mean", "iou_std", "n"}` (std with ddof 1; 0.0 when n is 1).

    Example:
        >>> summarize_scores([1.0, 0.5], [1.0, 1 / 3])["dsc_mean"]
        0.75
    """
    if len(dsc) != len(iou):
        raise ValueError(f"Expected as many DSC as IoU values, got {len(dsc)} and {len(iou)}.")
    d, i = summarize(dsc), summarize(iou)
    return {"dsc_mean": d["mean"], "dsc_std": d["std"], "iou_mean": i["mean"], "iou_std": i["std"], "n": d["n"]}


def per_class_dice_iou(pred: ArrayLike, gt: ArrayLike, num_classes: int) -> Tuple[ArrayLike, ArrayLike]:
    """Per-image, per-foreground-class DSC and IoU of label maps.

    For class k (1..K) of image b the masks are `pred[b] == k` and `gt[b] == k`, scored as in [`dice_iou`].
    A class absent from both the prediction and the ground truth of an image has no score: NaN (left out of
    that class's mean with `np.nanmean`), unlike the binary protocol's 0.

    Args:
        pred (`torch.Tensor` or `np.ndarray`): predicted label maps (B, H, W), integers 0..K (0 = background).
        gt (`torch.Tensor` or `np.ndarray`): ground-truth label maps, same shape.
        num_classes (`int`): K, the number of foreground classes.

    Returns:
        `tuple`: (dsc, iou), each (B, K) float64 (column k - 1 is class k), NaN where the class is absent from
        both; torch tensors on `pred`'s device for tensor inputs, numpy arrays otherwise.

    Example:
        >>> pred = np.array([[[1, 1], [0, 2]]]); gt = np.array([[[1, 0], [0, 0]]])
        >>> per_class_dice_iou(pred, gt, num_classes=3)[0]
        array([[0.66666667, 0.        ,        nan]])
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1 (foreground classes), got {num_classes!r}.")
    as_numpy = not isinstance(pred, torch.Tensor)
    pred_t = torch.as_tensor(np.asarray(pred)) if as_numpy else pred
    gt_t = torch.as_tensor(np.asarray(gt)) if not isinstance(gt, torch.Tensor) else gt
    for label, value in (("pred", pred_t), ("gt", gt_t)):
        if value.is_floating_point() or value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"`{label}` must hold integer class indices 0..{num_classes}, got dtype {value.dtype}.")
        if value.ndim != 3:
            raise ValueError(f"`{label}` must be label maps of shape (B, H, W), got shape {tuple(value.shape)}.")
    if tuple(pred_t.shape) != tuple(gt_t.shape):
        raise ValueError(f"`pred` and `gt` must have the same shape, got {tuple(pred_t.shape)} and {tuple(gt_t.shape)}.")
    gt_t = gt_t.to(pred_t.device)
    classes = torch.arange(1, num_classes + 1, device=pred_t.device).view(1, -1, 1)  # (1, K, 1)
    p = pred_t.reshape(pred_t.shape[0], 1, -1) == classes  # (B, K, HW)
    g = gt_t.reshape(gt_t.shape[0], 1, -1) == classes  # (B, K, HW)
    tp = (p & g).sum(dim=2, dtype=torch.int64)  # (B, K)
    fp = (p & ~g).sum(dim=2, dtype=torch.int64)
    fn = (~p & g).sum(dim=2, dtype=torch.int64)
    union = (tp + fp + fn).double()  # 0 exactly when the class is in neither map
    nan = torch.full_like(union, float("nan"))
    dsc = torch.where(union > 0, 2 * tp.double() / (2 * tp + fp + fn).double().clamp(min=1), nan)
    iou = torch.where(union > 0, tp.double() / union.clamp(min=1), nan)
    return (dsc.cpu().numpy(), iou.cpu().numpy()) if as_numpy else (dsc, iou)
