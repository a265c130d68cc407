#!/usr/bin/env python
"""Last step of train/make_demo_brain.sh: measure the VAE alone, write the card, save gms_hub/demo_brain/.

Reads WORK_DIR (the build folder: data/, vae/, gms/, demo_fp16/, eval/), DEMO_DIR (where the model goes) and
BUILD_SECONDS from the environment. The model folder gets the fp16 GMS with its VAE bundled, the `metrics.json`
that train/evaluate.py wrote for the test slabs (unchanged), a model card with per-class DSC and IoU, and
`demo_scores.json` (test scores, the VAE-alone ceiling, the VAE's own validation metrics, the build time).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from gms_hub import GMS
from gms_hub.data.mni152 import MNI152_COPYRIGHT
from gms_hub.training.vae import evaluate_vae, load_image_mask_arrays

COMMAND = "bash train/make_demo_brain.sh"


def _per_class_rows(metrics: dict) -> str:
    rows = []
    for label, scores in metrics["per_class"].items():
        rows.append(f"| {label} | {100 * scores['dsc_mean']:.2f} ± {100 * scores['dsc_std']:.2f} | "
                    f"{100 * scores['iou_mean']:.2f} ± {100 * scores['iou_std']:.2f} | {scores['n']} |")
    rows.append(f"| mean over classes | {100 * metrics['dsc_mean']:.2f} | {100 * metrics['iou_mean']:.2f} | {metrics['n']} |")
    return "\n".join(rows)


def main() -> None:
    work, demo_dir = Path(os.environ["WORK_DIR"]), Path(os.environ["DEMO_DIR"])
    model = GMS.from_pretrained(work / "demo_fp16").eval()  # fp16 weights, loaded as fp32: what users get
    size, labels = model.image_size, [model.id2label[k] for k in range(1, model.num_classes + 1)]

    # The VAE alone on the test slabs: encode the colour-coded true mask, decode, arg-max. No LMM can beat it.
    images, masks = load_image_mask_arrays(str(work / "data"), "test", image_size=size, num_classes=model.num_classes)
    with torch.inference_mode():
        vae_alone = evaluate_vae(model.vae, images, masks, num_classes=model.num_classes)
    vae_per_class = dict(zip(labels, vae_alone["mask_dsc_per_class"]))

    gms_metrics = json.loads((work / "eval" / "metrics.json").read_text())
    results = json.loads((work / "gms" / "training_results.json").read_text())
    vae_train = json.loads((work / "vae" / "vae_metrics.json").read_text())
    vae_params = sum(p.numel() for p in model.vae.parameters())
    lmm_params = sum(p.numel() for p in model.lmm.parameters())
    minutes = int(os.environ["BUILD_SECONDS"]) / 60
    ceiling = ", ".join(f"{label} {100 * value:.1f}" for label, value in vae_per_class.items())
    per_class = ", ".join(f"{label} {scores['dsc_mean']:.4f}" for label, scores in gms_metrics["per_class"].items())
    print(f"GMS test DSC {gms_metrics['dsc_mean']:.4f} ({per_class}); VAE-alone DSC {ceiling}")

    description = f"""**Demo model trained on one brain template.** Not for clinical use, not validated on patients.

A small GMS that segments grey and white matter on T1-weighted brain MRI slices (labels: 0 background,
1 grey matter, 2 white matter), trained by the project on CPU so that the library, the app and CI can show a real
scan offline: a {vae_params / 1e6:.2f} M-parameter Stable-Diffusion-layout VAE trained from scratch on the T1
slices and colour-coded tissue masks (`train/train_vae.py --num_classes 2`), bundled in `vae/`, and a latent
mapping model of {lmm_params / 1e6:.2f} M parameters (trained by `train/train.py` with the VAE frozen), at
{size}x{size} input (latents {size // 8}x{size // 8}). Weights are stored in float16 and load as float32.

**Training data**: axial slices of the MNI ICBM152 2009a symmetric template that ships with `nilearn`
(`python -m gms_hub.data.prepare mni152 --plane axial --image_size {size}`): one average of 152 brains, smooth and
noise-free, not a cohort of patients. Grey/white matter are the template's probability maps at >= 50 %. Slices are
oriented as radiology viewers show them (anterior up, the patient's right on the left), cropped to the brain and
zero-padded to a square; give the model slices oriented the same way (a NIfTI slice in raw array order lies on its
side). Split by slabs of consecutive slices with gaps of 5 dropped slices, so test slices are never next to
training slices; {results['train_samples']} training slices, checkpoint selected on the validation slab (epoch
{results['best_epoch']}, step {results['best_step']}).

## Scores on the test slabs

`train/evaluate.py` on the test split ({gms_metrics['n']} slices, {size}x{size}, arg-max label maps against the
ground truth resized with nearest neighbour); its `metrics.json` is in this folder:

| class | DSC (%) | IoU (%) | n |
|---|---|---|---|
{_per_class_rows(gms_metrics)}

The VAE alone (encode the true coded mask, decode, arg-max) reaches DSC {ceiling} (%) on the same slices: the
ceiling of any latent mapping model on this VAE. Built in {minutes:.1f} minutes on a shared 2-core CPU by
`{COMMAND}`. Scores on slices of the template it was trained on say how well it reproduces this brain's tissue
boundaries on unseen slices; they say nothing about scans of patients, other scanners or other contrasts.

The training data carries the ICBM 2009 templates' notice: {MNI152_COPYRIGHT}"""

    test = {k: gms_metrics[k] for k in ("dsc_mean", "dsc_std", "iou_mean", "iou_std", "n", "per_class")}
    validation = results["metrics"]["validation"]
    card_kwargs = {
        "metrics": {"validation": {k: validation[k] for k in test if k in validation}, "test": test},
        "selection_split": "validation",
        "training_command": COMMAND,
        "dataset_name": "MNI ICBM152 2009a template, axial slices (demo)",
        "description": description,
    }
    if demo_dir.exists():
        shutil.rmtree(demo_dir)
    # The VAE exists only bundled: record no machine-local path in config.json.
    model.save_pretrained(demo_dir, include_vae=True, save_dtype=torch.float16, model_card_kwargs=card_kwargs,
                          config={"vae": None, "vae_subfolder": None, "vae_revision": None})
    shutil.copyfile(work / "eval" / "metrics.json", demo_dir / "metrics.json")
    scores = {
        "gms_test": test,
        "vae_mask_reconstruction_test": {"mask_dsc": vae_alone["mask_dsc"], "per_class": vae_per_class,
                                         "n": vae_alone["n"]},
        "image_size": size,
        "vae_training": vae_train,
        "lmm_parameters": lmm_params,
        "vae_parameters": vae_params,
        "build_minutes": round(minutes, 2),
        "command": COMMAND,
    }
    (demo_dir / "demo_scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    total = sum(f.stat().st_size for f in demo_dir.rglob("*") if f.is_file())
    print(f"Saved {demo_dir} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
