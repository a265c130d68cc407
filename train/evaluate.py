#!/usr/bin/env python
"""Evaluate a GMS on a dataset split with the paper's protocol (method.md, "Evaluation protocol").

    python train/evaluate.py --model org/gms-busi --dataset org/gms-busi --split test --output_dir eval-busi
    accelerate launch --num_processes 4 train/evaluate.py ...      # sharded over processes / GPUs

Per image: the image is resized to the model's input size (224 in the paper; bilinear, no antialiasing), the
prediction is the mask probability > 0.5, the ground truth is resized with PIL NEAREST and thresholded at
0.5; DSC and IoU are 0 when their denominator is 0; the summary is the mean and the sample std (ddof 1).
The same metrics at each image's original size (probabilities resized bilinearly to (H, W), then > 0.5,
against the original mask) are reported separately, labelled `original_resolution`.

Every run also measures calibration and uncertainty at the model's resolution: `ece` (15 equal-width bins),
`brier`, `error_auroc` (the uncertainty map ranking wrong pixels above right ones, over all pixels of the split)
and `uncertainty_dsc_spearman` (each image's mean uncertainty against its DSC); the protocol is written into
`metrics.json`. `--num_samples N` (posterior samples of the image latent) and `--tta` (the 8 flips and quarter
turns) evaluate the mean probability over `max(N, 1) * (8 if --tta else 1)` passes per image instead of the
paper's single pass; `--seed` makes the samples reproducible:

    python train/evaluate.py --model demo --dataset outputs/synthetic --output_dir eval-n8-tta --num_samples 8 --tta --seed 0

A multi-class model (num_classes > 1) on a dataset of class-index masks is scored per class: `per_class` in
`metrics.json` keyed by label, `dsc_mean` / `iou_mean` = the mean over foreground classes, and `dsc_<label>`,
`iou_<label>` columns in `per_image.csv` (`absent` where a class is in neither the ground truth nor the prediction).

Writes to --output_dir: `metrics.json`, `per_image.csv` (name,dsc,iou,dsc_original,iou_original,mean_uncertainty),
`reliability.png` (the reliability diagram) and `masks/<name>.png` (the protocol masks, image_size x image_size,
0/255, or class indices for multi-class). Cross-domain evaluation (BUSI -> BUS)
is the same command with a model from one benchmark and a dataset from another. `--model` also takes the
reference checkpoints' names (bus, busi, glas, ham10000, kvasir-instrument), a `.pth` path or a URL.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from typing import Any, Dict, List, Optional

from accelerate import Accelerator
from accelerate.logging import get_logger

logger = get_logger(__name__, log_level="INFO")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate a GMS on a dataset split with the paper's protocol.")
    parser.add_argument("--model", type=str, required=True,
                        help="GMS folder or Hub id[@revision], a reference name (bus, busi, glas, ham10000, "
                             "kvasir-instrument), a reference .pth path / URL, or demo.")
    parser.add_argument("--model_revision", type=str, default=None, help="Hub revision of --model.")
    parser.add_argument("--dataset", type=str, required=True, help="Hub dataset id or local folder (gms_hub.data layout).")
    parser.add_argument("--dataset_revision", type=str, default=None, help="Hub revision of --dataset.")
    parser.add_argument("--split", type=str, default="test", help="Split to evaluate (default: test).")
    parser.add_argument("--output_dir", type=str, required=True)
    parser.add_argument("--batch_size", type=int, default=8, help="Images per forward pass on each process.")
    parser.add_argument("--image_size", type=int, default=None, help="Model input size (default: the model's, 224).")
    parser.add_argument("--threshold", type=float, default=None, help="Probability threshold (default: the model's, 0.5).")
    parser.add_argument("--vae", type=str, default=None,
                        help="Use this VAE instead of the model's (Hub id, folder or single file); required offline "
                             "for reference checkpoints unless the default SD2 VAE is cached.")
    parser.add_argument("--vae_subfolder", type=str, default="vae", help='Subfolder of --vae; "none" for none.')
    parser.add_argument("--vae_revision", type=str, default=None)
    parser.add_argument("--max_samples", type=int, default=None, help="Evaluate the first N images only (debugging).")
    parser.add_argument("--mixed_precision", type=str, default=None, choices=["no", "fp16", "bf16"],
                        help="Autocast precision (default: the accelerate config, else fp32, the paper's).")
    parser.add_argument("--fast", action="store_true",
                        help="Apply gms_hub.inference.fast.optimize (exact rewrites: probabilities equal to float rounding).")
    parser.add_argument("--no_masks", action="store_true", help="Do not write the predicted masks.")
    parser.add_argument("--dataloader_num_workers", type=int, default=0)
    parser.add_argument("--num_samples", type=int, default=0,
                        help="Posterior samples of the image latent per image, averaged (default 0: the posterior "
                             "mean, the paper's inference).")
    parser.add_argument("--tta", action="store_true",
                        help="Also average over the 8 flips and quarter turns (test-time augmentation).")
    parser.add_argument("--seed", type=int, default=None, help="Seed of the posterior samples (process i: seed + i).")
    args = parser.parse_args(argv)
    if args.num_samples < 0:
        parser.error(f"--num_samples must be >= 0, got {args.num_samples}.")
    if str(args.vae_subfolder).lower() in ("none", "null", ""):
        args.vae_subfolder = None
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}.")
    from gms_hub.io.safety import UnsafeOutputError, check_output_dir

    local = [path for path in (args.dataset, args.model) if os.path.exists(path)]  # Hub ids are not folders here
    try:  # the report never lands in (or replaces) the dataset or model it reads
        check_output_dir(args.output_dir, local, input_flag="--dataset/--model")
    except UnsafeOutputError as err:
        parser.error(str(err))
    return args


def _percent(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def main(args: argparse.Namespace) -> Dict[str, Any]:
    from gms_hub import load_model
    from gms_hub.data import load_gms_dataset
    from gms_hub.evaluation.protocol import check_dataset_classes
    from gms_hub.evaluation.report import evaluate_to_folder

    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)

    # --model in any form gms_hub.load_model accepts, with the flags that override its configuration
    overrides = {key: getattr(args, key) for key in ("image_size", "threshold") if getattr(args, key) is not None}
    if args.model_revision is not None:
        overrides["revision"] = args.model_revision
    if args.vae is not None:
        overrides.update(vae=args.vae, vae_subfolder=args.vae_subfolder, vae_revision=args.vae_revision)
    model = load_model(args.model, **overrides).to(accelerator.device).eval()
    if args.fast:
        from gms_hub.inference.fast import optimize

        optimize(model)
    dataset_kwargs = {"revision": args.dataset_revision} if args.dataset_revision else {}
    dataset, id2label = load_gms_dataset(args.dataset, split=args.split, return_id2label=True, **dataset_kwargs)
    check_dataset_classes(model, id2label, args.dataset)
    if getattr(model, "context_slices", 0):  # a 2.5D model sees each slice with its neighbours (config.json)
        from gms_hub.data.context import with_context_slices

        dataset = with_context_slices(dataset, model.context_slices)
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    if len(dataset) == 0:
        raise ValueError(f"The {args.split!r} split of {args.dataset} is empty; nothing to evaluate.")
    logger.info(f"Evaluating {args.model} on {len(dataset)} images of {args.dataset} [{args.split}] "
                f"with {accelerator.num_processes} process(es)")

    info = {
        "model": args.model, "dataset": args.dataset, "split": args.split,
        "command": "python " + shlex.join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
    }
    metrics = evaluate_to_folder(
        model, dataset, args.output_dir, batch_size=args.batch_size, accelerator=accelerator,
        write_masks=not args.no_masks, num_workers=args.dataloader_num_workers, info=info,
        num_samples=args.num_samples, tta=args.tta, seed=args.seed,
    )
    if accelerator.is_main_process:
        logger.info(
            f"{args.split}: DSC {_percent(metrics['dsc_mean'])} ± {_percent(metrics['dsc_std'])}, IoU "
            f"{_percent(metrics['iou_mean'])} ± {_percent(metrics['iou_std'])} (%, n = {metrics['n']}); original "
            f"resolution: DSC {_percent(metrics['original_resolution']['dsc_mean'])}, IoU "
            f"{_percent(metrics['original_resolution']['iou_mean'])}; ECE {metrics['ece']}, Brier {metrics['brier']}, "
            f"error AUROC {metrics['error_auroc']}, {metrics['passes_per_image']} pass(es) per image, "
            f"{metrics['seconds_per_image']:.3f} s per image. Wrote {args.output_dir}"
        )
    accelerator.wait_for_everyone()
    return metrics


if __name__ == "__main__":
    main(parse_args())
