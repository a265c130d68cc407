"""The folder an evaluation writes: `metrics.json`, `per_image.csv`, `reliability.png` and the predicted masks.

[`evaluate_to_folder`] is what `train/evaluate.py` calls: it runs the protocol ([`gms_hub.evaluation.protocol.evaluate_dataset`],
summarised by [`gms_hub.evaluation.protocol.summarize_records`]), adds the calibration and uncertainty summary
([`uncertainty_summary`]) and writes the files once, on the main process.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from .calibration import CALIBRATION_PROTOCOL, spearman
from .protocol import MULTICLASS_PROTOCOL, EvaluationStats, evaluate_dataset, model_num_classes, summarize_records
from ..inference.uncertainty import num_passes
from ..io.safety import write_text_atomic


#: Columns of `per_image.csv` for a binary model, in order (a multi-class one adds `dsc_<label>`, `iou_<label>`
#: per foreground class before `mean_uncertainty`, with `absent` where the class is in neither map).
PER_IMAGE_COLUMNS = ("name", "dsc", "iou", "dsc_original", "iou_original", "mean_uncertainty")

#: The CSV cell of a class absent from both the prediction and the ground truth of an image.
ABSENT = "absent"


def write_per_image_csv(path: Union[str, os.PathLike], records: List[Dict[str, Any]]) -> None:
    """Write [`evaluate_dataset`] records as a CSV (`PER_IMAGE_COLUMNS`, scores to 6 decimals).

    Multi-class records add `dsc_<label>` and `iou_<label>` columns per foreground class; a class absent from both
    the ground truth and the prediction of an image is written `absent` (and an image with no scored class has
    `absent` as its `dsc` / `iou` too).

    Args:
        path (`str` or `os.PathLike`): the CSV file to write.
        records (`list[dict]`): per-image results.

    Example:
        >>> write_per_image_csv("eval/per_image.csv", records)
    """
    from ..io.safety import write_csv

    labels = list(records[0]["per_class"]) if records and "per_class" in records[0] else []
    columns = list(PER_IMAGE_COLUMNS[:-1]) + [f"{m}_{label}" for label in labels for m in ("dsc", "iou")]
    columns.append(PER_IMAGE_COLUMNS[-1])

    def cell(value):
        if isinstance(value, float):
            return ABSENT if math.isnan(value) else f"{value:.6f}"
        return value

    rows = []
    for record in records:
        row = {k: cell(v) for k, v in record.items() if k != "per_class"}
        for label, scores in record.get("per_class", {}).items():
            row[f"dsc_{label}"], row[f"iou_{label}"] = cell(scores["dsc"]), cell(scores["iou"])
        rows.append(row)
    write_csv(path, rows, columns)  # atomic, and a name like '=1+2' cannot run as a spreadsheet formula


def _json_number(value: Optional[float]) -> Optional[float]:
    # metrics.json stays strict JSON: an undefined value (NaN) is written as null.
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def uncertainty_summary(records: List[Dict[str, Any]], stats: EvaluationStats) -> Dict[str, Any]:
    """`ece`, `brier`, `error_auroc` (+ its bound), `uncertainty_dsc_spearman` and the timing of an evaluation.

    Args:
        records (`list[dict]`): [`evaluate_dataset`] records (with `mean_uncertainty`).
        stats ([`EvaluationStats`]): the pixel-level statistics of the same run.

    Returns:
        `dict`: the values written to `metrics.json` (NaN written as `None`: undefined, e.g. no wrong pixel).

    Example:
        >>> records, stats = evaluate_dataset(model, dataset, return_stats=True)
        >>> uncertainty_summary(records, stats)["ece"]
    """
    scored = [r for r in records if not math.isnan(r["dsc"])]
    return {
        "ece": _json_number(stats.calibration.ece()),
        "brier": _json_number(stats.calibration.brier()),
        "error_auroc": _json_number(stats.error_auroc.auroc()),
        "error_auroc_max_error": _json_number(stats.error_auroc.max_error()),
        "uncertainty_dsc_spearman": _json_number(
            spearman(np.array([r["mean_uncertainty"] for r in scored]), np.array([r["dsc"] for r in scored]))
        ),
        "mean_uncertainty": _json_number(float(np.mean([r["mean_uncertainty"] for r in records]))),
        "seconds_per_image": _json_number(stats.seconds / stats.images if stats.images else float("nan")),
    }


def evaluate_to_folder(
    model: torch.nn.Module,
    dataset,
    output_dir: Union[str, os.PathLike],
    *,
    batch_size: int = 8,
    accelerator=None,
    write_masks: bool = True,
    num_workers: int = 0,
    progress: bool = True,
    info: Optional[Dict[str, Any]] = None,
    num_samples: int = 0,
    tta: bool = False,
    seed: Optional[int] = None,
) -> Dict[str, Any]:
    """Score a model on a split with the paper's protocol and write the results to a folder.

    Writes `metrics.json` (the paper's summary, the same at each image's original resolution, the protocol in
    words, calibration and uncertainty: `ece`, `brier`, `error_auroc`, `uncertainty_dsc_spearman` with their
    protocol, and `info`), `per_image.csv` (with each image's `mean_uncertainty`), `reliability.png` (the
    reliability diagram) and, with `write_masks`, `masks/<name>.png` (the protocol masks, image_size x image_size,
    0/255 or class indices). Under `accelerate launch` the split is sharded; the files are written once. A
    multi-class model adds `per_class` and writes `dsc_mean` / `iou_mean` as the mean over foreground classes.

    Args:
        model ([`GMS`]): the model, on its device; its `image_size` and `threshold` are the protocol's.
        dataset (`datasets.Dataset`): the split (`image`, `mask`, `name` columns).
        output_dir (`str` or `os.PathLike`): the folder to write.
        batch_size (`int`, defaults to 8): images per forward pass on each process.
        accelerator (`accelerate.Accelerator`, *optional*): shards the split; its mixed precision applies.
        write_masks (`bool`, defaults to `True`): write the predicted masks.
        num_workers (`int`, defaults to 0): DataLoader workers.
        progress (`bool`, defaults to `True`): show a progress bar on the main process.
        info (`dict`, *optional*): recorded in `metrics.json` as well (e.g. model, dataset, split, command).
        num_samples (`int`, defaults to 0): posterior samples per image; 0 is the paper's posterior mean.
        tta (`bool`, defaults to `False`): also average over the 8 flips and quarter turns.
        seed (`int`, *optional*): seed of the posterior noise (process `i` uses `seed + i`); unseeded if `None`.

    Returns:
        `dict`: the contents of `metrics.json`.

    Example:
        >>> metrics = evaluate_to_folder(model, load_gms_dataset("org/gms-busi", split="test"), "eval-busi")
        >>> metrics["dsc_mean"], metrics["original_resolution"]["dsc_mean"], metrics["ece"]
    """
    output_dir = Path(output_dir)
    is_main = accelerator.is_main_process if accelerator is not None else True
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
    records, stats = evaluate_dataset(
        model, dataset, batch_size=batch_size, threshold=model.threshold, accelerator=accelerator,
        original_resolution=True, mask_dir=output_dir / "masks" if write_masks else None,
        num_workers=num_workers, progress=progress, num_samples=num_samples, tta=tta,
        generator=_posterior_generator(model, accelerator, seed), return_stats=True,
    )
    metrics = _metrics_json(model, records, stats, accelerator, info, num_samples=num_samples, tta=tta, seed=seed)
    if is_main:
        _write_report(output_dir, metrics, records, stats, info, num_samples=num_samples, tta=tta)
    return metrics


def _posterior_generator(model, accelerator, seed: Optional[int]) -> Optional[torch.Generator]:
    """The posterior noise of this process (`seed + process_index`), or `None` (unseeded) without a seed."""
    if seed is None:
        return None
    device = accelerator.device if accelerator is not None else model.device
    process_index = accelerator.process_index if accelerator is not None else 0
    return torch.Generator(device=device).manual_seed(int(seed) + process_index)


def _metrics_json(model, records, stats: EvaluationStats, accelerator, info, *, num_samples: int, tta: bool,
                  seed: Optional[int]) -> Dict[str, Any]:
    """The contents of `metrics.json`: summaries, uncertainty, the protocols in words, and the run's settings."""
    from .. import __version__
    from .metrics import PROTOCOL_DESCRIPTION

    num_classes = model_num_classes(model)
    protocol = PROTOCOL_DESCRIPTION.format(size=model.image_size, threshold=model.threshold)
    if num_classes > 1:
        protocol = MULTICLASS_PROTOCOL.format(num_classes=num_classes, size=model.image_size)
    summary = summarize_records(records)
    return {
        **{k: v for k, v in summary.items() if k != "per_class"},
        **({"per_class": summary["per_class"]} if "per_class" in summary else {}),
        **uncertainty_summary(records, stats),
        "num_samples": int(num_samples),
        "tta": bool(tta),
        "seed": seed,
        "passes_per_image": num_passes(num_samples, tta),
        **(info or {}),
        "image_size": model.image_size,
        "threshold": model.threshold,
        "num_classes": num_classes,
        "protocol": protocol,
        "calibration_protocol": CALIBRATION_PROTOCOL.format(
            size=model.image_size, n_bins=stats.calibration.n_bins, threshold=model.threshold,
            auroc_bins=stats.error_auroc.n_bins,
        ) + (" Multi-class: see `protocol` (one-vs-rest foreground probability, arg-max errors)." if num_classes > 1
             else "") + " Predictions: the mean probability over `passes_per_image` passes (gms_hub.inference.uncertainty).",
        "original_resolution": {
            **summarize_records(records, suffix="_original"),
            "protocol": "Probabilities resized bilinearly to each image's original (H, W), then > threshold (arg-max "
                        "for multi-class), against the original ground-truth mask (not the paper's protocol; what a "
                        "user sees).",
        },
        "mixed_precision": accelerator.mixed_precision if accelerator is not None else "no",
        "num_processes": accelerator.num_processes if accelerator is not None else 1,
        "gms_hub_version": __version__,
    }


def _write_report(output_dir: Path, metrics, records, stats: EvaluationStats, info, *, num_samples: int, tta: bool) -> None:
    """`metrics.json`, `per_image.csv` and `reliability.png` (the main process only)."""
    from .reliability import reliability_diagram

    write_text_atomic(output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_per_image_csv(output_dir / "per_image.csv", records)
    count = metrics["passes_per_image"]
    passes = f"{count} pass{'es' if count > 1 else ''} per image" + (f" (N={num_samples}, TTA)" if tta else "")
    reliability_diagram(stats.calibration.bin_stats(), output_dir / "reliability.png",
                        title=f"{info.get('model', 'GMS') if info else 'GMS'}, {passes}")
