"""The committed demo model (gms_hub/demo_model/) and the VAE training script that builds part of it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_VAE = REPO_ROOT / "train" / "train_vae.py"

# Floors under the scores recorded in the model card (GMS 0.917 ± 0.065, VAE alone 0.983 ± 0.011 on 128 fresh
# images): 16 fresh images pass reliably (the mean's standard error is ~0.016 and ~0.003), while a broken model,
# VAE, loader or preprocessing (DSC ~0.3) does not.
GMS_DSC_FLOOR = 0.85
VAE_DSC_FLOOR = 0.95
FRESH_SEED = 777  # not the training seed (2333) nor the card's test seed (4242)


@pytest.fixture(scope="module")
def demo_model():
    from gms_hub import DEMO_MODEL_PATH, GMS

    return GMS.from_pretrained(DEMO_MODEL_PATH, local_files_only=True)


@pytest.fixture(scope="module")
def fresh_set(demo_model):
    from gms_hub.data.synthetic import generate_split

    return generate_split("test", 16, seed=FRESH_SEED, image_size=demo_model.image_size)


def _dice(pred: np.ndarray, gt: np.ndarray) -> float:
    from gms_hub.evaluation.metrics import dice_iou

    return dice_iou(pred, gt)[0]


def test_demo_model_files_and_size():
    from gms_hub import DEMO_MODEL_PATH

    files = {p.relative_to(DEMO_MODEL_PATH).as_posix(): p.stat().st_size for p in DEMO_MODEL_PATH.rglob("*") if p.is_file()}
    for name in ("config.json", "model.safetensors", "README.md", "vae/config.json", "vae/diffusion_pytorch_model.safetensors"):
        assert name in files, f"{name} missing from {DEMO_MODEL_PATH}"
    assert sum(files.values()) <= 8 * 1024 * 1024, f"demo model is {sum(files.values())} bytes, over 8 MB"
    card = (DEMO_MODEL_PATH / "README.md").read_text()
    assert "synthetic" in card.lower() and "not for clinical use" in card.lower()
    assert "make_demo_model.sh" in card
    scores = json.loads((DEMO_MODEL_PATH / "demo_scores.json").read_text())
    assert f"{100 * scores['gms_test']['dsc_mean']:.2f}" in card  # the card shows the measured scores


def test_demo_model_loads_offline_in_float32(demo_model):
    assert demo_model.vae.config.latent_channels == 4
    assert len(demo_model.vae.config.block_out_channels) == 4  # SD layout: 8x downsampling
    dtypes = {p.dtype for p in demo_model.parameters()}
    assert dtypes == {torch.float32}, f"weights stored in fp16 must load as fp32, got {dtypes}"


def test_demo_model_segments_fresh_synthetic_images(demo_model, fresh_set):
    from gms_hub.evaluation.metrics import protocol_ground_truth

    masks = demo_model.segment(fresh_set["image"], batch_size=16)
    scores = [_dice(pred, np.asarray(gt) > 0) for pred, gt in zip(masks, fresh_set["mask"])]
    assert np.mean(scores) >= GMS_DSC_FLOOR, f"demo model DSC {np.mean(scores):.3f} < {GMS_DSC_FLOOR} ({scores})"
    # Same images at the protocol resolution: the card's protocol gives the same picture.
    gt = np.stack([protocol_ground_truth(m, demo_model.image_size) for m in fresh_set["mask"]])
    assert gt.any(axis=(1, 2)).all()


def test_demo_vae_reconstructs_masks(demo_model, fresh_set):
    gt = torch.from_numpy(np.stack([np.asarray(m) > 0 for m in fresh_set["mask"]]))  # (16, S, S) bool
    with torch.inference_mode():
        pixel_values = gt[:, None].float().expand(-1, 3, -1, -1) * 2 - 1  # masks as GMS encodes them
        probs = demo_model.decode_mask(demo_model.encode(pixel_values))[:, 0]  # (16, S, S)
    scores = [_dice((p > 0.5).numpy(), g.numpy()) for p, g in zip(probs, gt)]
    assert np.mean(scores) >= VAE_DSC_FLOOR, f"VAE mask reconstruction DSC {np.mean(scores):.3f} < {VAE_DSC_FLOOR}"


def _run_train_vae(output_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [
        sys.executable, str(TRAIN_VAE), "--output_dir", str(output_dir), "--synthetic_num_train", "12",
        "--synthetic_num_validation", "4", "--synthetic_image_size", "48", "--resolution", "32", "--random_crop",
        "--no_mid_block_attention", "--block_out_channels", "8", "16", "16", "16", "--norm_num_groups", "4",
        "--train_batch_size", "2", "--validation_steps", "0", "--report_to", "none", "--num_threads", "1", *extra,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_train_vae_script_saves_loadable_vae_and_resumes(tmp_path):
    from diffusers import AutoencoderKL

    out = tmp_path / "vae"
    _run_train_vae(out, "--max_train_steps", "2", "--checkpointing_steps", "2")
    assert (out / "checkpoint-2").is_dir()
    result = _run_train_vae(out, "--max_train_steps", "3", "--checkpointing_steps", "0", "--resume_from_checkpoint", "latest")
    assert "Resumed from" in result.stderr and "at step 2" in result.stderr

    vae = AutoencoderKL.from_pretrained(out)
    assert vae.config.latent_channels == 4 and tuple(vae.config.block_out_channels) == (8, 16, 16, 16)
    metrics = json.loads((out / "vae_metrics.json").read_text())
    assert metrics["steps"] == 3
    # scaling_factor is measured (1 / std of the latents), not SD's 0.18215 default.
    assert vae.config.scaling_factor == pytest.approx(1 / metrics["latent_std"], rel=1e-4)
    assert vae.config.scaling_factor != pytest.approx(0.18215)
    # The saved VAE works as a GMS VAE: 48 px in, 6x6 latents, 48 px mask probabilities out.
    from gms_hub import GMS

    model = GMS(vae=str(out), vae_subfolder=None, image_size=48, base_channels=16, channel_mult=(1, 1, 1, 1))
    with torch.inference_mode():
        out_probs = model(torch.zeros(1, 3, 48, 48)).mask_probs
    assert out_probs.shape == (1, 1, 48, 48)
