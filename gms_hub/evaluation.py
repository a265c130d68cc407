"""Running the paper's evaluation protocol over a dataset split, batched, sharded across processes.

Used by `train/evaluate.py` (the evaluation entry point: [`evaluate_to_folder`]) and by `train/train.py` (model
selection). The per-image scores come from [`gms_hub.metrics`]; this module only feeds it: the model's
preprocessing (`EvalTransform` at the model's `image_size`), one forward pass per batch, and under `accelerate
launch` an interleaved shard of the split per process, gathered on every process without duplicates.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch
from PIL import Image

from .metrics import dice_iou, dice_iou_batch, summarize_scores
from .processing import resize_probabilities

logger = logging.getLogger(__name__)


def _safe_file_name(name: str) -> str:
    # Names come from the datasets' split lists (`benign_1`, `testA_3`, ...); keep them, minus path separators.
    return str(name).replace("/", "_").replace("\\", "_") or "unnamed"


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
) -> List[Dict[str, Any]]:
    """Score a model on a dataset split with the paper's protocol, image by image.

    Each image goes through [`EvalTransform`] at `model.image_size` (bilinear resize, [-1, 1]); its ground truth
    is resized with PIL NEAREST and thresholded at 0.5; the prediction is `mask_probs > threshold`. With an
    `accelerator` running several processes, process `i` scores images `i, i + n, i + 2n, ...` and the
    results are gathered on every process (no padding, so no duplicates).

    Args:
        model ([`GMS`]): the model, already on its device (`accelerator.device` when one is given).
        dataset (`datasets.Dataset`): a split with `image`, `mask` and `name` columns (no transform set).
        batch_size (`int`, defaults to 8): images per forward pass on each process.
        threshold (`float`, *optional*): defaults to `model.threshold` (0.5, the paper's).
        accelerator (`accelerate.Accelerator`, *optional*): shards the split and gathers the results; its
            `autocast()` applies the run's mixed-precision setting.
        original_resolution (`bool`, defaults to `True`): also score at each image's original size
            (probabilities resized bilinearly to (H, W), then `> threshold`, against the original mask).
        mask_dir (`str` or `os.PathLike`, *optional*): write each predicted protocol mask (image_size x
            image_size, values 0/255) as `<name>.png` here; each process writes its own images.
        num_workers (`int`, defaults to 0): DataLoader workers.
        progress (`bool`, defaults to `False`): show a tqdm bar (on the main process).

    Returns:
        `list[dict]`: one record per image, in dataset order: `index`, `name`, `dsc`, `iou` and, with
        `original_resolution`, `dsc_original` and `iou_original`.

    Example:
        >>> records = evaluate_dataset(model, load_gms_dataset("org/gms-busi", split="test"))
        >>> summarize_records(records)["dsc_mean"]
    """
    from tqdm.auto import tqdm

    from .data import EvalTransform, collate_batch

    threshold = float(model.threshold if threshold is None else threshold)
    num_processes = accelerator.num_processes if accelerator is not None else 1
    process_index = accelerator.process_index if accelerator is not None else 0
    is_main = accelerator.is_main_process if accelerator is not None else True
    device = accelerator.device if accelerator is not None else model.device
    indices = list(range(process_index, len(dataset), num_processes))
    shard = dataset.select(indices).with_transform(EvalTransform(image_size=model.image_size))
    loader = torch.utils.data.DataLoader(shard, batch_size=batch_size, shuffle=False, collate_fn=collate_batch, num_workers=num_workers)
    if mask_dir is not None:
        Path(mask_dir).mkdir(parents=True, exist_ok=True)
    autocast = accelerator.autocast if accelerator is not None else torch.autocast
    autocast_kwargs = {} if accelerator is not None else {"device_type": torch.device(device).type, "enabled": False}

    was_training = model.training
    model.eval()
    records: List[Dict[str, Any]] = []
    position = 0
    for batch in tqdm(loader, desc="Evaluating", disable=not (progress and is_main)):
        pixel_values = batch["pixel_values"].to(device, dtype=model.dtype)  # (B, 3, S, S)
        with torch.no_grad(), autocast(**autocast_kwargs):
            probs = model(pixel_values).mask_probs.float()  # (B, 1, S, S)
        pred = probs > threshold
        gt = batch["masks"].to(device) > 0.5  # already {0, 1}: the protocol's >= 0.5 of the /255 mask
        dsc, iou = dice_iou_batch(pred, gt)
        for i in range(pixel_values.shape[0]):
            name = str(batch["name"][i])
            record = {"index": indices[position], "name": name, "dsc": float(dsc[i]), "iou": float(iou[i])}
            if original_resolution:
                orig = np.asarray(batch["orig_mask"][i]).astype(bool)  # (H, W)
                full = resize_probabilities(probs[i], orig.shape).cpu().numpy() > threshold
                record["dsc_original"], record["iou_original"] = dice_iou(full, orig)
            if mask_dir is not None:
                png = pred[i, 0].cpu().numpy().astype(np.uint8) * 255  # (S, S)
                Image.fromarray(png, mode="L").save(Path(mask_dir) / f"{_safe_file_name(name)}.png")
            records.append(record)
            position += 1
    model.train(was_training)

    if num_processes > 1:
        from accelerate.utils import gather_object

        records = gather_object(records)
    records.sort(key=lambda r: r["index"])
    if [r["index"] for r in records] != list(range(len(dataset))):
        raise RuntimeError(f"Gathered {len(records)} results for a split of {len(dataset)} images; shards overlap or are missing.")
    return records


def summarize_records(records: List[Dict[str, Any]], suffix: str = "") -> Dict[str, float]:
    """The paper's summary (`dsc_mean`, `dsc_std`, `iou_mean`, `iou_std`, `n`) of [`evaluate_dataset`] records.

    Args:
        records (`list[dict]`): per-image results.
        suffix (`str`, defaults to `""`): `"_original"` summarises the original-resolution scores.

    Returns:
        `dict`: mean and sample std (ddof 1) of DSC and IoU, and the number of images.

    Example:
        >>> summarize_records(records)["dsc_mean"], summarize_records(records, "_original")["dsc_mean"]
    """
    return summarize_scores([r["dsc" + suffix] for r in records], [r["iou" + suffix] for r in records])


#: Columns of `per_image.csv`, in order.
PER_IMAGE_COLUMNS = ("name", "dsc", "iou", "dsc_original", "iou_original")


def write_per_image_csv(path: Union[str, os.PathLike], records: List[Dict[str, Any]]) -> None:
    """Write [`evaluate_dataset`] records as a CSV (`name,dsc,iou,dsc_original,iou_original`, scores to 6 decimals).

    Args:
        path (`str` or `os.PathLike`): the CSV file to write.
        records (`list[dict]`): per-image results.

    Example:
        >>> write_per_image_csv("eval/per_image.csv", records)
    """
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(PER_IMAGE_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for record in records:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in record.items()})


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
) -> Dict[str, Any]:
    """Score a model on a split with the paper's protocol and write the results to a folder.

    Writes `metrics.json` (the paper's summary, the same at each image's original resolution, the protocol in
    words, and `info`), `per_image.csv` and, with `write_masks`, `masks/<name>.png` (the protocol masks,
    image_size x image_size, 0/255). Under `accelerate launch` the split is sharded; the files are written once.

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

    Returns:
        `dict`: the contents of `metrics.json`.

    Example:
        >>> metrics = evaluate_to_folder(model, load_gms_dataset("org/gms-busi", split="test"), "eval-busi")
        >>> metrics["dsc_mean"], metrics["original_resolution"]["dsc_mean"]
    """
    from . import __version__
    from .metrics import PROTOCOL_DESCRIPTION

    output_dir = Path(output_dir)
    is_main = accelerator.is_main_process if accelerator is not None else True
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
    records = evaluate_dataset(
        model, dataset, batch_size=batch_size, threshold=model.threshold, accelerator=accelerator,
        original_resolution=True, mask_dir=output_dir / "masks" if write_masks else None,
        num_workers=num_workers, progress=progress,
    )
    metrics = {
        **summarize_records(records),
        **(info or {}),
        "image_size": model.image_size,
        "threshold": model.threshold,
        "protocol": PROTOCOL_DESCRIPTION.format(size=model.image_size, threshold=model.threshold),
        "original_resolution": {
            **summarize_records(records, suffix="_original"),
            "protocol": "Probabilities resized bilinearly to each image's original (H, W), then > threshold, "
                        "against the original ground-truth mask (not the paper's protocol; what a user sees).",
        },
        "mixed_precision": accelerator.mixed_precision if accelerator is not None else "no",
        "num_processes": accelerator.num_processes if accelerator is not None else 1,
        "gms_hub_version": __version__,
    }
    if is_main:
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        write_per_image_csv(output_dir / "per_image.csv", records)
    return metrics
