#!/usr/bin/env python
"""Train a small Stable-Diffusion-layout VAE (`diffusers.AutoencoderKL`) on images and binary masks.

GMS needs a frozen VAE whose encoder describes images and whose decoder turns mask latents back into sharp
binary masks. The paper uses the 83.65 M-parameter SD2 VAE; this script trains a ~1 M-parameter one with the
same layout (4 latent channels, four blocks, so 8x downsampling) from scratch, for offline demos and CI.

Every batch holds images and masks (masks as 3-channel images in [-1, 1], the way GMS encodes them).
Loss = L1 reconstruction of both + `kl_weight` * KL + `mask_weight` * (BCE + soft Dice) on the channel mean of
the decoded masks mapped to [0, 1] (the exact quantity `GMS.decode_mask` thresholds). At the end the latent
`scaling_factor` is set to 1 / std of the posterior means (images and masks), as SD did for its VAE, and the
model is saved with `save_pretrained`. The pieces (data, sampler, loss, scores) live in `gms_hub.training.vae`.

With `--num_classes K` (2 to 7) the masks are class-index masks, fed as colour codes (`gms_hub.models.coding`) the
way a multi-class GMS encodes them, and the mask terms are cross-entropy + per-class soft Dice on the class
probabilities of the decoded colours: a VAE for a K-class GMS. Synthetic data then has K kinds of structure.

    accelerate launch train/train_vae.py --output_dir outputs/vae --resolution 64 \
        --synthetic_num_train 1200 --synthetic_image_size 128 --random_crop --max_train_steps 2000

    accelerate launch train/train_vae.py --output_dir outputs/vae --dataset data/gms-synthetic --resolution 128

    accelerate launch train/train_vae.py --output_dir outputs/vae2 --num_classes 2 --resolution 64 \
        --synthetic_num_train 128 --block_out_channels 16 32 32 32 --norm_num_groups 4 --no_mid_block_attention \
        --train_batch_size 4 --learning_rate 3e-3 --image_weight 4 --mask_weight 2 --max_train_steps 200
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from gms_hub.training import checkpoints
from gms_hub.training.vae import (
    SeededBatchSampler,
    VAELossModule,
    build_vae,
    calibrate_scaling_factor,
    evaluate_vae,
    load_image_mask_arrays,
)

logger = get_logger(__name__)


def parse_args(input_args=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train a small SD-layout AutoencoderKL on images and masks (binary, or colour-coded classes).")
    data = parser.add_argument_group("data (a dataset folder / Hub id, or synthetic generation)")
    data.add_argument("--dataset", type=str, default=None, help="GMS dataset folder or Hub id; default: synthetic data.")
    data.add_argument("--train_split", type=str, default="train")
    data.add_argument("--validation_split", type=str, default="validation")
    data.add_argument("--synthetic_num_train", type=int, default=1000)
    data.add_argument("--synthetic_num_validation", type=int, default=64)
    data.add_argument("--synthetic_seed", type=int, default=2333)
    data.add_argument("--synthetic_image_size", type=int, default=None, help="Default: --resolution.")
    data.add_argument("--synthetic_kinds", type=str, nargs="+", default=None, help="Default: all kinds.")
    data.add_argument("--resolution", type=int, default=64, help="Training crop/resize size, a multiple of 8.")
    data.add_argument(
        "--num_classes", type=int, default=1,
        help="Foreground classes: 1 for binary masks (0/255); 2 to 7 for class-index masks, trained as colour codes.",
    )
    data.add_argument(
        "--random_crop", action="store_true",
        help="Train on random --resolution crops of larger images instead of resizing them (cheaper per step; "
        "pair with --no_mid_block_attention so the VAE stays fully convolutional).",
    )
    model = parser.add_argument_group("model")
    model.add_argument("--pretrained_vae", type=str, default=None, help="Start from this diffusers VAE folder.")
    model.add_argument("--block_out_channels", type=int, nargs=4, default=[16, 32, 64, 64])
    model.add_argument("--layers_per_block", type=int, default=1)
    model.add_argument("--norm_num_groups", type=int, default=8)
    model.add_argument("--no_mid_block_attention", action="store_true", help="Drop the mid-block self-attention.")
    loss = parser.add_argument_group("loss")
    loss.add_argument("--kl_weight", type=float, default=1e-6)
    loss.add_argument("--mask_weight", type=float, default=1.0, help="Weight of BCE + soft Dice on decoded masks.")
    loss.add_argument("--image_weight", type=float, default=1.0, help="Weight of the image L1 term.")
    train = parser.add_argument_group("training")
    train.add_argument("--output_dir", type=str, required=True)
    train.add_argument("--seed", type=int, default=2333)
    train.add_argument("--train_batch_size", type=int, default=16, help="Images per batch (plus as many masks).")
    train.add_argument("--max_train_steps", type=int, default=2000)
    train.add_argument("--learning_rate", type=float, default=2e-3)
    train.add_argument("--lr_scheduler", type=str, default="cosine")
    train.add_argument("--lr_warmup_steps", type=int, default=50)
    train.add_argument("--adam_weight_decay", type=float, default=0.0)
    train.add_argument("--max_grad_norm", type=float, default=1.0)
    train.add_argument("--gradient_accumulation_steps", type=int, default=1)
    train.add_argument("--mixed_precision", type=str, default=None, choices=["no", "fp16", "bf16"])
    train.add_argument("--checkpointing_steps", type=int, default=500)
    train.add_argument("--checkpoints_total_limit", type=int, default=2)
    train.add_argument("--resume_from_checkpoint", type=str, default=None, help='A checkpoint folder or "latest".')
    train.add_argument("--validation_steps", type=int, default=250)
    train.add_argument("--num_threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
    train.add_argument("--report_to", type=str, default="tensorboard")
    train.add_argument("--logging_dir", type=str, default="logs")
    args = parser.parse_args(input_args)
    if args.resolution % 8:
        parser.error(f"--resolution must be a multiple of 8 (the VAE downsamples 8x), got {args.resolution}.")
    if args.synthetic_image_size is None:
        args.synthetic_image_size = args.resolution
    if args.num_classes != 1:
        from gms_hub.models.coding import MAX_CODED_CLASSES

        if not 2 <= args.num_classes <= MAX_CODED_CLASSES:
            parser.error(f"--num_classes must be 1 (binary) or 2 to {MAX_CODED_CLASSES} (colour code), got {args.num_classes}.")
    return args


# ----------------------------------------------------------------------------------------- main
def main(args: argparse.Namespace) -> None:
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to in (None, "none") else args.report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)),
    )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    set_seed(args.seed)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)

    train_count, val_count = args.synthetic_num_train, args.synthetic_num_validation
    data_kwargs = dict(image_size=args.synthetic_image_size, synthetic_seed=args.synthetic_seed,
                       synthetic_kinds=args.synthetic_kinds, num_classes=args.num_classes)  # datasets too are resized to one size (>= resolution)
    train_images, train_masks = load_image_mask_arrays(args.dataset, args.train_split, count=train_count, **data_kwargs)
    val_images, val_masks = load_image_mask_arrays(args.dataset, args.validation_split, count=val_count, **data_kwargs)
    if args.random_crop and train_images.shape[-1] < args.resolution:
        raise ValueError(f"--random_crop needs images >= --resolution {args.resolution}, got {train_images.shape[-1]} px.")
    logger.info(f"{len(train_images)} training and {len(val_images)} validation examples at {train_images.shape[-1]} px")

    vae = build_vae(
        pretrained_vae=args.pretrained_vae, block_out_channels=args.block_out_channels,
        layers_per_block=args.layers_per_block, norm_num_groups=args.norm_num_groups, sample_size=args.resolution,
        mid_block_attention=not args.no_mid_block_attention,
    )
    logger.info(f"AutoencoderKL with {sum(p.numel() for p in vae.parameters()):,} parameters")
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.learning_rate, weight_decay=args.adam_weight_decay)
    lr_scheduler = get_scheduler(
        args.lr_scheduler, optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    sampler = SeededBatchSampler(
        train_images, train_masks, args.train_batch_size, args.resolution, args.random_crop,
        seed=args.seed, rank=accelerator.process_index, num_classes=args.num_classes,
    )
    model, optimizer, lr_scheduler = accelerator.prepare(
        VAELossModule(vae, image_weight=args.image_weight, kl_weight=args.kl_weight, mask_weight=args.mask_weight,
                      num_classes=args.num_classes),
        optimizer, lr_scheduler,
    )
    accelerator.register_for_checkpointing(sampler)
    if accelerator.is_main_process and accelerator.log_with:
        accelerator.init_trackers("train_vae", config={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))})

    global_step = 0
    checkpoint = checkpoints.resolve_checkpoint(args.output_dir, args.resume_from_checkpoint)
    if args.resume_from_checkpoint and checkpoint is None:
        logger.info("No checkpoint to resume from; starting a new run.")
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        global_step = checkpoints.read_state(checkpoint)["global_step"]
        logger.info(f"Resumed from {checkpoint} at step {global_step}")

    progress = tqdm(range(args.max_train_steps), initial=global_step, desc="VAE steps", disable=not accelerator.is_local_main_process)
    model.train()
    while global_step < args.max_train_steps:
        images, masks = sampler.sample()
        images, masks = images.to(accelerator.device), masks.to(accelerator.device)
        with accelerator.accumulate(model):
            terms = model(images, masks)
            accelerator.backward(terms["loss"])
            if accelerator.sync_gradients and args.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        if not accelerator.sync_gradients:
            continue
        global_step += 1
        progress.update(1)
        logs = {k: float(v.detach()) for k, v in terms.items()} | {"lr": lr_scheduler.get_last_lr()[0]}
        progress.set_postfix(loss=f"{logs['loss']:.4f}", dice=f"{logs['dice_loss']:.4f}")
        accelerator.log(logs, step=global_step)
        if args.checkpointing_steps and global_step % args.checkpointing_steps == 0:  # on every process
            checkpoints.save_checkpoint(
                accelerator, args.output_dir, {"global_step": global_step}, args.checkpoints_total_limit or None
            )
        if accelerator.is_main_process and args.validation_steps and global_step % args.validation_steps == 0:
            model.eval()
            metrics = evaluate_vae(vae, val_images.to(accelerator.device), val_masks.to(accelerator.device),
                                   num_classes=args.num_classes)
            model.train()
            logger.info(f"step {global_step}: validation {metrics}")
            scalars = {f"val_{k}": v for k, v in metrics.items() if not isinstance(v, list)}
            scalars.update({f"val_mask_dsc_class_{i + 1}": v for i, v in enumerate(metrics.get("mask_dsc_per_class", []))})
            accelerator.log(scalars, step=global_step)

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        vae = accelerator.unwrap_model(model).vae.eval()
        metrics = evaluate_vae(vae, val_images.to(accelerator.device), val_masks.to(accelerator.device),
                               num_classes=args.num_classes)
        metrics["scaling_factor"] = calibrate_scaling_factor(vae, metrics["latent_std"])  # SD's unit-variance latents
        vae.save_pretrained(args.output_dir, safe_serialization=True)
        metrics["steps"] = global_step
        Path(args.output_dir, "vae_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        logger.info(f"Saved the VAE to {args.output_dir}: {metrics}")
    accelerator.wait_for_everyone()  # no process may tear the process group down while the main one still saves
    # Drop the DDP wrapper (its reducer holds the process group) while the group is alive: freed after
    # end_training destroys the group, the reducer's destructor can deadlock at exit.
    del model, optimizer, lr_scheduler
    accelerator.free_memory()
    accelerator.end_training()


if __name__ == "__main__":
    main(parse_args())
