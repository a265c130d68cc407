"""Calibration, uncertainty and multi-class scores of the evaluation, against direct numpy computations.

The binary checks run a tiny random GMS (32 px) on a few synthetic images and recompute every number from the
model's own probabilities with plain numpy (ECE, Brier, exact pixel-level AUROC, Spearman). The multi-class
checks use a stand-in whose class probabilities are read from the image, so each crafted image is its predicted
label map and every score is counted by hand.
"""

import csv
import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from gms_hub.evaluation.protocol import EvaluationStats, evaluate_dataset
from gms_hub.evaluation.report import evaluate_to_folder
from tests._training_utils import EVALUATE_SCRIPT, make_tiny_gms, subprocess_env

SIZE = 32


# ------------------------------------------------------------------------------------------ direct numpy


def _direct_ece(p, y, bins=15):
    index = np.minimum((p * bins).astype(int), bins - 1)
    return sum(
        np.count_nonzero(index == b) / p.size * abs(y[index == b].mean() - p[index == b].mean())
        for b in range(bins) if np.any(index == b)
    )


def _exact_auroc(u, errors):
    wrong, right = u[errors], np.sort(u[~errors])
    below = np.searchsorted(right, wrong, side="left")
    ties = np.searchsorted(right, wrong, side="right") - below
    return float(np.sum(below + 0.5 * ties) / (wrong.size * right.size))


def _binary_entropy(p):
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log(p), 0.0) + np.where(p < 1, (1 - p) * np.log(1 - p), 0.0))
    return h / np.log(2.0)


def _pearson_of_ranks(x, y):
    assert len(set(x)) == len(x) and len(set(y)) == len(y), "the direct Spearman below assumes no ties"
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def _model_probabilities(model, dataset):
    """The model's probabilities and protocol ground truth over the split, straight from the forward pass."""
    from gms_hub.data import EvalTransform

    examples = [dataset.with_transform(EvalTransform(model.image_size))[i] for i in range(len(dataset))]
    pixel_values = torch.stack([e["pixel_values"] for e in examples])  # (N, 3, S, S)
    with torch.no_grad():
        probs = model(pixel_values).mask_probs.double().numpy()[:, 0]  # (N, S, S)
    gt = torch.stack([e["masks"] for e in examples]).numpy()[:, 0] > 0.5  # (N, S, S)
    return probs, gt


@pytest.fixture(scope="module")
def synthetic_test_split():
    from gms_hub.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(num_train=0, num_validation=0, num_test=6, seed=5, image_size=48)["test"]


@pytest.fixture(scope="module")
def tiny_model():
    return make_tiny_gms(SIZE).eval()


# ------------------------------------------------------------------------------------------ binary


def test_calibration_metrics_equal_a_direct_computation(tmp_path, tiny_model, synthetic_test_split):
    metrics = evaluate_to_folder(tiny_model, synthetic_test_split, tmp_path / "eval", batch_size=4, progress=False)
    p, y = _model_probabilities(tiny_model, synthetic_test_split)
    errors = (p > 0.5) != y
    u = _binary_entropy(p)

    assert metrics["ece"] == pytest.approx(_direct_ece(p.ravel(), y.ravel()), abs=1e-6)
    assert metrics["brier"] == pytest.approx(float(np.mean((p - y) ** 2)), abs=1e-6)
    exact = _exact_auroc(u.ravel(), errors.ravel())
    assert 0 < metrics["error_auroc_max_error"] < 0.05
    assert abs(metrics["error_auroc"] - exact) <= metrics["error_auroc_max_error"] + 1e-9
    tp = np.sum((p > 0.5) & y, axis=(1, 2))
    dsc = 2 * tp / (np.sum(p > 0.5, axis=(1, 2)) + np.sum(y, axis=(1, 2)))
    mean_u = u.mean(axis=(1, 2))
    assert metrics["uncertainty_dsc_spearman"] == pytest.approx(_pearson_of_ranks(mean_u, dsc), abs=1e-9)
    assert metrics["num_samples"] == 0 and metrics["tta"] is False and metrics["passes_per_image"] == 1
    assert "15 equal-width bins" in metrics["calibration_protocol"]

    with open(tmp_path / "eval" / "per_image.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["name", "dsc", "iou", "dsc_original", "iou_original", "mean_uncertainty"]
    assert [float(r["mean_uncertainty"]) for r in rows] == pytest.approx(mean_u, abs=1e-6)
    assert [float(r["dsc"]) for r in rows] == pytest.approx(dsc, abs=1e-6)


def test_reliability_diagram_is_written_as_png(tmp_path, tiny_model, synthetic_test_split):
    evaluate_to_folder(tiny_model, synthetic_test_split.select(range(2)), tmp_path, progress=False, write_masks=False)
    with Image.open(tmp_path / "reliability.png") as picture:
        assert picture.format == "PNG" and min(picture.size) > 100


def test_shard_statistics_sum_to_those_of_the_whole_split(tiny_model, synthetic_test_split):
    """What happens under accelerate launch: each process's accumulators, merged, equal one pass over the split."""
    _, whole = evaluate_dataset(tiny_model, synthetic_test_split, return_stats=True)
    merged = EvaluationStats()
    for part in (range(0, 6, 2), range(1, 6, 2)):
        merged.merge(evaluate_dataset(tiny_model, synthetic_test_split.select(part), return_stats=True)[1])
    np.testing.assert_array_equal(merged.calibration.counts, whole.calibration.counts)
    np.testing.assert_array_equal(merged.error_auroc.wrong, whole.error_auroc.wrong)
    np.testing.assert_array_equal(merged.error_auroc.right, whole.error_auroc.right)
    # The shards run batches of another size, and convolutions round differently per batch size (~1e-7 in a
    # probability), so the per-bin sums agree to float32 rounding, not bit for bit.
    assert merged.calibration.ece() == pytest.approx(whole.calibration.ece(), abs=1e-6)
    assert merged.images == whole.images == 6


def test_script_evaluates_samples_and_tta(tmp_path, tiny_model, synthetic_test_split):
    """`--num_samples 2 --tta --seed 0` through train/evaluate.py equals predict_probabilities with that seed."""
    import subprocess

    from gms_hub.evaluation.calibration import expected_calibration_error
    from gms_hub.data import EvalTransform, write_dataset_folder
    from gms_hub.inference.uncertainty import predict_probabilities

    split = synthetic_test_split.select(range(3))
    write_dataset_folder({"test": split}, tmp_path / "data", card={"pretty_name": "tiny", "license": "apache-2.0"})
    tiny_model.save_pretrained(tmp_path / "model", include_vae=True)
    output_dir = tmp_path / "eval"
    command = [sys.executable, str(EVALUATE_SCRIPT), "--model", str(tmp_path / "model"), "--dataset",
               str(tmp_path / "data"), "--output_dir", str(output_dir), "--num_samples", "2", "--tta", "--seed", "0",
               "--batch_size", "4"]
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert (metrics["num_samples"], metrics["tta"], metrics["seed"], metrics["passes_per_image"]) == (2, True, 0, 16)

    examples = [split.with_transform(EvalTransform(SIZE))[i] for i in range(len(split))]
    pixel_values = torch.stack([e["pixel_values"] for e in examples])  # (3, 3, S, S)
    gt = torch.stack([e["masks"] for e in examples]) > 0.5  # (3, 1, S, S)
    probs = predict_probabilities(tiny_model, pixel_values, num_samples=2, tta=True,
                                  generator=torch.Generator().manual_seed(0), batch_size=4).float()
    single = tiny_model(pixel_values).mask_probs.detach()
    assert not torch.allclose(probs, single, atol=1e-4)  # the averaged prediction differs from the single pass
    assert metrics["ece"] == pytest.approx(expected_calibration_error(probs, gt), abs=1e-5)
    assert metrics["brier"] == pytest.approx(float(((probs.double() - gt.double()) ** 2).mean()), abs=1e-6)
    assert (output_dir / "reliability.png").is_file()


# ------------------------------------------------------------------------------------------ multi-class

LABELS = {0: "background", 1: "benign", 2: "malignant"}


class LabelMapIsThePrediction(nn.Module):
    """Class probabilities read from the image: gray level 100 * k means class k (0.8 there, 0.1 elsewhere)."""

    def __init__(self):
        super().__init__()
        self.image_size, self.threshold, self.num_classes, self.id2label = SIZE, 0.5, 2, dict(LABELS)
        self.anchor = nn.Parameter(torch.zeros(()))

    @property
    def device(self):
        return self.anchor.device

    @property
    def dtype(self):
        return self.anchor.dtype

    def forward(self, pixel_values):
        gray = (pixel_values.mean(dim=1) + 1) / 2 * 255  # (B, S, S)
        labels = torch.round(gray / 100).clamp(0, self.num_classes).long()  # (B, S, S)
        one_hot = torch.nn.functional.one_hot(labels, self.num_classes + 1).permute(0, 3, 1, 2).float()
        return SimpleNamespace(mask_probs=0.1 + 0.7 * one_hot)  # (B, K+1, S, S), sums to 1


def _labels(*boxes):
    labels = np.zeros((SIZE, SIZE), np.uint8)
    for k, (r0, r1, c0, c1) in boxes:
        labels[r0:r1, c0:c1] = k
    return labels


# name -> (predicted label map, ground truth)
MULTICLASS_CASES = {
    # benign: TP 32, FP 32, FN 32 -> DSC 1/2, IoU 1/3; malignant in neither map -> absent
    "half_benign": (_labels((1, (0, 8, 0, 8))), _labels((1, (4, 12, 0, 8)))),
    # benign exact -> 1, 1; malignant predicted (100 px) but not in the ground truth -> 0, 0
    "false_malignant": (_labels((1, (0, 4, 0, 8)), (2, (10, 20, 10, 20))), _labels((1, (0, 4, 0, 8)))),
    # nothing anywhere: both classes absent, no image score
    "empty": (_labels(), _labels()),
}


def _multiclass_dataset():
    import datasets

    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image(), "name": datasets.Value("string")})
    columns = {"image": [], "mask": [], "name": []}
    for name, (pred, gt) in MULTICLASS_CASES.items():
        columns["image"].append(Image.fromarray(pred * 100, mode="L"))
        columns["mask"].append(Image.fromarray(gt, mode="L"))
        columns["name"].append(name)
    return datasets.Dataset.from_dict(columns, features=features)


def test_multiclass_per_class_block_equals_hand_counts(tmp_path):
    metrics = evaluate_to_folder(LabelMapIsThePrediction(), _multiclass_dataset(), tmp_path, progress=False)
    benign, malignant = metrics["per_class"]["benign"], metrics["per_class"]["malignant"]
    assert set(metrics["per_class"]) == {"benign", "malignant"}
    assert (benign["n"], benign["n_absent"], malignant["n"], malignant["n_absent"]) == (2, 1, 1, 2)
    assert benign["dsc_mean"] == pytest.approx(0.75) and benign["dsc_std"] == pytest.approx(0.125**0.5)
    assert benign["iou_mean"] == pytest.approx(2 / 3) and benign["iou_std"] == pytest.approx((2 / 9) ** 0.5)
    assert (malignant["dsc_mean"], malignant["iou_mean"], malignant["dsc_std"]) == (0.0, 0.0, 0.0)
    assert metrics["dsc_mean"] == pytest.approx(0.375) and metrics["iou_mean"] == pytest.approx(1 / 3)
    assert metrics["num_classes"] == 2 and "arg-max" in metrics["protocol"]
    assert metrics["original_resolution"]["dsc_mean"] == pytest.approx(0.5)  # image means 1/2 and 1/2

    # one-vs-rest calibration: foreground probability 1 - p(background) is 0.9 on predicted structure, 0.2 elsewhere
    pred = np.stack([p for p, _ in MULTICLASS_CASES.values()])
    gt = np.stack([g for _, g in MULTICLASS_CASES.values()])
    p_fg, y_fg = np.where(pred > 0, 0.9, 0.2), gt > 0
    assert metrics["ece"] == pytest.approx(_direct_ece(p_fg.ravel(), y_fg.ravel()), abs=1e-6)
    assert metrics["brier"] == pytest.approx(float(np.mean((p_fg - y_fg) ** 2)), abs=1e-6)
    # the same (0.8, 0.1, 0.1) distribution everywhere: uncertainty is constant, so the AUROC is exactly 1/2
    assert metrics["error_auroc"] == pytest.approx(0.5)
    for name, (predicted, _) in MULTICLASS_CASES.items():
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "masks" / f"{name}.png")), predicted)


def test_multiclass_csv_marks_absent_classes(tmp_path):
    evaluate_to_folder(LabelMapIsThePrediction(), _multiclass_dataset(), tmp_path, progress=False, write_masks=False)
    with open(tmp_path / "per_image.csv") as handle:
        rows = {row["name"]: row for row in csv.DictReader(handle)}
    assert list(rows["empty"]) == ["name", "dsc", "iou", "dsc_original", "iou_original", "dsc_benign", "iou_benign",
                                   "dsc_malignant", "iou_malignant", "mean_uncertainty"]
    assert (rows["half_benign"]["dsc_benign"], rows["half_benign"]["iou_benign"]) == ("0.500000", "0.333333")
    assert rows["half_benign"]["dsc_malignant"] == rows["half_benign"]["iou_malignant"] == "absent"
    assert (rows["false_malignant"]["dsc_malignant"], rows["false_malignant"]["dsc"]) == ("0.000000", "0.500000")
    assert rows["empty"]["dsc_benign"] == rows["empty"]["dsc_malignant"] == rows["empty"]["dsc"] == "absent"


def test_multiclass_mask_with_unknown_class_is_an_error():
    import datasets

    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image(), "name": datasets.Value("string")})
    dataset = datasets.Dataset.from_dict({"image": [Image.fromarray(_labels())], "mask": [Image.fromarray(_labels() + 255)],
                                          "name": ["binary_mask"]}, features=features)
    with pytest.raises(ValueError, match=r"holds values \[255\].*0\.\.2"):
        evaluate_dataset(LabelMapIsThePrediction(), dataset)
