"""Slice-to-slice consistency (gms_hub/evaluation/consistency.py) on hand-made label maps, checked against DSC
values worked out by hand."""

import math

import numpy as np
import pytest

from gms_hub.evaluation.consistency import adjacent_slice_dice, adjacent_slice_pairs, slice_consistency


def test_pairs_are_adjacent_slices_of_one_volume_within_the_names():
    names = ["v_axial_012", "v_axial_010", "v_axial_011", "v_axial_020", "w_slice0", "w_slice1", "x_slice1",
             "x_slice3", "us_7"]
    assert adjacent_slice_pairs(names) == [
        ("v_axial_010", "v_axial_011"), ("v_axial_011", "v_axial_012"),  # 12 -> 20 is a gap between slabs
        ("w_slice0", "w_slice1"),  # x_slice1 and x_slice3 are not adjacent; us_7 is no slice
    ]


def test_adjacent_dice_per_class_by_hand():
    a = np.array([[1, 1, 2, 0]])  # class 1: 2 px, class 2: 1 px
    b = np.array([[1, 0, 2, 2]])  # class 1: 1 px (overlap 1), class 2: 2 px (overlap 1)
    c = np.array([[0, 0, 0, 0]])
    dsc = adjacent_slice_dice({"v_slice0": a, "v_slice1": b, "v_slice2": c},
                              [("v_slice0", "v_slice1"), ("v_slice1", "v_slice2")], num_classes=3)
    expected = np.array([[2 * 1 / 3, 2 * 1 / 3, np.nan], [0.0, 0.0, np.nan]])  # class 3 in no slice: NaN
    np.testing.assert_allclose(dsc, expected)


def test_consistency_compares_the_predictions_with_the_labels_own_adjacent_dice():
    full, half, empty = np.ones((2, 4), int), np.zeros((2, 4), int), np.zeros((2, 4), int)
    half[0] = 1  # 4 px of the 8
    labels = {"v_slice0": full, "v_slice1": half, "v_slice2": half}  # label DSC: 2*4/(8+4) = 2/3, then 1
    predictions = {"v_slice0": full, "v_slice1": full, "v_slice2": empty}  # predicted DSC: 1, then 0
    result = slice_consistency(predictions, labels, ["tissue"])["tissue"]
    assert result["pairs"] == 2
    assert result["predicted"] == pytest.approx(0.5)
    assert result["label"] == pytest.approx((2 / 3 + 1) / 2)
    assert result["abs_difference"] == pytest.approx((abs(1 - 2 / 3) + abs(0 - 1)) / 2)


def test_a_class_in_neither_slice_is_left_out_and_names_must_match():
    labels = {"v_slice0": np.zeros((2, 2), int), "v_slice1": np.zeros((2, 2), int)}
    result = slice_consistency(dict(labels), labels, ["tissue"])["tissue"]
    assert result["pairs"] == 0 and math.isnan(result["predicted"]) and math.isnan(result["label"])
    with pytest.raises(ValueError, match="same slices"):
        slice_consistency({"v_slice0": labels["v_slice0"]}, labels, ["tissue"])
