"""A real (tiny, random) 2-class GMS, saved with its VAE, through the command-line tools: `gms_hub.inference.predict` writes
index PNGs equal to `model.segment`, overlays and per-class areas; `train/evaluate.py` writes per-class scores equal
to `per_class_dice_iou` on the model's arg-max over the dataset's protocol inputs."""

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests._training_utils import EVALUATE_SCRIPT, subprocess_env
from tests.conftest import TINY_GMS_KWARGS, make_tiny_vae

NUM_CLASSES = 2


def _save_multiclass_gms(folder, id2label):
    from gms_hub import GMS

    torch.manual_seed(3)
    model = GMS(vae=make_tiny_vae(), num_classes=NUM_CLASSES, id2label=id2label, **TINY_GMS_KWARGS).eval()
    model.save_pretrained(folder, include_vae=True)
    return model


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_predict_cli_writes_the_label_maps_of_segment_overlays_and_class_areas(tmp_path):
    from gms_hub import GMS, predict

    id2label = {0: "background", 1: "benign", 2: "malignant"}
    _save_multiclass_gms(tmp_path / "model", id2label)
    model = GMS.from_pretrained(tmp_path / "model").eval()  # what the CLI loads
    assert model.num_classes == NUM_CLASSES and model.id2label == id2label

    rng = np.random.default_rng(0)
    inputs = tmp_path / "in"
    inputs.mkdir()
    images = {"a": rng.integers(0, 256, (70, 90, 3), dtype=np.uint8), "b": rng.integers(0, 256, (64, 48), dtype=np.uint8)}
    for name, pixels in images.items():
        Image.fromarray(pixels).save(inputs / f"{name}.png")

    out = tmp_path / "out"
    assert predict.main(["--model", str(tmp_path / "model"), "--input", str(inputs), "--output_dir", str(out),
                         "--save_overlay", "--device", "cpu"]) == 0

    expected = model.segment([Image.open(inputs / f"{name}.png") for name in images])  # uint8 (H, W) label maps
    rows = {row["mask_file"]: row for row in _read_csv(out / "predictions.csv")}
    seen = set()
    for (name, pixels), labels in zip(images.items(), expected):
        written = Image.open(out / f"{name}.png")
        assert written.mode == "L" and written.size == (pixels.shape[1], pixels.shape[0])
        written = np.asarray(written)
        assert written.max() <= NUM_CLASSES
        np.testing.assert_array_equal(written, labels)
        seen |= set(np.unique(written).tolist())

        overlay = Image.open(out / f"{name}_overlay.png")
        assert overlay.size == written.shape[::-1] and overlay.mode == "RGB"
        row = rows[f"{name}.png"]
        assert row["status"] == "ok"
        assert int(row["area_px"]) == int((labels > 0).sum())
        assert int(row["area_px_benign"]) == int((labels == 1).sum())
        assert int(row["area_px_malignant"]) == int((labels == 2).sum())
        assert row["area_mm2_benign"] == "" and row["area_mm2_malignant"] == ""  # PNGs have no spacing
    assert len(seen) >= 2, f"the random model predicts a single class everywhere ({seen}); the check would be weak"


def test_evaluate_script_scores_each_class_as_per_class_dice_iou_on_the_argmax(tmp_path):
    from gms_hub import GMS
    from gms_hub.data import EvalTransform, collate_batch, load_gms_dataset
    from gms_hub.evaluation.protocol import class_labels, evaluate_dataset, summarize_records
    from gms_hub.evaluation.metrics import per_class_dice_iou

    env = subprocess_env()
    subprocess.run(
        [sys.executable, "-m", "gms_hub.data.prepare", "synthetic", "--num_classes", str(NUM_CLASSES), "--image_size",
         "64", "--num_train", "4", "--num_validation", "2", "--num_test", "4", "--output_dir", str(tmp_path / "data")],
        env=env, check=True, capture_output=True, timeout=300,
    )
    test_split, id2label = load_gms_dataset(str(tmp_path / "data"), split="test", return_id2label=True)
    assert len(id2label) == NUM_CLASSES + 1
    _save_multiclass_gms(tmp_path / "model", id2label)

    result = subprocess.run(
        [sys.executable, str(EVALUATE_SCRIPT), "--model", str(tmp_path / "model"), "--dataset", str(tmp_path / "data"),
         "--split", "test", "--output_dir", str(tmp_path / "eval"), "--batch_size", "2"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    rows = _read_csv(tmp_path / "eval" / "per_image.csv")
    labels = [id2label[k] for k in range(1, NUM_CLASSES + 1)]
    assert sorted(metrics["per_class"]) == sorted(labels) and metrics["n"] == len(test_split) == len(rows)

    # Direct computation: the protocol's inputs, one forward pass, arg-max, per_class_dice_iou.
    model = GMS.from_pretrained(tmp_path / "model").eval()
    assert class_labels(model, NUM_CLASSES) == labels
    batch = collate_batch([test_split.with_transform(EvalTransform(64, num_classes=NUM_CLASSES))[i]
                           for i in range(len(test_split))])
    with torch.no_grad():
        probs = model(batch["pixel_values"]).mask_probs  # (B, K+1, 64, 64)
    pred = probs.argmax(dim=1)  # (B, 64, 64)
    gt = batch["masks"][:, 0].long()  # (B, 64, 64)
    dsc, iou = per_class_dice_iou(pred, gt, NUM_CLASSES)  # (B, K), NaN where absent from both
    assert len(torch.unique(pred)) >= 2, "the random model predicts a single class everywhere; the check would be weak"

    for i, row in enumerate(rows):
        assert row["name"] == test_split[i]["name"]
        for k, label in enumerate(labels):
            for column, scores in (("dsc", dsc), ("iou", iou)):
                value = float(scores[i, k])
                cell = row[f"{column}_{label}"]
                assert cell == "absent" if math.isnan(value) else float(cell) == pytest.approx(value, abs=1e-6)
    for k, label in enumerate(labels):
        scored = dsc[:, k][~torch.isnan(dsc[:, k])]
        assert metrics["per_class"][label]["n"] == scored.numel()
        if scored.numel():
            assert metrics["per_class"][label]["dsc_mean"] == pytest.approx(float(scored.mean()), abs=1e-6)
            scored_iou = iou[:, k][~torch.isnan(iou[:, k])]
            assert metrics["per_class"][label]["iou_mean"] == pytest.approx(float(scored_iou.mean()), abs=1e-6)

    # The library's own path gives the same summary in-process.
    summary = summarize_records(evaluate_dataset(model, test_split, batch_size=4))
    for label in labels:
        for key in ("dsc_mean", "iou_mean", "n"):
            assert summary["per_class"][label][key] == pytest.approx(metrics["per_class"][label][key], abs=1e-6)
