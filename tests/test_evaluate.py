"""The evaluation core and train/evaluate.py against hand-computed scores on crafted masks.

The model is a stand-in whose prediction is the image itself (probability = gray level), so each crafted
image *is* the predicted mask and every score can be counted by hand.
"""

import csv
import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from gms_hub.evaluation.protocol import check_dataset_classes, evaluate_dataset, summarize_records
from gms_hub.evaluation.metrics import dice_iou
from tests._training_utils import EVALUATE_SCRIPT, subprocess_env

SIZE = 32


class ImageIsThePrediction(nn.Module):
    """Mask probability = the image's mean channel mapped to [0, 1]."""

    def __init__(self, image_size=SIZE):
        super().__init__()
        self.image_size = image_size
        self.threshold = 0.5
        self.anchor = nn.Parameter(torch.zeros(()))

    @property
    def device(self):
        return self.anchor.device

    @property
    def dtype(self):
        return self.anchor.dtype

    def forward(self, pixel_values):
        return SimpleNamespace(mask_probs=(pixel_values.mean(dim=1, keepdim=True) + 1) / 2)  # (B, 1, S, S)


def _box(size, rows, cols):
    mask = np.zeros(size, dtype=bool)
    if rows is not None:
        mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    return mask


# name -> (predicted mask, ground truth, hand-computed (DSC, IoU) at 32x32)
CASES = {
    # TP = 32, FP = 32, FN = 32
    "overlap": (_box((32, 32), (4, 12), (4, 12)), _box((32, 32), (8, 16), (4, 12)), (0.5, 1 / 3)),
    "both_empty": (_box((32, 32), None, None), _box((32, 32), None, None), (0.0, 0.0)),
    "empty_prediction": (_box((32, 32), None, None), _box((32, 32), (3, 9), (3, 9)), (0.0, 0.0)),
    "empty_ground_truth": (_box((32, 32), (3, 9), (3, 9)), _box((32, 32), None, None), (0.0, 0.0)),
    # 64x64 with 2x2-aligned edges: bilinear and PIL-nearest halving keep it exact -> a perfect match
    "perfect_64px": (_box((64, 64), (10, 30), (20, 44)), _box((64, 64), (10, 30), (20, 44)), (1.0, 1.0)),
}
HAND_DSC = [0.5, 0.0, 0.0, 0.0, 1.0]
HAND_IOU = [1 / 3, 0.0, 0.0, 0.0, 1.0]


def _crafted_dataset():
    import datasets

    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image(), "name": datasets.Value("string")})
    columns = {"image": [], "mask": [], "name": []}
    for name, (pred, gt, _) in CASES.items():
        columns["image"].append(Image.fromarray(pred.astype(np.uint8) * 255, mode="L"))
        columns["mask"].append(Image.fromarray(gt.astype(np.uint8) * 255, mode="L"))
        columns["name"].append(name)
    return datasets.Dataset.from_dict(columns, features=features)


def test_per_image_scores_equal_hand_counts():
    records = evaluate_dataset(ImageIsThePrediction(), _crafted_dataset(), batch_size=2)
    assert [r["name"] for r in records] == list(CASES)
    for record, (_, _, expected) in zip(records, CASES.values()):
        assert (record["dsc"], record["iou"]) == pytest.approx(expected), record["name"]
        # same sizes (or exact 2x) and binary predictions: the original-resolution scores agree here
        assert (record["dsc_original"], record["iou_original"]) == pytest.approx(expected), record["name"]


def test_summary_is_mean_and_sample_std_of_hand_counts():
    summary = summarize_records(evaluate_dataset(ImageIsThePrediction(), _crafted_dataset(), batch_size=3))
    assert summary["n"] == 5
    assert summary["dsc_mean"] == pytest.approx(0.3)
    assert summary["dsc_std"] == pytest.approx(0.2**0.5)  # squares of deviations sum to 0.8, / (n - 1)
    assert summary["iou_mean"] == pytest.approx(4 / 15)
    assert summary["iou_std"] == pytest.approx((170 / 900) ** 0.5)


def test_original_resolution_scores_resize_probabilities_not_masks():
    """A 40x24 image: the protocol scores at 32x32, the original-resolution score at 40x24."""
    import datasets

    rng = np.random.default_rng(0)
    image = (rng.random((40, 24)) > 0.5).astype(np.uint8) * 255
    gt = (rng.random((40, 24)) > 0.4).astype(np.uint8) * 255
    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image(), "name": datasets.Value("string")})
    dataset = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(image)], "mask": [Image.fromarray(gt)], "name": ["odd"]}, features=features
    )
    (record,) = evaluate_dataset(ImageIsThePrediction(), dataset)

    x = torch.from_numpy(image / 255.0).float()[None, None]
    probs = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=False)  # the model input
    gt_small = F.interpolate(torch.from_numpy(gt).float()[None, None], size=(SIZE, SIZE), mode="nearest-exact") / 255 >= 0.5
    assert (record["dsc"], record["iou"]) == pytest.approx(dice_iou((probs > 0.5)[0, 0].numpy(), gt_small[0, 0].numpy()))
    full = F.interpolate(probs, size=(40, 24), mode="bilinear", align_corners=False)[0, 0] > 0.5
    expected_original = dice_iou(full.numpy(), gt >= 128)
    assert (record["dsc_original"], record["iou_original"]) == pytest.approx(expected_original)
    assert expected_original != pytest.approx((record["dsc"], record["iou"]))  # the two really differ here


def test_evaluate_to_folder_writes_metrics_csv_and_masks(tmp_path):
    """What train/evaluate.py writes (the script itself runs on a trained model in tests/test_train.py)."""
    from gms_hub.data import load_gms_dataset, write_dataset_folder
    from gms_hub.evaluation.report import evaluate_to_folder

    dataset_dir = tmp_path / "crafted"
    write_dataset_folder({"test": _crafted_dataset()}, dataset_dir, card={"pretty_name": "crafted", "license": "apache-2.0"})
    output_dir = tmp_path / "eval"
    returned = evaluate_to_folder(ImageIsThePrediction(), load_gms_dataset(str(dataset_dir), split="test"), output_dir,
                                  batch_size=4, progress=False, info={"split": "test"})

    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics == returned
    assert metrics["n"] == 5 and metrics["split"] == "test" and metrics["image_size"] == SIZE
    assert metrics["dsc_mean"] == pytest.approx(0.3) and metrics["iou_mean"] == pytest.approx(4 / 15)
    assert metrics["dsc_std"] == pytest.approx(0.2**0.5)
    assert metrics["original_resolution"]["dsc_mean"] == pytest.approx(0.3)
    assert "PIL NEAREST" in metrics["protocol"]

    with open(output_dir / "per_image.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["name"] for row in rows] == list(CASES)
    assert [float(row["dsc"]) for row in rows] == pytest.approx(HAND_DSC, abs=1e-6)
    assert [float(row["iou"]) for row in rows] == pytest.approx(HAND_IOU, abs=1e-6)

    for name, (pred, _, _) in CASES.items():
        written = np.asarray(Image.open(output_dir / "masks" / f"{name}.png"))
        expected = pred if pred.shape == (SIZE, SIZE) else pred[::2, ::2]
        np.testing.assert_array_equal(written, expected.astype(np.uint8) * 255)


def test_evaluate_script_loads_a_pth_with_the_vae_size_and_threshold_flags(tmp_path, tiny_vae_dir):
    """train/evaluate.py --model <.pth> --vae ... --image_size ... --threshold ...: the model gms_hub.load_model builds
    from the same arguments, run as a user runs the script."""
    from _reference_lmm import random_reference_state_dict, reference_key_shapes
    from gms_hub import load_model
    from gms_hub.data import load_gms_dataset, write_dataset_folder

    checkpoint = tmp_path / "best_model.pth"
    torch.save({"model": random_reference_state_dict(reference_key_shapes())}, str(checkpoint))
    dataset_dir = tmp_path / "crafted"
    write_dataset_folder({"test": _crafted_dataset()}, dataset_dir, card={"pretty_name": "crafted", "license": "apache-2.0"})
    command = [sys.executable, str(EVALUATE_SCRIPT), "--model", str(checkpoint), "--dataset", str(dataset_dir),
               "--output_dir", str(tmp_path / "eval"), "--vae", str(tiny_vae_dir), "--vae_subfolder", "none",
               "--image_size", "64", "--threshold", "0.4", "--no_masks"]
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["image_size"] == 64 and metrics["threshold"] == 0.4 and metrics["n"] == len(CASES)
    model = load_model(str(checkpoint), vae=str(tiny_vae_dir), vae_subfolder=None, image_size=64, threshold=0.4)
    expected = evaluate_dataset(model, load_gms_dataset(str(dataset_dir), split="test"), batch_size=8)
    with open(tmp_path / "eval" / "per_image.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(row["mean_uncertainty"]) for row in rows] == pytest.approx(
        [record["mean_uncertainty"] for record in expected], abs=2e-6
    )  # same weights, VAE and input size
    assert [float(row["dsc"]) for row in rows] == pytest.approx([record["dsc"] for record in expected], abs=2e-6)

    result = subprocess.run(command + ["--model_revision", "v1"], env=subprocess_env(), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode != 0 and "applies to Hub repo ids only" in result.stderr


def test_check_dataset_classes_rejects_a_class_count_mismatch_and_warns_on_names(caplog):
    binary = SimpleNamespace(num_classes=1, id2label={0: "background", 1: "foreground"})
    three = SimpleNamespace(num_classes=3, id2label={0: "background", 1: "a", 2: "b", 3: "c"})
    check_dataset_classes(binary, None, "binary-data")  # binary model, binary masks
    with pytest.raises(ValueError, match=r"two-class has 2 foreground class\(es\).*the model 1"):
        check_dataset_classes(binary, {0: "background", 1: "x", 2: "y"}, "two-class")
    with pytest.raises(ValueError, match=r"binary-data has 1 foreground class\(es\) \(binary masks\), the model 3"):
        check_dataset_classes(three, None, "binary-data")
    with caplog.at_level("WARNING", logger="gms_hub.evaluation.protocol"):
        check_dataset_classes(three, {0: "background", 1: "a", 2: "b", 3: "c"}, "same")
        assert not caplog.records
        check_dataset_classes(three, {0: "background", 1: "a", 2: "b", 3: "d"}, "renamed")
    assert "differ from the dataset's" in caplog.text
