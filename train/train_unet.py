#!/usr/bin/env python
"""Train a discriminative U-Net (MONAI `BasicUNet`) beside GMS, with train/train.py's data, budget and protocol.

    python train/train_unet.py --dataset outputs/mni152 --output_dir outputs/unet-mni152 --image_size 256 \\
        --max_train_steps 400 --train_batch_size 4

The comparison is fair by construction: the same splits (`gms_hub.training.load_training_splits`), the same
per-sample augmentation seeded by (seed, epoch, index) (`TrainTransform` in `SeededTrainDataset`), the same data
order (Accelerate's seedable sampler), the same learning-rate schedule (`begin_epoch`: warm-up then cosine, set
once per epoch), the same budget in optimisation steps (`--max_train_steps`, optionally capped in wall time with
`--max_train_seconds`), model selection on the validation split every `--validation_epochs`, and the paper's
evaluation protocol on the test split (`gms_hub.evaluation.report.evaluate_to_folder`, which writes the same
`metrics.json` as train/evaluate.py). Only the model and its loss differ: MONAI's `BasicUNet` (a library network,
not a hand-written one) trained with MONAI's `DiceCELoss` (cross-entropy + soft Dice; sigmoid for binary data,
softmax for multi-class), predicting at `--image_size`.

Writes to --output_dir: `metrics.json` and `per_image.csv` (test split), `model.safetensors` + `config.json` (the
selected weights and how to rebuild the network), `training_results.json` (validation history, wall time,
parameters). Needs `monai` (`pip install -r requirements-dev.txt`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence

import torch

logger = logging.getLogger("train_unet")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train MONAI's BasicUNet with train/train.py's data and protocol.")
    parser.add_argument("--dataset", type=str, required=True, help="Hub dataset id or local folder (gms_hub.data layout).")
    parser.add_argument("--test_dataset", type=str, default=None,
                        help="Score the test split of this dataset instead (e.g. a fresh synthetic test set).")
    parser.add_argument("--output_dir", type=str, required=True)
    parser.add_argument("--image_size", type=int, default=224, help="Side of the square input (train/train.py's flag).")
    parser.add_argument("--features", type=int, nargs=6, default=[16, 16, 32, 64, 128, 16],
                        help="BasicUNet channels per level (5 encoder levels and the last decoder level).")
    parser.add_argument("--max_train_steps", type=int, default=None, help="Optimisation steps (the budget).")
    parser.add_argument("--num_train_epochs", type=int, default=100, help="Used when --max_train_steps is not given.")
    parser.add_argument("--max_train_seconds", type=float, default=None, help="Also stop after this much wall time.")
    parser.add_argument("--train_batch_size", type=int, default=4)
    parser.add_argument("--eval_batch_size", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--lr_warmup_epochs", type=int, default=5)
    parser.add_argument("--adam_weight_decay", type=float, default=0.01)
    parser.add_argument("--validation_epochs", type=int, default=1)
    parser.add_argument("--select_on", type=str, default="validation", choices=["validation", "test"])
    parser.add_argument("--seed", type=int, default=2333)
    parser.add_argument("--num_threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
    args = parser.parse_args(argv)
    if args.image_size % 16:
        parser.error(f"--image_size must be a multiple of 16 (BasicUNet halves it four times), got {args.image_size}.")
    for name in ("train_batch_size", "eval_batch_size", "validation_epochs", "num_train_epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}.")
    flags = sys.argv[1:] if argv is None else argv
    args.command = "python " + shlex.join(["train/train_unet.py", *flags])
    return args


class UNetSegmenter(torch.nn.Module):
    """A MONAI `BasicUNet` with the interface `gms_hub.evaluation` scores (`mask_probs`, `image_size`, classes).

    Args:
        image_size (`int`): side of the square input.
        num_classes (`int`, defaults to 1): foreground classes; 1 gives one sigmoid channel, K > 1 gives K + 1
            softmax channels.
        id2label (`dict`, *optional*): class names (0 = background).
        features (`Sequence[int]`): `BasicUNet` channels.
        threshold (`float`, defaults to 0.5): binary threshold.
    """

    def __init__(self, image_size: int, num_classes: int = 1, id2label: Optional[Dict[int, str]] = None,
                 features: Sequence[int] = (16, 16, 32, 64, 128, 16), threshold: float = 0.5):
        super().__init__()
        from monai.networks.nets import BasicUNet

        self.image_size, self.num_classes, self.threshold = image_size, num_classes, threshold
        self.id2label = id2label
        self.features = tuple(features)
        out_channels = 1 if num_classes == 1 else num_classes + 1
        self.net = BasicUNet(spatial_dims=2, in_channels=3, out_channels=out_channels, features=self.features)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def forward(self, pixel_values: torch.Tensor) -> SimpleNamespace:
        logits = self.net(pixel_values)  # (B, 1 or K+1, S, S)
        probs = torch.sigmoid(logits) if self.num_classes == 1 else torch.softmax(logits, dim=1)
        return SimpleNamespace(logits=logits, mask_probs=probs)


def _loss_function(num_classes: int):
    from monai.losses import DiceCELoss

    if num_classes == 1:
        return DiceCELoss(sigmoid=True)
    return DiceCELoss(softmax=True, to_onehot_y=True)


def _targets(masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, 1, S, S) masks from the transform: {0, 1} floats for binary, class indices for multi-class."""
    return (masks > 0.5).float() if num_classes == 1 else masks.round().long()


def main(args: argparse.Namespace) -> Dict[str, Any]:
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from gms_hub.data import TrainTransform, collate_batch, load_gms_dataset
    from gms_hub.evaluation.protocol import evaluate_dataset, summarize_records
    from gms_hub.evaluation.report import evaluate_to_folder
    from gms_hub.training import SeededTrainDataset, begin_epoch, load_training_splits, resolve_id2label

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed))
    set_seed(args.seed)

    id2label = resolve_id2label(args.dataset, None)
    num_classes = 1 if id2label is None else len(id2label) - 1
    model = UNetSegmenter(args.image_size, num_classes, id2label, features=args.features).to(accelerator.device)
    num_parameters = sum(p.numel() for p in model.parameters())
    logger.info(f"BasicUNet, {num_parameters:,} trainable parameters, {num_classes} foreground class(es)")

    train_split, eval_splits = load_training_splits(args.dataset, select_on=args.select_on, seed=args.seed)
    transform = TrainTransform(image_size=args.image_size, augment=True, num_classes=num_classes)
    train_dataset = SeededTrainDataset(train_split, transform, seed=args.seed)
    loader = torch.utils.data.DataLoader(train_dataset, batch_size=args.train_batch_size, shuffle=True,
                                         drop_last=True, collate_fn=collate_batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.adam_weight_decay)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps_per_epoch = len(loader)
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * steps_per_epoch
    num_epochs = math.ceil(args.max_train_steps / steps_per_epoch)
    loss_function = _loss_function(num_classes)

    step, best, best_state, history = 0, None, None, []
    started = time.perf_counter()
    out_of_time = False
    progress = tqdm(range(args.max_train_steps), desc="U-Net steps")
    for epoch in range(num_epochs):
        lr = begin_epoch(epoch, optimizer, loader, base_lr=args.learning_rate, num_epochs=num_epochs,
                         warmup_epochs=args.lr_warmup_epochs)
        model.train()
        for batch in loader:
            logits = model(batch["pixel_values"]).logits  # (B, C, S, S)
            loss = loss_function(logits, _targets(batch["masks"], num_classes))
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            step += 1
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
            out_of_time = args.max_train_seconds is not None and time.perf_counter() - started > args.max_train_seconds
            if step >= args.max_train_steps or out_of_time:
                break
        finished = step >= args.max_train_steps or out_of_time or epoch == num_epochs - 1
        if (epoch + 1) % args.validation_epochs == 0 or finished:
            records = evaluate_dataset(model, eval_splits[args.select_on], batch_size=args.eval_batch_size,
                                       original_resolution=False)
            dsc = summarize_records(records)["dsc_mean"]
            history.append({"epoch": epoch, "step": step, f"{args.select_on}_dsc": dsc})
            logger.info(f"epoch {epoch} step {step}: {args.select_on} DSC {dsc:.4f}")
            if best is None or dsc > best["dsc"]:
                best = {"epoch": epoch, "step": step, "dsc": dsc}
                best_state = {k: v.detach().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
        if finished:
            break
    progress.close()
    train_seconds = time.perf_counter() - started

    model = accelerator.unwrap_model(model)
    model.load_state_dict(best_state)
    model.eval()
    save_file({k: v.contiguous() for k, v in best_state.items()}, str(output_dir / "model.safetensors"))
    config = {"model_type": "monai.networks.nets.BasicUNet", "image_size": args.image_size, "num_classes": num_classes,
              "id2label": {str(k): v for k, v in (id2label or {}).items()} or None, "features": list(model.features),
              "in_channels": 3, "threshold": model.threshold}
    (output_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    test_split = "test" if "test" in eval_splits or args.test_dataset else args.select_on
    test_data = load_gms_dataset(args.test_dataset, split="test") if args.test_dataset else eval_splits[test_split]
    info = {"model": "monai BasicUNet (train/train_unet.py)", "dataset": args.test_dataset or args.dataset, "split": test_split,
            "command": args.command, "trainable_parameters": num_parameters, "frozen_parameters": 0,
            "train_seconds": round(train_seconds, 1), "train_steps": step}
    metrics = evaluate_to_folder(model, test_data, output_dir, batch_size=args.eval_batch_size,
                                 write_masks=False, info=info)
    results = {"selection_split": args.select_on, "best": best, "history": history, "global_step": step,
               "train_seconds": train_seconds, "trainable_parameters": num_parameters,
               "train_samples": len(train_dataset), "command": args.command}
    (output_dir / "training_results.json").write_text(json.dumps(results, indent=2) + "\n")
    logger.info(f"{test_split}: DSC {metrics['dsc_mean']:.4f} ± {metrics['dsc_std']:.4f} (n = {metrics['n']}), "
                f"{metrics['seconds_per_image']:.4f} s per image; trained {train_seconds:.0f} s, {step} steps")
    for name, scores in metrics.get("per_class", {}).items():
        logger.info(f"  {name}: DSC {scores['dsc_mean']:.4f}, IoU {scores['iou_mean']:.4f}")
    return metrics


if __name__ == "__main__":
    main(parse_args())
