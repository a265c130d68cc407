"""ONNX export (gms_hub.inference.export) and the onnxruntime wrapper (gms_hub.inference.onnx_runtime) against the torch model."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gms_hub import DEMO_MODEL_PATH, GMS
from gms_hub.inference.export import export_onnx, main as export_main
from gms_hub.inference.onnx_runtime import ONNXGMS

REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_DP = 1e-4  # the bar for probabilities
MIN_MASK_AGREEMENT = 0.999  # and for masks


def random_pixel_values(batch, size, seed=0):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def assert_parity(model, onnx_model, batch=3, seed=0):
    x = random_pixel_values(batch, model.image_size, seed)  # a batch the export never saw (it traced batch 2)
    with torch.no_grad():
        expected = model(x).mask_probs.numpy()  # (B, 1, S, S)
    got = onnx_model(x)
    assert got.shape == expected.shape == (batch, 1, model.image_size, model.image_size)
    assert np.abs(got - expected).max() <= MAX_DP
    assert ((got > 0.5) == (expected > 0.5)).mean() >= MIN_MASK_AGREEMENT


@pytest.fixture(scope="module")
def demo_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_onnx")
    assert export_main(["--model", "demo", "--output_dir", str(out)]) == 0
    return out


def test_cli_writes_onnx_config_and_readme(demo_export):
    assert (demo_export / "model.onnx").stat().st_size > 1000
    config = json.loads((demo_export / "config.json").read_text())
    assert config["model_type"] == "gms" and config["image_size"] == 128 and config["onnx"]["opset"] == 17
    readme = (demo_export / "README.md").read_text()
    assert "pixel_values" in readme and "(B, 1, 128, 128)" in readme and "x * 2 - 1" in readme


def test_demo_model_parity(demo_export):
    model = GMS.from_pretrained(DEMO_MODEL_PATH).eval()
    assert_parity(model, ONNXGMS.from_pretrained(demo_export))
    assert_parity(model, ONNXGMS.from_pretrained(demo_export), batch=1, seed=1)


def test_segment_matches_gms_segment(demo_export):
    model = GMS.from_pretrained(DEMO_MODEL_PATH).eval()
    onnx_model = ONNXGMS.from_pretrained(demo_export)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (90, 130), dtype=np.uint8), rng.integers(0, 65535, (200, 150, 3)).astype(np.uint16)]
    masks, probs = model.segment(images, return_probabilities=True, batch_size=1)
    onnx_masks, onnx_probs = onnx_model.segment(images, return_probabilities=True)
    assert isinstance(onnx_masks, list) and len(onnx_masks) == 2
    for mask, prob, onnx_mask, onnx_prob, image in zip(masks, probs, onnx_masks, onnx_probs, images):
        assert onnx_mask.shape == image.shape[:2] and onnx_mask.dtype == np.bool_ and onnx_prob.dtype == np.float32
        assert np.abs(onnx_prob - prob).max() <= MAX_DP
        assert (onnx_mask == mask).mean() >= MIN_MASK_AGREEMENT
    single = onnx_model.segment(images[0], threshold=0.3)
    assert isinstance(single, np.ndarray) and single.shape == (90, 130)
    assert np.array_equal(single, onnx_probs[0] > 0.3)


def test_small_sd_layout_random_model_parity(tiny_gms, tmp_path):
    # TINY_VAE_CONFIG is the SD layout (four down/up blocks, mid-block attention) with narrow channels.
    assert tiny_gms.vae.config.mid_block_add_attention
    export_onnx(tiny_gms, tmp_path / "onnx", opset=17)
    assert_parity(tiny_gms, ONNXGMS.from_pretrained(tmp_path / "onnx"))


def test_export_at_another_image_size(tiny_gms, tmp_path):
    export_onnx(tiny_gms, tmp_path / "onnx", image_size=32)
    onnx_model = ONNXGMS.from_pretrained(tmp_path / "onnx")
    assert onnx_model.image_size == 32
    x = random_pixel_values(2, 32)
    with torch.no_grad():
        expected = tiny_gms(x).mask_probs.numpy()
    assert np.abs(onnx_model(x) - expected).max() <= MAX_DP


def test_input_size_differing_from_config_is_an_error(tiny_gms, tmp_path):
    export_onnx(tiny_gms, tmp_path / "onnx")
    config_path = tmp_path / "onnx" / "config.json"
    config = json.loads(config_path.read_text())
    config["image_size"] = 96
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"shape \['batch', 3, 64, 64\].*image_size 96"):
        ONNXGMS.from_pretrained(tmp_path / "onnx")


class _BesselActivation(torch.nn.Module):
    """An activation built on aten::i0, which has no ONNX translation."""

    def forward(self, x):
        return torch.special.i0(x) * x


def test_unexportable_backbone_gives_clear_error(tiny_gms, tmp_path):
    tiny_gms.vae.decoder.conv_act = _BesselActivation()
    with pytest.raises(ValueError, match=r"autoencoder AutoencoderKL.*aten::i0"):
        export_onnx(tiny_gms, tmp_path / "onnx")
    assert not (tmp_path / "onnx" / "model.onnx").exists()


def test_importing_the_runtime_does_not_import_diffusers():
    code = "import sys, gms_hub.inference.onnx_runtime; print(sorted(m for m in sys.modules if m.split('.')[0] == 'diffusers'))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_full_sd2_architecture_random_weights_parity(tmp_path):
    from diffusers import AutoencoderKL

    from gms_hub.models.vae import sd2_vae_config

    torch.manual_seed(0)
    vae = AutoencoderKL(**{k: v for k, v in sd2_vae_config().items() if not k.startswith("_")}).eval()
    model = GMS(vae=vae, image_size=128).eval()
    export_onnx(model, tmp_path / "onnx")
    assert_parity(model, ONNXGMS.from_pretrained(tmp_path / "onnx"), batch=2)
