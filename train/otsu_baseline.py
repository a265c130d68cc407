#!/usr/bin/env python
"""The classical floor: a multi-level Otsu threshold per image, scored with train/evaluate.py's protocol.

    python train/otsu_baseline.py --dataset outputs/mni152 --output_dir outputs/otsu-mni152 --image_size 128

No training. Each image is turned to grey (the mean of its RGB channels at the protocol's size, `--image_size`, the
same bilinear resize that GMS sees), cut into `--num_levels` intensity bands by
`skimage.filters.threshold_multiotsu` (K + 1 bands by default, K the foreground classes), and each band gets a label:
the band -> label assignment with the best pooled Dice on the train split (mean over foreground classes; all
(K + 1) ** bands assignments are tried on one table of pixel counts per band and label). That table is the only
thing read from the labels; it decides e.g. that dark is lesion in ultrasound and bright is white matter in a T1. The label maps are scored on the test split by `gms_hub.evaluation.report.evaluate_to_folder`, which writes the
same `metrics.json` as train/evaluate.py (probabilities are the one-hot label maps, so the calibration figures
describe hard decisions).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from types import SimpleNamespace
from typing import Dict, List, Optional

import numpy as np
import torch

logger = logging.getLogger("otsu_baseline")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Multi-level Otsu threshold, scored like train/evaluate.py.")
    parser.add_argument("--dataset", type=str, required=True, help="Hub dataset id or local folder (gms_hub.data layout).")
    parser.add_argument("--test_dataset", type=str, default=None,
                        help="Score this dataset's --split instead (e.g. a fresh synthetic test set).")
    parser.add_argument("--output_dir", type=str, required=True)
    parser.add_argument("--image_size", type=int, default=224, help="Protocol size (the GMS it is compared with).")
    parser.add_argument("--num_levels", type=int, default=None, help="Intensity bands (default: classes + 1).")
    parser.add_argument("--split", type=str, default="test", help="Split to score.")
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args(argv)
    if args.num_levels is not None and args.num_levels < 2:
        parser.error(f"--num_levels must be >= 2, got {args.num_levels}.")
    flags = sys.argv[1:] if argv is None else argv
    args.command = "python " + shlex.join(["train/otsu_baseline.py", *flags])
    return args


def otsu_bands(gray: np.ndarray, num_levels: int) -> np.ndarray:
    """Band index 0..num_levels-1 of every pixel (0 darkest); one band everywhere for a flat image."""
    from skimage.filters import threshold_multiotsu

    if np.ptp(gray) == 0:
        return np.zeros(gray.shape, np.int64)
    try:
        thresholds = threshold_multiotsu(gray, classes=num_levels)
    except ValueError:  # fewer distinct values than bands
        return (gray > gray.min()).astype(np.int64)
    return np.digitize(gray, bins=thresholds)


class OtsuSegmenter(torch.nn.Module):
    """Multi-level Otsu with a band -> label table, behind the interface `gms_hub.evaluation` scores.

    Args:
        image_size (`int`): protocol size.
        band_labels (`list[int]`): the label of each intensity band, darkest first.
        num_classes (`int`): foreground classes (1: binary, probabilities (B, 1, S, S)).
        id2label (`dict`, *optional*): class names.
    """

    def __init__(self, image_size: int, band_labels: List[int], num_classes: int, id2label: Optional[Dict[int, str]] = None):
        super().__init__()
        self.image_size, self.num_classes, self.id2label, self.threshold = image_size, num_classes, id2label, 0.5
        self.band_labels = list(band_labels)
        self.register_buffer("_anchor", torch.zeros(1))  # gives the module a device and dtype

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    def forward(self, pixel_values: torch.Tensor) -> SimpleNamespace:
        gray = ((pixel_values.float().mean(1) + 1) / 2).cpu().numpy()  # (B, S, S) in [0, 1]
        table = np.asarray(self.band_labels)
        labels = torch.from_numpy(np.stack([table[otsu_bands(g, len(table))] for g in gray]))  # (B, S, S)
        if self.num_classes == 1:
            probs = (labels > 0).float()[:, None]  # (B, 1, S, S)
        else:
            probs = torch.nn.functional.one_hot(labels, self.num_classes + 1).permute(0, 3, 1, 2).float()  # (B, K+1, S, S)
        return SimpleNamespace(mask_probs=probs.to(pixel_values.device))


def fit_band_labels(dataset, image_size: int, num_levels: int, num_classes: int, batch_size: int = 16) -> List[int]:
    """The label of each Otsu band that fits a split best (`best_assignment`; the only use of training labels)."""
    from gms_hub.data import EvalTransform, collate_batch

    counts = np.zeros((num_levels, num_classes + 1), np.int64)
    loader = torch.utils.data.DataLoader(dataset.with_transform(EvalTransform(image_size=image_size, num_classes=num_classes)),
                                         batch_size=batch_size, collate_fn=collate_batch)
    for batch in loader:
        gray = ((batch["pixel_values"].float().mean(1) + 1) / 2).numpy()  # (B, S, S)
        truth = batch["masks"][:, 0].numpy()
        truth = (truth > 0.5).astype(np.int64) if num_classes == 1 else truth.round().astype(np.int64)
        for g, t in zip(gray, truth):
            bands = otsu_bands(g, num_levels)
            np.add.at(counts, (bands.ravel(), t.ravel()), 1)
    return best_assignment(counts)


def best_assignment(counts: np.ndarray) -> List[int]:
    """The band -> label assignment with the best pooled Dice (mean over foreground labels) for a table of pixel
    counts (bands, labels); ties go to the first assignment in `itertools.product` order."""
    import itertools

    num_bands, num_labels = counts.shape
    truth = counts.sum(0)  # (labels,)
    band_total = counts.sum(1)  # (bands,)
    best, best_score = None, -1.0
    for assignment in itertools.product(range(num_labels), repeat=num_bands):
        chosen = np.asarray(assignment)
        dices = []
        for k in range(1, num_labels):
            hit = chosen == k
            predicted, overlap = band_total[hit].sum(), counts[hit, k].sum()
            dices.append(2 * overlap / (predicted + truth[k]) if predicted + truth[k] else 1.0)
        score = float(np.mean(dices))
        if score > best_score:
            best, best_score = list(assignment), score
    return [int(label) for label in best]


def main(args: argparse.Namespace) -> Dict:
    from gms_hub.data import load_gms_dataset
    from gms_hub.evaluation.report import evaluate_to_folder

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    train, id2label = load_gms_dataset(args.dataset, split="train", return_id2label=True)
    num_classes = 1 if id2label is None else len(id2label) - 1
    num_levels = args.num_levels or num_classes + 1
    started = time.perf_counter()
    band_labels = fit_band_labels(train, args.image_size, num_levels, num_classes, args.batch_size)
    fit_seconds = time.perf_counter() - started
    logger.info(f"Otsu bands (darkest first) -> labels {band_labels} ({fit_seconds:.1f} s over {len(train)} images)")
    model = OtsuSegmenter(args.image_size, band_labels, num_classes, id2label)
    test = load_gms_dataset(args.test_dataset or args.dataset, split=args.split)
    info = {"model": "multi-level Otsu (train/otsu_baseline.py)", "dataset": args.test_dataset or args.dataset, "split": args.split,
            "command": args.command, "trainable_parameters": 0, "frozen_parameters": 0, "num_levels": num_levels,
            "band_labels": band_labels, "fit_seconds": round(fit_seconds, 1)}
    metrics = evaluate_to_folder(model, test, args.output_dir, batch_size=args.batch_size, write_masks=False, info=info)
    logger.info(f"{args.split}: DSC {metrics['dsc_mean']:.4f} ± {metrics['dsc_std']:.4f} (n = {metrics['n']}), "
                f"{metrics['seconds_per_image']:.4f} s per image")
    for name, scores in metrics.get("per_class", {}).items():
        logger.info(f"  {name}: DSC {scores['dsc_mean']:.4f}, IoU {scores['iou_mean']:.4f}")
    return metrics


if __name__ == "__main__":
    main(parse_args())
