#!/usr/bin/env bash
# Rebuild the offline demo model (gms_hub/demo_model/) from nothing, on CPU.
#
#   bash train/make_demo_model.sh            # writes gms_hub/demo_model/
#   WORK_DIR=/tmp/demo DEMO_DIR=/tmp/demo/model bash train/make_demo_model.sh
#
# Steps: generate the synthetic benchmark (train/validation, seed 2333) and a fresh test set (seed 4242,
# never used in training); train a small SD-layout VAE on images and masks (train/train_vae.py); train the
# latent mapping model with the VAE frozen (train/train.py); score the result with train/evaluate.py on the
# fresh test set, measure the VAE alone on the same masks (encode, decode, threshold 0.5); save the GMS with
# the VAE bundled and fp16 weights, and a model card holding the scores and this command.
# Budget: at most 30 minutes on 2 CPU cores (25 measured: VAE ~4, latent mapping model ~20).
# NUM_PROCESSES=1 runs one process with two threads instead of two processes (same batches in total, slower).
set -euo pipefail
{  # parsed whole before it runs, so editing this file during a build cannot change the build

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK_DIR="${WORK_DIR:-$REPO/outputs/demo_build}"
DEMO_DIR="${DEMO_DIR:-$REPO/gms_hub/demo_model}"
NUM_PROCESSES="${NUM_PROCESSES:-2}"  # one training process per core (small convolutions scale poorly over threads)

# Everything about the demo model, in one place.
IMAGE_SIZE=128         # GMS input size; latents are 16x16
DATA_SEED=2333         # train / validation data
TEST_SEED=4242         # fresh test data, never seen in training
NUM_TRAIN=1200
NUM_VALIDATION=64
NUM_TEST=128
VAE_STEPS=800          # VAE: batches of 16 random 32 px crops (plus 16 mask crops), all processes together
VAE_CROP=32
LMM_STEPS=1800         # LMM: batches of 4 (all processes together) at 128 px: 6 epochs
LMM_BASE_CHANNELS=32    # the paper's LMM (1.56 M parameters): only ~4% slower per step than 16, the decoder dominates

export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
LAUNCH=(python -m accelerate.commands.launch --num_machines 1 --mixed_precision no --dynamo_backend no)
if [ "$NUM_PROCESSES" -gt 1 ]; then
    export ACCELERATE_USE_CPU=1
    LAUNCH+=(--multi_gpu --num_processes "$NUM_PROCESSES" --main_process_port "${MAIN_PROCESS_PORT:-29531}")
else
    export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
    LAUNCH+=(--cpu --num_processes 1)
fi

start=$(date +%s)
stamp() { echo "[make_demo_model $(( $(date +%s) - start ))s] $*"; }

FROM_STEP="${FROM_STEP:-1}"  # e.g. FROM_STEP=4 redoes only the packaging of an earlier run's WORK_DIR
step() { [ "$FROM_STEP" -le "$1" ]; }
if step 1; then rm -rf "$WORK_DIR"; fi
mkdir -p "$WORK_DIR"

if step 1; then
stamp "1/6 synthetic data"
python -m gms_hub.data.prepare synthetic --output_dir "$WORK_DIR/data" --num_train "$NUM_TRAIN" \
    --num_validation "$NUM_VALIDATION" --num_test 16 --seed "$DATA_SEED" --image_size "$IMAGE_SIZE"
python -m gms_hub.data.prepare synthetic --output_dir "$WORK_DIR/test_data" --num_train 8 \
    --num_validation 8 --num_test "$NUM_TEST" --seed "$TEST_SEED" --image_size "$IMAGE_SIZE"
fi

if step 2; then
stamp "2/6 VAE"
"${LAUNCH[@]}" "$REPO/train/train_vae.py" --output_dir "$WORK_DIR/vae" \
    --synthetic_num_train "$NUM_TRAIN" --synthetic_num_validation "$NUM_VALIDATION" --synthetic_seed "$DATA_SEED" \
    --synthetic_image_size "$IMAGE_SIZE" --resolution "$VAE_CROP" --random_crop --no_mid_block_attention \
    --block_out_channels 16 16 32 64 --norm_num_groups 4 --train_batch_size $((16 / NUM_PROCESSES)) \
    --learning_rate 2e-3 --image_weight 2 --kl_weight 1e-6 --max_train_steps "$VAE_STEPS" --validation_steps 400 \
    --checkpointing_steps 0 --report_to none --seed "$DATA_SEED"
fi

if step 3; then
stamp "3/6 latent mapping model"
"${LAUNCH[@]}" "$REPO/train/train.py" --dataset "$WORK_DIR/data" --vae "$WORK_DIR/vae" --vae_subfolder none \
    --image_size "$IMAGE_SIZE" --base_channels "$LMM_BASE_CHANNELS" --channel_mult 1 2 4 4 \
    --train_batch_size $((4 / NUM_PROCESSES)) --learning_rate 2e-3 --lr_warmup_epochs 0 --max_train_steps "$LMM_STEPS" \
    --validation_epochs 1 --select_on validation --checkpointing_steps 100000 --report_to none \
    --include_vae --output_dir "$WORK_DIR/gms" --seed "$DATA_SEED"
fi

if step 4; then
stamp "4/6 fp16 model folder (VAE bundled)"
WORK_DIR="$WORK_DIR" python - <<'PY'
import json
import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file

from gms_hub import GMS

work = Path(os.environ["WORK_DIR"])
trained = json.loads((work / "gms" / "config.json").read_text())
# Rebuilt around the VAE object rather than its build path, so that config.json names no local folder.
model = GMS(
    vae=AutoencoderKL.from_pretrained(work / "vae"), image_size=trained["image_size"],
    base_channels=trained["base_channels"], channel_mult=tuple(trained["channel_mult"]),
    threshold=trained["threshold"], norm_num_groups=trained["norm_num_groups"],
)
model.load_lmm_state_dict(load_file(str(work / "gms" / "model.safetensors")), source="the trained LMM")
model.save_pretrained(work / "demo_fp16", include_vae=True, save_dtype=torch.float16)
PY
fi

if step 5; then
stamp "5/6 evaluation of the fp16 model on the fresh test set (seed $TEST_SEED)"
python "$REPO/train/evaluate.py" --model "$WORK_DIR/demo_fp16" --dataset "$WORK_DIR/test_data" --split test \
    --output_dir "$WORK_DIR/eval" --no_masks
fi

# The build time in the card is that of the last complete run (FROM_STEP=1) in WORK_DIR.
if step 1; then echo $(( $(date +%s) - start )) > "$WORK_DIR/build_seconds"; fi
stamp "6/6 VAE-alone mask reconstruction, model card, save to $DEMO_DIR"
BUILD_SECONDS=$(cat "$WORK_DIR/build_seconds") WORK_DIR="$WORK_DIR" DEMO_DIR="$DEMO_DIR" TEST_SEED="$TEST_SEED" \
python - <<'PY'
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from gms_hub import GMS
from gms_hub.data import load_gms_dataset
from gms_hub.evaluation.metrics import dice_iou, protocol_ground_truth, summarize_scores

work, demo_dir = Path(os.environ["WORK_DIR"]), Path(os.environ["DEMO_DIR"])
model = GMS.from_pretrained(work / "demo_fp16").eval()  # fp16 weights, loaded as fp32: what users get
size = model.image_size
# VAE alone: encode each ground-truth mask (3 channels in [-1, 1], as GMS encodes masks), decode, threshold 0.5.
test = load_gms_dataset(str(work / "test_data"), split="test")
gts = np.stack([protocol_ground_truth(row["mask"], size) for row in test])  # (N, S, S) bool
scores = []
with torch.inference_mode():
    for start in range(0, len(gts), 32):
        gt = torch.from_numpy(gts[start : start + 32])
        pixel_values = gt[:, None].float().expand(-1, 3, -1, -1) * 2 - 1  # (b, 3, S, S)
        probs = model.decode_mask(model.encode(pixel_values))[:, 0]  # (b, S, S)
        scores += [dice_iou(p > 0.5, g) for p, g in zip(probs, gt)]
vae_metrics = summarize_scores([d for d, _ in scores], [i for _, i in scores])
gms_metrics = json.loads((work / "eval" / "metrics.json").read_text())
results = json.loads((work / "gms" / "training_results.json").read_text())
vae_train = json.loads((work / "vae" / "vae_metrics.json").read_text())
test_metrics = {k: gms_metrics[k] for k in ("dsc_mean", "dsc_std", "iou_mean", "iou_std", "n")}
print(f"GMS test DSC {test_metrics['dsc_mean']:.4f}, VAE-alone mask DSC {vae_metrics['dsc_mean']:.4f}")

vae_params = sum(p.numel() for p in model.vae.parameters())
lmm_params = sum(p.numel() for p in model.lmm.parameters())
minutes = int(os.environ["BUILD_SECONDS"]) / 60
description = f"""**Demo model trained on synthetic data.** Not trained on any medical image, not for clinical use.

A small GMS that the project trains itself, so that the library, the app and CI can show real
segmentation offline: a {vae_params / 1e6:.2f} M-parameter Stable-Diffusion-layout VAE (4 latent channels,
8x downsampling; trained from scratch by `train/train_vae.py`) bundled in `vae/`, and a latent mapping model of
{lmm_params / 1e6:.2f} M parameters (base channels {model.config['base_channels']}, multipliers
{tuple(model.config['channel_mult'])}; trained by `train/train.py` with the VAE frozen), at
{size}x{size} input (latents {size // 8}x{size // 8}). Weights are stored in float16 and load as float32.

Training data: the synthetic benchmark of `gms_hub.data.synthetic` (ultrasound-, dermoscopy- and histology-like
images rendered from exact masks), seed 2333, {results['train_samples']} training images; the checkpoint was
selected on its validation split (best epoch {results['best_epoch']}, step {results['best_step']}).

## Scores on a fresh synthetic test set

Seed {os.environ['TEST_SEED']} (never used in training), {test_metrics['n']} images at {size}x{size}, scored with
`train/evaluate.py` (probability > 0.5 against the ground truth resized with nearest neighbour):

| what | DSC (%) | IoU (%) | n |
|---|---|---|---|
| GMS (image -> mask) | {100 * test_metrics['dsc_mean']:.2f} ± {100 * test_metrics['dsc_std']:.2f} | {100 * test_metrics['iou_mean']:.2f} ± {100 * test_metrics['iou_std']:.2f} | {test_metrics['n']} |
| VAE alone (encode the true mask, decode, > 0.5) | {100 * vae_metrics['dsc_mean']:.2f} ± {100 * vae_metrics['dsc_std']:.2f} | {100 * vae_metrics['iou_mean']:.2f} ± {100 * vae_metrics['iou_std']:.2f} | {vae_metrics['n']} |

Built in {minutes:.1f} minutes on CPU by `bash train/make_demo_model.sh`. These numbers say the pipeline learns
end to end on synthetic data; they say nothing about real medical images. In the evaluation table below,
`validation` is the training data's validation split (seed 2333, used for checkpoint selection) and `test` is
the fresh test set above."""

card_kwargs = {
    "metrics": {
        "validation": {k: results["metrics"]["validation"][k] for k in ("dsc_mean", "dsc_std", "iou_mean", "iou_std", "n")},
        "test": test_metrics,
    },
    "selection_split": "validation",
    "training_command": "bash train/make_demo_model.sh",
    "dataset_name": "synthetic data (demo)",
    "description": description,
}
if demo_dir.exists():
    shutil.rmtree(demo_dir)
# The VAE exists only bundled: record no machine-local path in config.json.
model.save_pretrained(demo_dir, include_vae=True, save_dtype=torch.float16, model_card_kwargs=card_kwargs,
                      config={"vae": None, "vae_subfolder": None, "vae_revision": None})
scores_file = {
    "gms_test": test_metrics,
    "vae_mask_reconstruction_test": vae_metrics,
    "test_seed": int(os.environ["TEST_SEED"]),
    "image_size": size,
    "vae_training": vae_train,
    "build_minutes": round(minutes, 2),
    "command": "bash train/make_demo_model.sh",
}
(demo_dir / "demo_scores.json").write_text(json.dumps(scores_file, indent=2) + "\n")
total = sum(f.stat().st_size for f in demo_dir.rglob("*") if f.is_file())
print(f"Saved {demo_dir} ({total / 1e6:.2f} MB)")
PY
stamp "done"
exit
}
