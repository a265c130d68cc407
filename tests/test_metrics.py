"""The paper's evaluation protocol, checked against hand-computed values on crafted masks."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gms_hub.evaluation.metrics import dice_iou, dice_iou_batch, protocol_ground_truth, summarize, summarize_scores


def _mask(rows):
    return np.array(rows, dtype=bool)


def test_dice_iou_partial_overlap_matches_hand_count():
    pred = _mask([[1, 1, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]])  # 4 pixels
    gt = _mask([[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 1]])  # 5 pixels
    # TP = 3, FP = 1, FN = 2 -> DSC = 6 / 9, IoU = 3 / 6
    dsc, iou = dice_iou(pred, gt)
    assert dsc == pytest.approx(6 / 9)
    assert iou == pytest.approx(3 / 6)


@pytest.mark.parametrize(
    "pred_on, gt_on, expected",
    [
        (False, False, (0.0, 0.0)),  # both empty: 0 by the reference's convention, not 1
        (False, True, (0.0, 0.0)),  # empty prediction
        (True, False, (0.0, 0.0)),  # empty ground truth
        (True, True, (1.0, 1.0)),
    ],
)
def test_dice_iou_empty_masks(pred_on, gt_on, expected):
    pred = np.zeros((5, 5), dtype=bool)
    gt = np.zeros((5, 5), dtype=bool)
    pred[1:3, 1:3] = pred_on
    gt[1:3, 1:3] = gt_on
    assert dice_iou(pred, gt) == expected
    dsc, iou = dice_iou_batch(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None])
    assert (dsc.item(), iou.item()) == expected


def test_dice_iou_batch_equals_per_image():
    rng = np.random.default_rng(0)
    pred = rng.random((6, 1, 9, 7)) > 0.5
    gt = rng.random((6, 1, 9, 7)) > 0.6
    gt[2] = False
    pred[2] = False
    dsc, iou = dice_iou_batch(torch.from_numpy(pred), torch.from_numpy(gt))
    assert dsc.dtype == torch.float64 and dsc.shape == (6,)
    for i in range(6):
        assert (dsc[i].item(), iou[i].item()) == pytest.approx(dice_iou(pred[i], gt[i]))


def test_dice_iou_rejects_probabilities_and_shape_mismatch():
    with pytest.raises(TypeError, match="boolean"):
        dice_iou(np.full((4, 4), 0.7), np.ones((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="same shape"):
        dice_iou(np.ones((4, 4), dtype=bool), np.ones((4, 5), dtype=bool))


def test_summarize_uses_sample_std():
    values = [0.2, 0.4, 0.9]
    mean = sum(values) / 3
    std = (sum((v - mean) ** 2 for v in values) / 2) ** 0.5  # ddof 1
    result = summarize(values)
    assert result["mean"] == pytest.approx(mean)
    assert result["std"] == pytest.approx(std)
    assert result["n"] == 3


def test_summarize_single_value_reports_zero_std_and_empty_raises():
    assert summarize([0.7]) == {"mean": 0.7, "std": 0.0, "n": 1}
    with pytest.raises(ValueError, match="non-empty"):
        summarize([])


def test_summarize_scores_keys_and_values():
    result = summarize_scores([1.0, 0.5], [1.0, 1 / 3])
    assert set(result) == {"dsc_mean", "dsc_std", "iou_mean", "iou_std", "n"}
    assert result["dsc_mean"] == pytest.approx(0.75)
    assert result["dsc_std"] == pytest.approx(np.std([1.0, 0.5], ddof=1))
    assert result["iou_mean"] == pytest.approx(2 / 3)
    assert result["n"] == 2


def test_protocol_ground_truth_is_pil_nearest_and_threshold_half():
    rng = np.random.default_rng(1)
    mask = (rng.random((37, 53)) > 0.5).astype(np.uint8) * 255
    gt = protocol_ground_truth(mask, image_size=32)
    # PIL NEAREST == torch nearest-exact (not torch "nearest", OpenCV's rule)
    exact = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=(32, 32), mode="nearest-exact")[0, 0]
    legacy = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=(32, 32), mode="nearest")[0, 0]
    assert gt.dtype == np.bool_ and gt.shape == (32, 32)
    np.testing.assert_array_equal(gt, exact.numpy() / 255.0 >= 0.5)
    assert not np.array_equal(gt, legacy.numpy() / 255.0 >= 0.5)  # the two rules really differ here


def test_protocol_ground_truth_threshold_on_gray_levels():
    mask = np.array([[0, 127], [128, 255]], dtype=np.uint8)  # 127/255 < 0.5 <= 128/255
    np.testing.assert_array_equal(protocol_ground_truth(Image.fromarray(mask), image_size=2), [[False, False], [True, True]])
    rgb = Image.fromarray(np.stack([mask] * 3, axis=-1))  # RGB files are read as 8-bit gray
    np.testing.assert_array_equal(protocol_ground_truth(rgb, image_size=2), [[False, False], [True, True]])


def test_per_class_dice_iou_hand_counts_and_absent_classes():
    from gms_hub.evaluation.metrics import per_class_dice_iou

    pred = np.array([[[1, 1, 0], [2, 2, 0]], [[0, 0, 0], [0, 0, 3]]])  # (2, 2, 3)
    gt = np.array([[[1, 0, 0], [2, 2, 2]], [[0, 0, 0], [0, 0, 0]]])
    dsc, iou = per_class_dice_iou(pred, gt, num_classes=3)
    # image 0: class 1 TP 1 FP 1 -> 2/3, 1/2; class 2 TP 2 FN 1 -> 4/5, 2/3; class 3 nowhere -> NaN
    # image 1: classes 1 and 2 nowhere -> NaN; class 3 predicted only -> 0, 0
    np.testing.assert_allclose(dsc, [[2 / 3, 4 / 5, np.nan], [np.nan, np.nan, 0.0]])
    np.testing.assert_allclose(iou, [[1 / 2, 2 / 3, np.nan], [np.nan, np.nan, 0.0]])
    t_dsc, _ = per_class_dice_iou(torch.from_numpy(pred), torch.from_numpy(gt), 3)
    assert isinstance(t_dsc, torch.Tensor) and t_dsc.dtype == torch.float64
    np.testing.assert_allclose(t_dsc.numpy(), dsc)
    with pytest.raises(TypeError, match="integer class indices"):
        per_class_dice_iou(pred.astype(np.float32), gt, 3)
