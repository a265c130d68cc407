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
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_bmp.png", "a_png.png", "predictions.csv"]


def test_predict_cli_fast_gives_the_same_masks_with_the_demo_model(tmp_path):
    from gms_hub.predict import main

    examples = REPO / "examples"
    outputs = {}
    for flags in ([], ["--fast"]):
        out = tmp_path / ("fast" if flags else "default")
        assert main(["--input", str(examples / "*.png"), "--output_dir", str(out), "--save_probabilities", *flags]) == 0
        outputs[bool(flags)] = {p.name: np.asarray(Image.open(p), dtype=np.int64) for p in sorted(out.glob("*.png"))}
    assert outputs[True].keys() == outputs[False].keys() and len(outputs[False]) == 2 * 3  # 3 pngs: mask + prob
    probabilities = [name for name in outputs[False] if name.endswith("_prob.png")]
    # --fast took effect: float rounding moves some 16-bit probabilities by one level (measured: 28-80 pixels)
    assert any(not np.array_equal(outputs[True][name], outputs[False][name]) for name in probabilities)
    for name, expected in outputs[False].items():
        got = outputs[True][name]
        if name.endswith("_prob.png"):
            assert np.abs(got - expected).max() <= 65535 * 1e-4, name  # 16-bit probabilities
        else:
            assert (got == expected).mean() > 0.999, name
