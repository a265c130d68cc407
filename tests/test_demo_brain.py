"""The bundled real-data demo model, `load_model("demo-brain")`: loads offline, segments a T1 slice into the three
labels, and its metrics.json holds what the evaluation protocol gives on the template's test slabs."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gms_hub import DEMO_BRAIN_PATH, load_model
from gms_hub.models.resolver import classify_spec

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "brain_t1.png"


@pytest.fixture(scope="module")
def brain_model():
    return load_model("demo-brain", local_files_only=True)


def test_spec_names_the_bundled_folder():
    assert classify_spec("demo-brain") == ("demo", str(DEMO_BRAIN_PATH), None)
    assert classify_spec("Demo-Brain").location == str(DEMO_BRAIN_PATH)


def test_folder_is_small_and_describes_itself():
    total = sum(f.stat().st_size for f in DEMO_BRAIN_PATH.rglob("*") if f.is_file())
    assert total <= 8 * 1024 * 1024
    config = json.loads((DEMO_BRAIN_PATH / "config.json").read_text())
    assert config["num_classes"] == 2 and config["vae"] is None and config["vae_bundled"]
    card = (DEMO_BRAIN_PATH / "README.md").read_text()
    assert "MNI ICBM152" in card and "Not for clinical use" in card and "grey_matter" in card


def test_segments_a_t1_slice_into_grey_and_white_matter(brain_model):
    image = Image.open(EXAMPLE)
    labels = brain_model.segment(image)
    assert labels.shape == (image.height, image.width) and labels.dtype == np.uint8
    assert set(np.unique(labels)) == {0, 1, 2}
    pixels = np.asarray(image)
    brain = pixels > 0
    assert (labels[~brain] == 0).mean() > 0.98  # outside the skull-stripped brain: background
    assert (labels[brain] > 0).mean() > 0.6  # most of the brain is tissue
    # T1 contrast: what it calls white matter is brighter than what it calls grey matter
    assert pixels[labels == 2].mean() > pixels[labels == 1].mean() + 20


def test_metrics_json_is_what_the_protocol_gives_on_the_test_slabs(brain_model):
    pytest.importorskip("nilearn", reason="the template ships with nilearn (pip install -r requirements-dev.txt)")
    from gms_hub.data.mni152 import make_mni152_dataset
    from gms_hub.evaluation.protocol import evaluate_dataset, summarize_records

    recorded = json.loads((DEMO_BRAIN_PATH / "metrics.json").read_text())
    splits, _ = make_mni152_dataset(plane="axial", image_size=brain_model.image_size)
    summary = summarize_records(evaluate_dataset(brain_model, splits["test"], batch_size=4, original_resolution=False))
    assert summary["n"] == recorded["n"]
    assert summary["dsc_mean"] == pytest.approx(recorded["dsc_mean"], abs=1e-4)
    for label in ("grey_matter", "white_matter"):
        assert summary["per_class"][label]["dsc_mean"] == pytest.approx(recorded["per_class"][label]["dsc_mean"], abs=1e-4)


def test_space_says_what_it_was_trained_on():
    from space.registry import ModelSource

    assert "MNI" in ModelSource("demo", str(DEMO_BRAIN_PATH)).label
    assert "synthetic" in ModelSource("demo", "gms_hub/demo_model").label


def test_the_2_5d_build_refuses_to_replace_the_bundled_2d_model(tmp_path):
    """`CONTEXT_SLICES=1 bash train/make_demo_brain.sh` without its own DEMO_DIR stops before anything is touched."""
    import os
    import subprocess

    script = Path(__file__).resolve().parents[1] / "train" / "make_demo_brain.sh"
    env = {**os.environ, "CONTEXT_SLICES": "1", "WORK_DIR": str(tmp_path / "work")}
    env.pop("DEMO_DIR", None)
    before = {p: p.stat().st_mtime_ns for p in DEMO_BRAIN_PATH.rglob("*")}
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "DEMO_DIR" in done.stderr and "bundled 2D demo-brain" in done.stderr
    assert not (tmp_path / "work").exists()
    assert {p: p.stat().st_mtime_ns for p in DEMO_BRAIN_PATH.rglob("*")} == before
