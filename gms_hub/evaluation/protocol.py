"""Running the paper's evaluation protocol over a dataset split, batched, sharded across processes, and its summary.

Used by `gms_hub.evaluation.report` (the folder `train/evaluate.py` writes: [`evaluate_to_folder`]) and by
`train/train.py` (model selection). The per-image scores come from [`gms_hub.evaluation.metrics`]; this module only feeds it:
the model's preprocessing (`EvalTransform` at the model's `image_size`), one prediction per batch (the paper's single pass,
or the mean over posterior samples and flips/turns of [`gms_hub.inference.uncertainty.predict_probabilities`]), and under
`accelerate launch` an interleaved shard of the split per process, gathered on every process without duplicates.

Every run also measures calibration and uncertainty ([`gms_hub.evaluation.calibration`]): ECE, Brier, error AUROC and the
per-image mean uncertainty, through streaming accumulators that are summed over the processes.

Multi-class models (`model.num_classes` K > 1, class probabilities (B, K+1, S, S)) are scored per foreground class
on label maps (arg-max); see [`summarize_records`] for the summary and `MULTICLASS_PROTOCOL` for the rules.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from .calibration import DEFAULT_AUROC_BINS, CalibrationAccumulator, ErrorAUROCAccumulator
from .metrics import dice_iou, dice_iou_batch, per_class_dice_iou, summarize, summarize_scores
from ..models.processing import resize_bilinear, resize_probabilities
from ..inference.uncertainty import predict_probabilities, predictive_entropy

logger = logging.getLogger(__name__)

MULTICLASS_PROTOCOL = (
    "Multi-class ({num_classes} foreground classes): image resized to {size}x{size} as in the binary protocol; "
    "prediction = arg-max of the class probabilities; ground truth = the class-index mask resized to {size}x{size} "
    "with PIL NEAREST. Per image and foreground class k: DSC and IoU of (pred == k) against (gt == k); a class absent "
    "from both the prediction and the ground truth of an image has no score there ('absent' in per_image.csv) and "
    "is left out of that class's mean. per_class[label]: mean and sample std (ddof 1) over the images where the "
    "class is scored (n). dsc_mean / iou_mean: the mean over foreground classes of the per-class means; dsc_std / "
    "iou_std: the sample std over images of each image's mean over its scored classes. Calibration uses the "
    "one-vs-rest foreground probability 1 - p(background) against gt > 0 (ECE, Brier, reliability diagram); a pixel "
    "is wrong for error_auroc when its arg-max label differs from the ground truth; uncertainty = entropy of the "
    "K+1 class probabilities / log(K+1)."
)


def _safe_file_name(name: str) -> str:
    # Names come from the datasets' split lists (`benign_1`, `testA_3`, ...); keep them, minus path separators.
    return str(name).replace("/", "_").replace("\\", "_") or "unnamed"


def model_num_classes(model) -> int:
    """`model.num_classes`; 1 (the paper's binary model) for stand-ins and models without the attribute."""
    return int(getattr(model, "num_classes", 1) or 1)


def class_labels(model, num_classes: int) -> List[str]:
    """Names of the foreground classes 1..K, from `model.id2label` (`class_<k>` where it has none)."""
    id2label = {int(k): str(v) for k, v in (getattr(model, "id2label", None) or {}).items()}
    return [id2label.get(k, f"class_{k}") for k in range(1, num_classes + 1)]


def check_dataset_classes(model, id2label: Optional[Dict[int, str]], dataset: str) -> None:
    """Fail early when a dataset's classes do not fit the model's; warn when only their names differ.

    Args:
        model ([`GMS`]): the model (`num_classes`, `id2label`).
        id2label (`dict[int, str]`, *optional*): the dataset's class names (`None` for binary masks), as
            `load_gms_dataset(..., return_id2label=True)` returns them.
        dataset (`str`): the dataset's name, for the message.

    Example:
        >>> split, id2label = load_gms_dataset("outputs/synthetic-mc", split="test", return_id2label=True)
        >>> check_dataset_classes(model, id2label, "outputs/synthetic-mc")
    """
    num_classes = model_num_classes(model)
    dataset_classes = 1 if id2label is None else len(id2label) - 1
    if dataset_classes != num_classes:
        raise ValueError(
            f"{dataset} has {dataset_classes} foreground class(es) ({id2label or 'binary masks'}), the model "
            f"{num_classes}. Evaluate a model trained on this dataset's classes."
        )
    model_labels = getattr(model, "id2label", None)
    if id2label is not None and model_labels and {int(k): str(v) for k, v in model_labels.items()} != id2label:
        logger.warning("The model's class names %s differ from the dataset's %s; metrics.json uses the model's.",
                       model_labels, id2label)


@dataclass
class EvaluationStats:
    """Pixel-level statistics of an evaluation, summed over every process (see [`evaluate_dataset`]).

    Args:
        calibration ([`CalibrationAccumulator`]): foreground probability vs ground truth (ECE, Brier, bins).
        error_auroc ([`ErrorAUROCAccumulator`]): uncertainty of wrong vs right pixels.
        seconds (`float`): wall time of the predictions (model passes only), summed over processes.
        images (`int`): images predicted.
    """

    calibration: CalibrationAccumulator = field(default_factory=CalibrationAccumulator)
    error_auroc: ErrorAUROCAccumulator = field(default_factory=lambda: ErrorAUROCAccumulator(DEFAULT_AUROC_BINS))
    seconds: float = 0.0
    images: int = 0

    def merge(self, other: "EvaluationStats") -> "EvaluationStats":
        """Add another process's statistics; returns `self`."""
        self.calibration.merge(other.calibration)
        self.error_auroc.merge(other.error_auroc)
        self.seconds += other.seconds
        self.images += other.images
        return self


def _gather_stats(stats: EvaluationStats, accelerator) -> EvaluationStats:
    from accelerate.utils import gather_object

    total = EvaluationStats(CalibrationAccumulator(stats.calibration.n_bins), ErrorAUROCAccumulator(stats.error_auroc.n_bins))
    for shard in gather_object([stats]):  # one per process
        total.merge(shard)
    return total


def evaluate_dataset(
    model: torch.nn.Module,
    dataset,
    *,
    batch_size: int = 8,
    threshold: Optional[float] = None,
    accelerator=None,
    original_resolution: bool = True,
    mask_dir: Union[None, str, os.PathLike] = None,
    num_workers: int = 0,
    progress: bool = False,
    num_samples: int = 0,
    tta: bool = False,
    generator: Optional[torch.Generator] = None,
    return_stats: bool = False,
):
    """Score a model on a dataset split with the paper's protocol, image by image.

    Each image goes through [`EvalTransform`] at `model.image_size` (bilinear resize, [-1, 1]); its ground truth
    is resized with PIL NEAREST and thresholded at 0.5; the prediction is `mask_probs > threshold`. With an
    `accelerator` running several processes, process `i` scores images `i, i + n, i + 2n, ...` and the
    results are gathered on every process (no padding, so no duplicates).

    The probabilities are those of `predict_probabilities(model, ..., num_samples, tta)`: with the defaults the
    paper's single pass, bit for bit. Each record also carries the image's mean uncertainty (normalised
    predictive entropy at the model's resolution). A multi-class model (`model.num_classes` K > 1) is scored
    per foreground class on label maps (`MULTICLASS_PROTOCOL`).

    Args:
        model ([`GMS`]): the model, already on its device (`accelerator.device` when one is given).
        dataset (`datasets.Dataset`): a split with `image`, `mask` and `name` columns (no transform set); masks
            are 0/255 for a binary model and class indices 0..K for a multi-class one.
        batch_size (`int`, defaults to 8): images per forward pass on each process (and decodes per chunk of
            `predict_probabilities` with sampling or TTA).
        threshold (`float`, *optional*): defaults to `model.threshold` (0.5, the paper's). Binary only.
        accelerator (`accelerate.Accelerator`, *optional*): shards the split and gathers the results; its
            `autocast()` applies the run's mixed-precision setting.
        original_resolution (`bool`, defaults to `True`): also score at each image's original size
            (probabilities resized bilinearly to (H, W), then `> threshold` or arg-max, against the original mask).
        mask_dir (`str` or `os.PathLike`, *optional*): write each predicted protocol mask (image_size x
            image_size; values 0/255, or class indices 0..K for multi-class) as `<name>.png` here; each process
            writes its own images.
        num_workers (`int`, defaults to 0): DataLoader workers.
        progress (`bool`, defaults to `False`): show a tqdm bar (on the main process).
        num_samples (`int`, defaults to 0): posterior samples per image (`predict_probabilities`).
        tta (`bool`, defaults to `False`): also average over the 8 flips and quarter turns.
        generator (`torch.Generator`, *optional*): the posterior noise of this process (on the model's device).
        return_stats (`bool`, defaults to `False`): also return the pixel-level [`EvaluationStats`], summed over
            the processes.

    Returns:
        `list[dict]`: one record per image, in dataset order: `index`, `name`, `dsc`, `iou`, `mean_uncertainty`
        and, with `original_resolution`, `dsc_original` and `iou_original`. Multi-class records add `per_class`
        (`{label: {"dsc", "iou"}}`, NaN where the class is absent from both maps) and their `dsc` / `iou` are the
        mean over the image's scored classes (NaN if none). With `return_stats`, a tuple `(records, stats)`.

    Example:
        >>> records = evaluate_dataset(model, load_gms_dataset("org/gms-busi", split="test"))
        >>> summarize_records(records)["dsc_mean"]
    """
    from tqdm.auto import tqdm

    threshold = float(model.threshold if threshold is None else threshold)
    num_classes = model_num_classes(model)
    run = _EvaluationRun.prepare(model, dataset, accelerator, batch_size, num_workers, num_classes)
    if mask_dir is not None:
        Path(mask_dir).mkdir(parents=True, exist_ok=True)

    was_training = model.training
    model.eval()
    records: List[Dict[str, Any]] = []
    stats = EvaluationStats()
    for batch in tqdm(run.loader, desc="Evaluating", disable=not (progress and run.is_main)):
        probs = _predict_batch(model, batch, run, stats, num_samples=num_samples, tta=tta, generator=generator,
                               batch_size=batch_size)  # (B, 1, S, S) or (B, K+1, S, S)
        scores = _score_batch(probs, batch, run.device, num_classes, threshold, stats)
        for i in range(probs.shape[0]):
            record, png = _image_record(run, scores, probs, batch, i, len(records), original_resolution, threshold)
            if mask_dir is not None:
                Image.fromarray(png, mode="L").save(Path(mask_dir) / f"{_safe_file_name(record['name'])}.png")
            records.append(record)
    model.train(was_training)

    records, stats = _gather_results(records, stats, accelerator, run.num_processes, len(dataset))
    return (records, stats) if return_stats else records


@dataclass
class _EvaluationRun:
    """What one process of an evaluation works on: its shard of the split, its loader and its device."""

    indices: List[int]  # dataset indices of this process's shard, in order
    loader: Any
    device: Any
    num_processes: int
    is_main: bool
    autocast: Any
    autocast_kwargs: Dict[str, Any]
    num_classes: int
    labels: List[str]

    @classmethod
    def prepare(cls, model, dataset, accelerator, batch_size: int, num_workers: int, num_classes: int):
        """Shard the split (process `i` takes images `i, i + n, ...`) and build its DataLoader."""
        from ..data import EvalTransform, collate_batch

        num_processes = accelerator.num_processes if accelerator is not None else 1
        process_index = accelerator.process_index if accelerator is not None else 0
        device = accelerator.device if accelerator is not None else model.device
        indices = list(range(process_index, len(dataset), num_processes))
        transform = EvalTransform(image_size=model.image_size, num_classes=num_classes)
        shard = dataset.select(indices).with_transform(transform)
        loader = torch.utils.data.DataLoader(shard, batch_size=batch_size, shuffle=False, collate_fn=collate_batch,
                                             num_workers=num_workers)
        autocast = accelerator.autocast if accelerator is not None else torch.autocast
        autocast_kwargs = {} if accelerator is not None else {"device_type": torch.device(device).type, "enabled": False}
        return cls(
            indices=indices,
            loader=loader,
            device=device,
            num_processes=num_processes,
            is_main=accelerator.is_main_process if accelerator is not None else True,
            autocast=autocast,
            autocast_kwargs=autocast_kwargs,
            num_classes=num_classes,
            labels=class_labels(model, num_classes) if num_classes > 1 else [],
        )


def _predict_batch(model, batch, run: _EvaluationRun, stats: EvaluationStats, **predict_kwargs) -> torch.Tensor:
    """The batch's probabilities (float32), timed into `stats` (model time only)."""
    pixel_values = batch["pixel_values"].to(run.device, dtype=model.dtype)  # (B, 3, S, S)
    started = time.perf_counter()
    with torch.no_grad(), run.autocast(**run.autocast_kwargs):
        probs = predict_probabilities(model, pixel_values, **predict_kwargs).float()  # (B, 1, S, S) or (B, K+1, S, S)
    probs = probs.clone()  # an inference-mode tensor otherwise, which in-place resizing below may not touch
    if probs.device.type == "cuda":
        torch.cuda.synchronize(probs.device)
    stats.seconds += time.perf_counter() - started
    stats.images += pixel_values.shape[0]
    return probs


def _score_batch(probs, batch, device, num_classes: int, threshold: float, stats: EvaluationStats) -> Dict[str, Any]:
    """Protocol-resolution scores of a batch; updates the calibration and error-AUROC accumulators."""
    if num_classes > 1:
        pred = probs.argmax(dim=1)  # (B, S, S) label maps
        gt = batch["masks"][:, 0].to(device).long()  # (B, S, S) class indices
        class_dsc, class_iou = (torch.as_tensor(v) for v in per_class_dice_iou(pred, gt, num_classes))  # (B, K)
        scores = {"pred": pred, "dsc": class_dsc, "iou": class_iou}
        foreground, target = 1.0 - probs[:, 0], gt > 0  # one-vs-rest (B, S, S)
        uncertainty = predictive_entropy(probs, num_classes=num_classes)  # (B, S, S)
    else:
        pred = probs > threshold  # (B, 1, S, S)
        gt = batch["masks"].to(device) > 0.5  # already {0, 1}: the protocol's >= 0.5 of the /255 mask
        dsc, iou = dice_iou_batch(pred, gt)
        scores = {"pred": pred, "dsc": dsc, "iou": iou}
        foreground, target = probs, gt
        uncertainty = predictive_entropy(probs)  # (B, 1, S, S)
    errors = pred != gt
    stats.calibration.update(foreground.clamp(0.0, 1.0), target)
    stats.error_auroc.update(uncertainty, errors)
    scores["mean_uncertainty"] = uncertainty.flatten(1).double().mean(dim=1)  # (B,)
    return scores


def _image_record(run: _EvaluationRun, scores, probs, batch, i: int, position: int, original_resolution: bool,
                  threshold: float):
    """Image `i` of a batch: its record (scores at the protocol's and the original resolution) and its mask PNG."""
    name = str(batch["name"][i])
    record = {"index": run.indices[position], "name": name}
    if run.num_classes > 1:
        record.update(_multiclass_scores(scores["dsc"][i], scores["iou"][i], run.labels))
        if original_resolution:
            orig = torch.from_numpy(np.asarray(batch["orig_mask"][i]).astype(np.int64))  # (H, W)
            full = resize_bilinear(probs[i : i + 1], tuple(orig.shape))[0].argmax(dim=0).cpu()  # (H, W)
            d, u = per_class_dice_iou(full[None], orig[None], run.num_classes)  # (1, K)
            record["dsc_original"], record["iou_original"] = _nanmean(d[0]), _nanmean(u[0])
        png = scores["pred"][i].cpu().numpy().astype(np.uint8)  # (S, S) class indices
    else:
        record["dsc"], record["iou"] = float(scores["dsc"][i]), float(scores["iou"][i])
        if original_resolution:
            orig = np.asarray(batch["orig_mask"][i]).astype(bool)  # (H, W)
            full = resize_probabilities(probs[i], orig.shape).cpu().numpy() > threshold
            record["dsc_original"], record["iou_original"] = dice_iou(full, orig)
        png = scores["pred"][i, 0].cpu().numpy().astype(np.uint8) * 255  # (S, S)
    record["mean_uncertainty"] = float(scores["mean_uncertainty"][i])
    return record, png


def _gather_results(records, stats, accelerator, num_processes: int, dataset_size: int):
    """Every process's records (in dataset order) and the summed statistics, checked for overlaps and gaps."""
    if num_processes > 1:
        from accelerate.utils import gather_object

        records = gather_object(records)
        stats = _gather_stats(stats, accelerator)
    records.sort(key=lambda r: r["index"])
    if [r["index"] for r in records] != list(range(dataset_size)):
        raise RuntimeError(f"Gathered {len(records)} results for a split of {dataset_size} images; shards overlap or are missing.")
    return records, stats


def _nanmean(values: torch.Tensor) -> float:
    finite = values[~torch.isnan(values)]
    return float(finite.mean()) if finite.numel() else float("nan")


def _multiclass_scores(dsc: torch.Tensor, iou: torch.Tensor, labels: Sequence[str]) -> Dict[str, Any]:
    return {
        "dsc": _nanmean(dsc), "iou": _nanmean(iou),
        "per_class": {label: {"dsc": float(d), "iou": float(u)} for label, d, u in zip(labels, dsc, iou)},
    }


def _summarize_finite(values: Sequence[float]) -> Dict[str, float]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return {"mean": None, "std": None, "n": 0}
    return summarize(finite)


def summarize_records(records: List[Dict[str, Any]], suffix: str = "") -> Dict[str, Any]:
    """The paper's summary (`dsc_mean`, `dsc_std`, `iou_mean`, `iou_std`, `n`) of [`evaluate_dataset`] records.

    Multi-class records (with `per_class`) summarise as `MULTICLASS_PROTOCOL` says: `per_class[label]` holds
    `dsc_mean`, `dsc_std`, `iou_mean`, `iou_std`, `n` (images where the class is scored) and `n_absent`;
    `dsc_mean` / `iou_mean` are the means of the per-class means; the stds are over the images' class means.

    Args:
        records (`list[dict]`): per-image results.
        suffix (`str`, defaults to `""`): `"_original"` summarises the original-resolution scores (image level).

    Returns:
        `dict`: mean and sample std (ddof 1) of DSC and IoU, and the number of images.

    Example:
        >>> summarize_records(records)["dsc_mean"], summarize_records(records, "_original")["dsc_mean"]
    """
    if not records or "per_class" not in records[0]:
        return summarize_scores([r["dsc" + suffix] for r in records], [r["iou" + suffix] for r in records])
    dsc, iou = _summarize_finite([r["dsc" + suffix] for r in records]), _summarize_finite([r["iou" + suffix] for r in records])
    summary: Dict[str, Any] = {"dsc_mean": dsc["mean"], "dsc_std": dsc["std"], "iou_mean": iou["mean"],
                               "iou_std": iou["std"], "n": len(records), "n_scored": dsc["n"]}
    if suffix:
        return summary
    per_class = {}
    for label in records[0]["per_class"]:
        d = _summarize_finite([r["per_class"][label]["dsc"] for r in records])
        u = _summarize_finite([r["per_class"][label]["iou"] for r in records])
        per_class[label] = {"dsc_mean": d["mean"], "dsc_std": d["std"], "iou_mean": u["mean"], "iou_std": u["std"],
                            "n": d["n"], "n_absent": len(records) - d["n"]}
    scored = [c for c in per_class.values() if c["n"] > 0]
    summary["dsc_mean"] = float(np.mean([c["dsc_mean"] for c in scored])) if scored else None
    summary["iou_mean"] = float(np.mean([c["iou_mean"] for c in scored])) if scored else None
    summary["per_class"] = per_class
    return summary
