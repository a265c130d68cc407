import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def test_predict_cli_writes_good_masks_and_reports_broken_files(tiny_gms, tmp_path):
    model_dir = tmp_path / "model"
    tiny_gms.save_pretrained(model_dir, include_vae=True)
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (37, 45), dtype=np.uint8)).save(inputs / "gray.png")
    Image.fromarray(rng.integers(0, 256, (50, 33, 3), dtype=np.uint8)).save(inputs / "rgb.jpg")
    Image.fromarray(rng.integers(0, 65535, (29, 31), dtype=np.uint16)).save(inputs / "deep.tif")
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    good = inputs / "cut.png"
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(good)
    good.write_bytes(good.read_bytes()[:200])  # truncated
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "gms_hub.predict", "--model", str(model_dir), "--input", str(inputs),
         "--output_dir", str(out), "--batch_size", "2", "--save_probabilities"],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 1, result.stderr
    assert "broken.png" in result.stderr and "cut.png" in result.stderr and "2 file(s) failed" in result.stderr
    for name, size in (("gray", (45, 37)), ("rgb", (33, 50)), ("deep", (31, 29))):
        mask = Image.open(out / f"{name}.png")
        assert mask.mode == "L" and mask.size == size
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        assert Image.open(out / f"{name}_prob.png").size == size
    assert not (out / "broken.png").exists()


def test_predict_cli_all_good_exits_zero(tiny_gms, tmp_path):
    model_dir = tmp_path / "model"
    tiny_gms.save_pretrained(model_dir, include_vae=True)
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "a.bmp")
    result = subprocess.run(
        [sys.executable, "-m", "gms_hub.predict", "--model", str(model_dir), "--input", str(tmp_path / "a.*"),
         "--output_dir", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == ["a_bmp.png", "a_png.png",
                                                                                              "predictions.csv"]


def test_predict_cli_fast_gives_the_same_masks_with_the_demo_model(tmp_path):
    from gms_hub.inference.predict import main

    examples = REPO / "examples"
    outputs = {}
    for flags in ([], ["--fast"]):
        out = tmp_path / ("fast" if flags else "default")
        assert main(["--input", str(examples / "*.png"), "--output_dir", str(out), "--save_probabilities", *flags]) == 0
        outputs[bool(flags)] = {p.name: np.asarray(Image.open(p), dtype=np.int64) for p in sorted(out.glob("*.png"))}
    count = len(list(examples.glob("*.png")))  # every example PNG: a mask and a probability map each
    assert outputs[True].keys() == outputs[False].keys() and len(outputs[False]) == 2 * count
    probabilities = [name for name in outputs[False] if name.endswith("_prob.png")]
    # --fast took effect: float rounding moves some 16-bit probabilities by one level (measured: 28-80 pixels)
    assert any(not np.array_equal(outputs[True][name], outputs[False][name]) for name in probabilities)
    for name, expected in outputs[False].items():
        got = outputs[True][name]
        if name.endswith("_prob.png"):
            assert np.abs(got - expected).max() <= 65535 * 1e-4, name  # 16-bit probabilities
        else:
            assert (got == expected).mean() > 0.999, name


# ------------------------------------------------------------------ paths in segment(), uncertainty, overlays, multi-class
import csv  # noqa: E402

import pytest  # noqa: E402

from gms_hub.inference import predict  # noqa: E402


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_segment_reads_paths_like_the_images_they_hold(tiny_gms, tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (30, 41, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    deep = rng.integers(100, 4000, (24, 24), dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    _, expected = tiny_gms.segment(pixels, return_probabilities=True)
    _, from_path = tiny_gms.segment(tmp_path / "a.png", return_probabilities=True)
    np.testing.assert_array_equal(from_path, expected)
    # a list mixing paths and arrays gives what the same list of arrays gives (same batch, same float rounding)
    _, probs = tiny_gms.segment([str(tmp_path / "a.png"), pixels, tmp_path / "deep.png"], return_probabilities=True)
    _, arrays = tiny_gms.segment([pixels, pixels, deep], return_probabilities=True)
    for got, want in zip(probs, arrays):
        np.testing.assert_array_equal(got, want)


def test_segment_refuses_a_multi_frame_path_and_points_to_the_reader(tiny_gms, tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((16, 16, 3), np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    with pytest.raises(ValueError, match=r"'v.nii.gz' holds 3 frames.*read_input\(path\)"):
        tiny_gms.segment(tmp_path / "v.nii.gz")


def test_uncertainty_and_overlay_pngs_with_a_seed(tiny_gms, tmp_path, monkeypatch):
    monkeypatch.setattr(predict, "load_model", lambda spec, device: tiny_gms)
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (37, 45), dtype=np.uint8)).save(tmp_path / "gray.png")
    Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    runs = []
    for run in ("one", "two"):
        out = tmp_path / run
        assert predict.main(["--input", str(tmp_path / "*.png"), "--output_dir", str(out), "--num_samples", "2",
                             "--tta", "--save_uncertainty", "--save_overlay", "--seed", "7"]) == 0
        runs.append(out)
    for name, (h, w) in (("gray", (37, 45)), ("rgb", (20, 28))):
        uncertainty = Image.open(runs[0] / f"{name}_uncertainty.png")
        assert uncertainty.mode.startswith("I") and uncertainty.size == (w, h)
        values = np.asarray(uncertainty, dtype=np.int64)
        assert 0 <= values.min() and values.max() <= 65535 and values.max() > 0
        np.testing.assert_array_equal(values, np.asarray(Image.open(runs[1] / f"{name}_uncertainty.png"), np.int64))
        overlay = np.asarray(Image.open(runs[0] / f"{name}_overlay.png"))
        assert overlay.shape == (h, w, 3) and overlay.dtype == np.uint8
        mask = np.asarray(Image.open(runs[0] / f"{name}.png")) > 0
        if mask.any():  # every mask pixel is tinted towards red
            assert (overlay[mask, 0] >= overlay[mask, 1]).all()
    rows = read_csv(runs[0] / "predictions.csv")
    assert [(r["input"].endswith(".png"), r["status"], r["area_mm2"]) for r in rows] == [(True, "ok", "")] * 2
    for row in rows:
        mask = np.asarray(Image.open(runs[0] / row["mask_file"])) > 0
        assert int(row["area_px"]) == int(mask.sum())


def test_multi_class_model_writes_index_pngs_overlays_and_areas_per_class(tmp_path, monkeypatch):
    from _predict_utils import StandInMultiClass, brightness_labels

    from gms_hub.io.visualize import label_colors

    model = StandInMultiClass(num_classes=2, id2label={0: "background", 1: "benign", 2: "malignant"})
    monkeypatch.setattr(predict, "load_model", lambda spec, device: model)
    gradient = np.tile(np.linspace(0, 255, 48).astype(np.uint8), (20, 1))  # (20, 48): all three bins
    Image.fromarray(gradient).save(tmp_path / "ramp.png")
    out = tmp_path / "out"
    assert predict.main(["--input", str(tmp_path / "ramp.png"), "--output_dir", str(out), "--save_overlay",
                         "--save_probabilities"]) == 0
    labels = np.asarray(Image.open(out / "ramp.png"))
    assert Image.open(out / "ramp.png").mode == "L"
    expected = brightness_labels(gradient, None, 2)
    np.testing.assert_array_equal(labels, expected)
    assert set(np.unique(labels)) == {0, 1, 2}
    overlay = np.asarray(Image.open(out / "ramp_overlay.png")).astype(int)
    colors = label_colors(2).astype(int)
    for k in (1, 2):  # the outline of each class is drawn in its own colour
        column = int(np.flatnonzero(expected[0] == k)[0])
        np.testing.assert_array_equal(overlay[5, column], colors[k])
    (row,) = read_csv(out / "predictions.csv")
    assert int(row["area_px"]) == int((expected > 0).sum())
    assert int(row["area_px_benign"]) == int((expected == 1).sum())
    assert int(row["area_px_malignant"]) == int((expected == 2).sum())
    prob = np.asarray(Image.open(out / "ramp_prob.png"), dtype=np.int64)
    np.testing.assert_array_equal(prob, (expected > 0) * 65535)


def test_binary_overlay_blends_the_mask_and_colours_are_distinct():
    from gms_hub.io.visualize import FOREGROUND_COLOR, label_colors, overlay_labels

    colors = label_colors(12)
    assert colors.shape == (13, 3) and colors.dtype == np.uint8
    assert tuple(colors[1]) == FOREGROUND_COLOR == (255, 48, 48) and tuple(colors[0]) == (0, 0, 0)
    assert len({tuple(c) for c in colors}) == 13
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    mask = np.zeros((20, 25), bool)
    mask[4:15, 6:20] = True
    mask[0, :5] = True
    full = np.kron(mask, np.ones((2, 2), bool))  # the mask at the image's size (nearest neighbour)
    red = np.float32([255, 48, 48])
    for opacity in (0.0, 0.45, 1.0):
        out = overlay_labels(image, mask, opacity=opacity)
        np.testing.assert_array_equal(out[~full], image[~full])  # outside the mask: untouched
        blended = np.rint((1 - opacity) * image[15, 20].astype(np.float32) + opacity * red)
        assert out[15, 20].tolist() == blended.astype(np.uint8).tolist()  # inside: the fill blends
        assert out[8, 20].tolist() == out[29, 20].tolist() == [255, 48, 48]  # the outline is solid
    with pytest.raises(ValueError, match="RGB row for every label"):
        overlay_labels(image, mask.astype(np.uint8) * 3, colors=label_colors(1))
