"""The baselines beside GMS: train/otsu_baseline.py (multi-level Otsu) and train/train_unet.py (MONAI BasicUNet),
on a small stand-in of the MNI template; both must write train/evaluate.py's metrics.json."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gms_hub.data.prepare import cli
from tests.test_data_mni152 import _stand_in

ROOT = Path(__file__).resolve().parents[1]
EVALUATE_KEYS = {"dsc_mean", "dsc_std", "iou_mean", "iou_std", "n", "per_class", "original_resolution", "ece",
                 "seconds_per_image", "protocol", "image_size", "num_classes", "command"}


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "train" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def brain_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("mni")
    out = root / "data"
    assert cli(["mni152", "--output_dir", str(out), "--source", str(_stand_in(root / "template")), "--image_size", "32",
                "--train_slab", "8", "--held_out_slab", "4"]) == 0
    return out


def test_otsu_maps_bands_to_tissue_and_writes_evaluate_metrics(brain_dataset, tmp_path):
    otsu = _script("otsu_baseline")
    metrics = otsu.main(otsu.parse_args(["--dataset", str(brain_dataset), "--output_dir", str(tmp_path), "--image_size", "32"]))
    # T1 contrast: background darkest, then grey matter, then white matter; learned from the train split only
    assert metrics["band_labels"] == [0, 1, 2]
    assert EVALUATE_KEYS <= set(json.loads((tmp_path / "metrics.json").read_text()))
    assert set(metrics["per_class"]) == {"grey_matter", "white_matter"}
    assert metrics["per_class"]["white_matter"]["dsc_mean"] > 0.8  # the stand-in's tissues are flat intensities
    assert metrics["trainable_parameters"] == 0


def test_otsu_assignment_finds_a_minority_foreground():
    otsu = _script("otsu_baseline")
    # a dark lesion that is a minority of even the dark band: majority voting would call every band background
    counts = np.array([[300, 100], [5000, 2]])  # (bands, labels)
    assert otsu.best_assignment(counts) == [1, 0]


def test_otsu_bands_of_a_flat_image_are_one_band():
    otsu = _script("otsu_baseline")
    assert otsu.otsu_bands(np.full((8, 8), 0.3), 3).max() == 0


def test_unet_trains_selects_and_writes_evaluate_metrics(brain_dataset, tmp_path):
    pytest.importorskip("monai", reason="the U-Net baseline needs monai (pip install -r requirements-dev.txt)")
    unet = _script("train_unet")
    args = unet.parse_args(["--dataset", str(brain_dataset), "--output_dir", str(tmp_path), "--image_size", "32",
                            "--max_train_steps", "4", "--train_batch_size", "2", "--features", "4", "4", "8", "8", "8", "4",
                            "--lr_warmup_epochs", "0", "--validation_epochs", "1"])
    metrics = unet.main(args)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert EVALUATE_KEYS <= set(written) and written["n"] == metrics["n"] > 0
    assert written["trainable_parameters"] > 0 and written["train_steps"] == 4
    results = json.loads((tmp_path / "training_results.json").read_text())
    assert results["best"]["step"] in [h["step"] for h in results["history"]]
    config = json.loads((tmp_path / "config.json").read_text())
    model = unet.UNetSegmenter(config["image_size"], config["num_classes"], features=config["features"])
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(tmp_path / "model.safetensors")))  # strict: the saved weights rebuild it
    probs = model(torch.zeros(1, 3, 32, 32)).mask_probs
    assert probs.shape == (1, 3, 32, 32) and torch.allclose(probs.sum(1), torch.ones(1, 32, 32), atol=1e-5)


def test_unet_rejects_sizes_it_cannot_halve_four_times():
    unet = _script("train_unet")
    with pytest.raises(SystemExit):
        unet.parse_args(["--dataset", "x", "--output_dir", "y", "--image_size", "40"])
