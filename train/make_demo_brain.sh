#!/usr/bin/env bash
# Rebuild the real-data demo model (gms_hub/demo_brain/, `load_model("demo-brain")`) from nothing, on CPU.
#
#   bash train/make_demo_brain.sh            # writes gms_hub/demo_brain/
#   WORK_DIR=/tmp/brain DEMO_DIR=/tmp/brain/model bash train/make_demo_brain.sh
#
# Steps: slice the MNI ICBM152 2009a template that ships with nilearn into axial grey/white-matter slices with slab
# splits (`python -m gms_hub.data.prepare mni152`); train a small SD-layout VAE on the T1 slices and the colour-coded
# tissue masks (train/train_vae.py --num_classes 2, on 64 px crops of the 128 px slices); train the latent mapping
# model with the VAE frozen (train/train.py, selected on the validation slab); save the GMS with the VAE bundled and
# fp16 weights; score it with train/evaluate.py on the test slabs (its metrics.json goes into the model folder);
# measure the VAE alone on the same test masks (encode the coded mask, decode, arg-max): the ceiling of any LMM on it.
# Measured: 13.9 minutes on 2 otherwise idle CPU cores (VAE 3.6, LMM 9.5), bit-identical to the bundled model;
# 45.8 minutes on 2 cores shared with other work (load average 8-14).
# NUM_PROCESSES=1 runs one process with two threads instead of two processes (same batches in total, slower).
# CONTEXT_SLICES=1 trains the 2.5D variant (the LMM's three input channels carry slices k-1, k, k+1; README,
# "2D vs 2.5D"); it needs its own DEMO_DIR so that it never replaces the bundled 2D model. The default, 0, is the
# bundled model's build, unchanged.
set -euo pipefail
{  # parsed whole before it runs, so editing this file during a build cannot change the build

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK_DIR="${WORK_DIR:-$REPO/outputs/demo_brain_build}"
DEMO_DIR="${DEMO_DIR:-$REPO/gms_hub/demo_brain}"
NUM_PROCESSES="${NUM_PROCESSES:-2}"
CONTEXT_SLICES="${CONTEXT_SLICES:-0}"   # 0: the paper's 2D model (the bundled demo-brain); 1: 2.5D
if [ "$CONTEXT_SLICES" != 0 ] && [ "$DEMO_DIR" = "$REPO/gms_hub/demo_brain" ]; then
    echo "CONTEXT_SLICES=$CONTEXT_SLICES builds a 2.5D variant; set DEMO_DIR (and WORK_DIR) to another folder so that" \
         "the bundled 2D demo-brain model is not replaced, e.g. WORK_DIR=/tmp/brain_k1 DEMO_DIR=/tmp/brain_k1/model." >&2
    exit 2
fi
CONTEXT_ARGS=()  # no flag at all for the default, so the recorded training command stays the bundled model's
if [ "$CONTEXT_SLICES" != 0 ]; then CONTEXT_ARGS=(--context_slices "$CONTEXT_SLICES"); fi

# Everything about the demo-brain model, in one place.
IMAGE_SIZE=128         # GMS input size; latents 16x16 (slices cropped to the brain, so the brain fills the frame)
PLANE=axial
SEED=2333
VAE_STEPS="${VAE_STEPS:-300}"    # VAE: batches of 8 random 64 px crops (plus 8 coded-mask crops), all processes
VAE_CROP=64            # 64 px crops of the 128 px slices: the VAE is convolutional, the slice size is what counts
LMM_STEPS="${LMM_STEPS:-400}"    # LMM: batches of 4 (all processes together) at 128 px: 20 epochs of 80 slices
LMM_BASE_CHANNELS=32   # the paper's LMM width

export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
LAUNCH=(python -m accelerate.commands.launch --num_machines 1 --mixed_precision no --dynamo_backend no)
if [ "$NUM_PROCESSES" -gt 1 ]; then
    export ACCELERATE_USE_CPU=1
    LAUNCH+=(--multi_gpu --num_processes "$NUM_PROCESSES" --main_process_port "${MAIN_PROCESS_PORT:-29533}")
else
    export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
    LAUNCH+=(--cpu --num_processes 1)
fi

start=$(date +%s)
stamp() { echo "[make_demo_brain $(( $(date +%s) - start ))s] $*"; }

FROM_STEP="${FROM_STEP:-1}"  # e.g. FROM_STEP=4 redoes only the packaging of an earlier run's WORK_DIR
step() { [ "$FROM_STEP" -le "$1" ]; }
if step 1; then rm -rf "$WORK_DIR"; fi
mkdir -p "$WORK_DIR"

if step 1; then
stamp "1/6 MNI ICBM152 slices ($PLANE, $IMAGE_SIZE px, slab splits)"
python -m gms_hub.data.prepare mni152 --output_dir "$WORK_DIR/data" --plane "$PLANE" --image_size "$IMAGE_SIZE"
fi

if step 2; then
stamp "2/6 VAE for colour-coded tissue masks"
"${LAUNCH[@]}" "$REPO/train/train_vae.py" --output_dir "$WORK_DIR/vae" --dataset "$WORK_DIR/data" --num_classes 2 \
    --synthetic_image_size "$IMAGE_SIZE" --resolution "$VAE_CROP" --random_crop --no_mid_block_attention \
    --block_out_channels 16 32 64 64 --norm_num_groups 4 --train_batch_size $((8 / NUM_PROCESSES)) \
    --learning_rate 2e-3 --lr_warmup_steps 20 --image_weight 2 --mask_weight 2 --kl_weight 1e-6 \
    --max_train_steps "$VAE_STEPS" --validation_steps 300 --checkpointing_steps 0 --report_to none --seed "$SEED"
fi

if step 3; then
stamp "3/6 latent mapping model"
"${LAUNCH[@]}" "$REPO/train/train.py" --dataset "$WORK_DIR/data" --vae "$WORK_DIR/vae" --vae_subfolder none \
    --image_size "$IMAGE_SIZE" --base_channels "$LMM_BASE_CHANNELS" --channel_mult 1 2 4 4 \
    --train_batch_size $((4 / NUM_PROCESSES)) --eval_batch_size 4 --learning_rate 2e-3 --lr_warmup_epochs 0 \
    --max_train_steps "$LMM_STEPS" --validation_epochs 2 --select_on validation --checkpointing_steps 100000 \
    --report_to none --include_vae --output_dir "$WORK_DIR/gms" --seed "$SEED" ${CONTEXT_ARGS[@]+"${CONTEXT_ARGS[@]}"}
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
    num_classes=trained["num_classes"], id2label=trained["id2label"],
    context_slices=trained.get("context_slices", 0),
)
model.load_lmm_state_dict(load_file(str(work / "gms" / "model.safetensors")), source="the trained LMM")
model.save_pretrained(work / "demo_fp16", include_vae=True, save_dtype=torch.float16)
PY
fi

if step 5; then
stamp "5/6 evaluation of the fp16 model on the test slabs"
python "$REPO/train/evaluate.py" --model "$WORK_DIR/demo_fp16" --dataset "$WORK_DIR/data" --split test \
    --output_dir "$WORK_DIR/eval" --no_masks --batch_size 4
fi

# The build time in the card is that of the last complete run (FROM_STEP=1) in WORK_DIR.
if step 1; then echo $(( $(date +%s) - start )) > "$WORK_DIR/build_seconds"; fi
stamp "6/6 VAE-alone mask reconstruction, model card, save to $DEMO_DIR"
BUILD_SECONDS=$(cat "$WORK_DIR/build_seconds") WORK_DIR="$WORK_DIR" DEMO_DIR="$DEMO_DIR" \
    python "$REPO/train/package_demo_brain.py"
stamp "done"
exit
}
