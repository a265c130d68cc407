"""`per_class_dice_iou`: per-image, per-class DSC / IoU of label maps, NaN for a class absent from both."""

import math

import numpy as np
import pytest
import torch

from gms_hub.evaluation.metrics import dice_iou, per_class_dice_iou


def test_per_class_matches_binary_dice_of_each_class():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 3, size=(4, 9, 7))
    gt = rng.integers(0, 3, size=(4, 9, 7))
    dsc, iou = per_class_dice_iou(pred, gt, num_classes=2)
    assert dsc.shape == iou.shape == (4, 2)
    for b in range(4):
        for k in (1, 2):
            expected = dice_iou(pred[b] == k, gt[b] == k)
            assert dsc[b, k - 1] == pytest.approx(expected[0])
            assert iou[b, k - 1] == pytest.approx(expected[1])


def test_class_absent_from_both_is_nan_and_missed_class_is_zero():
    pred = torch.tensor([[[1, 1], [0, 0]]])
    gt = torch.tensor([[[1, 0], [3, 0]]])
    dsc, iou = per_class_dice_iou(pred, gt, num_classes=3)
    assert isinstance(dsc, torch.Tensor)
    assert dsc[0, 0].item() == pytest.approx(2 / 3) and iou[0, 0].item() == pytest.approx(0.5)
    assert math.isnan(dsc[0, 1].item()) and math.isnan(iou[0, 1].item())  # class 2 in neither
    assert dsc[0, 2].item() == 0.0 and iou[0, 2].item() == 0.0  # class 3 missed


def test_rejects_float_and_mismatched_label_maps():
    with pytest.raises(TypeError, match="integer class indices"):
        per_class_dice_iou(np.zeros((1, 2, 2)), np.zeros((1, 2, 2), dtype=int), 2)
    with pytest.raises(ValueError, match="same shape"):
        per_class_dice_iou(np.zeros((1, 2, 2), dtype=int), np.zeros((1, 2, 3), dtype=int), 2)
