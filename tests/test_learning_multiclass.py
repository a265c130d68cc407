"""A 2-class GMS learns each class: a tiny VAE trained on colour-coded masks (`train/train_vae.py --num_classes 2`)
reproduces the coded masks, and `accelerate launch train/train.py` on `prepare synthetic --num_classes 2` then raises
every class's validation Dice far above that of the untrained model.

The bundled demo VAE was trained on grey masks and does not reproduce colour codes (see
benchmarks/coded_mask_reconstruction.py), so the test trains its own: 0.31 M parameters, 200 steps of 4 images and
4 coded masks at 64 px. About 100 s on 2 loaded CPU cores, most of it the two trainings.

Measured (one run): coded-mask reconstruction DSC 0.92 / 0.89 (dark_lesion / bright_nodule) on 24 fresh masks;
validation Dice untrained 0.13 / 0.00, after 8 epochs 0.81 / 0.65 (epoch 0: 0.53 / 0.23).
"""

import json
import subprocess
import sys

import pytest

from tests._training_utils import REPO_ROOT, TRAIN_SCRIPT, accelerate_command, run_launch, subprocess_env

pytestmark = pytest.mark.slow  # trains a coded-mask VAE and a 2-class GMS (~3 min on 2 cores): opt-in with `-m slow`

IMAGE_SIZE = 64
NUM_CLASSES = 2
NUM_TRAIN, NUM_VALIDATION = 64, 16
EPOCHS, BATCH_SIZE = 8, 4
LMM_KWARGS = dict(base_channels=16, channel_mult=(1, 1, 2, 2))
VAE_STEPS = 200


@pytest.fixture(scope="module")
def coded_vae(tmp_path_factory):
    """A tiny SD-layout VAE (4 blocks, 4 latent channels) trained on synthetic images and 2-class coded masks."""
    output_dir = tmp_path_factory.mktemp("coded_vae") / "vae"
    command = accelerate_command(1) + [
        str(REPO_ROOT / "train" / "train_vae.py"), "--output_dir", str(output_dir), "--num_classes", str(NUM_CLASSES),
        "--resolution", str(IMAGE_SIZE), "--synthetic_num_train", "128", "--synthetic_num_validation", "16",
        "--synthetic_seed", "1", "--block_out_channels", "16", "32", "32", "32", "--norm_num_groups", "4",
        "--no_mid_block_attention", "--train_batch_size", "4", "--learning_rate", "3e-3", "--lr_warmup_steps", "10",
        "--image_weight", "4", "--mask_weight", "2", "--max_train_steps", str(VAE_STEPS), "--validation_steps", "0",
        "--checkpointing_steps", "0", "--report_to", "none", "--seed", "0",
    ]
    run_launch(command, subprocess_env(), timeout=600)
    return output_dir


@pytest.fixture(scope="module")
def multiclass_benchmark(tmp_path_factory):
    from gms_hub.data import load_gms_dataset

    root = tmp_path_factory.mktemp("learning_multiclass")
    command = [
        sys.executable, "-m", "gms_hub.data.prepare", "synthetic", "--num_classes", str(NUM_CLASSES), "--output_dir",
        str(root / "data"), "--num_train", str(NUM_TRAIN), "--num_validation", str(NUM_VALIDATION), "--num_test", "4",
        "--image_size", str(IMAGE_SIZE), "--seed", "7",
    ]
    subprocess.run(command, env=subprocess_env(), check=True, capture_output=True, timeout=300)
    return root, load_gms_dataset(str(root / "data"), split="validation")


def _per_class_dice(model, dataset):
    from gms_hub.evaluation.protocol import evaluate_dataset, summarize_records

    summary = summarize_records(evaluate_dataset(model, dataset, batch_size=8))
    return {label: scores["dsc_mean"] for label, scores in summary["per_class"].items()}


def test_coded_vae_reproduces_each_class(coded_vae):
    from diffusers import AutoencoderKL

    from gms_hub.training.vae import evaluate_vae, load_image_mask_arrays

    metrics = json.loads((coded_vae / "vae_metrics.json").read_text())
    assert len(metrics["mask_dsc_per_class"]) == NUM_CLASSES
    # Fresh masks (another seed than training's): encode the coded mask, decode, arg-max of the class probabilities.
    images, masks = load_image_mask_arrays(None, "test", image_size=IMAGE_SIZE, count=24, synthetic_seed=99,
                                           num_classes=NUM_CLASSES)
    fresh = evaluate_vae(AutoencoderKL.from_pretrained(coded_vae).eval(), images, masks, num_classes=NUM_CLASSES)
    assert min(fresh["mask_dsc_per_class"]) > 0.8, fresh


def test_each_class_validation_dice_rises_far_above_the_untrained_model(coded_vae, multiclass_benchmark):
    import torch
    from diffusers import AutoencoderKL

    from gms_hub import GMS
    from gms_hub.data.synthetic import synthetic_id2label

    root, validation = multiclass_benchmark
    id2label = synthetic_id2label(NUM_CLASSES)
    torch.manual_seed(0)
    untrained = GMS(vae=AutoencoderKL.from_pretrained(coded_vae), image_size=IMAGE_SIZE, num_classes=NUM_CLASSES,
                    id2label=id2label, **LMM_KWARGS).eval()
    start = _per_class_dice(untrained, validation)
    assert sorted(start) == sorted(id2label[k] for k in range(1, NUM_CLASSES + 1))

    output_dir = root / "run"
    command = accelerate_command(1) + [
        str(TRAIN_SCRIPT), "--dataset", str(root / "data"), "--output_dir", str(output_dir),
        "--vae", str(coded_vae), "--vae_subfolder", "none", "--image_size", str(IMAGE_SIZE),
        "--base_channels", str(LMM_KWARGS["base_channels"]), "--channel_mult", *map(str, LMM_KWARGS["channel_mult"]),
        "--num_train_epochs", str(EPOCHS), "--train_batch_size", str(BATCH_SIZE), "--lr_warmup_epochs", "0",
        # The tiny VAE's posterior noise is large next to its image signal: train on posterior means.
        "--latent_noise_prob", "0",
        "--validation_epochs", "1", "--checkpointing_steps", "100000", "--report_to", "none", "--seed", "7",
    ]
    run_launch(command, subprocess_env(), timeout=900)

    results = json.loads((output_dir / "training_results.json").read_text())
    history = results["history"]
    assert len(history) == EPOCHS
    best = max(history, key=lambda entry: entry["dsc_mean"])
    learned = {label: scores["dsc_mean"] for label, scores in best["per_class"].items()}
    for label, before in start.items():
        assert learned[label] >= before + 0.3, (label, start, learned)
        assert learned[label] >= 0.45, (label, start, learned)

    # The saved model is the selected one, with its classes, and scores what training reported for each class.
    trained = GMS.from_pretrained(output_dir).eval()
    assert trained.num_classes == NUM_CLASSES and trained.id2label == id2label
    assert _per_class_dice(trained, validation) == pytest.approx(learned, abs=1e-6)
