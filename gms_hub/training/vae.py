"""Training a small Stable-Diffusion-layout VAE (`diffusers.AutoencoderKL`) on images and masks.

GMS needs a frozen VAE whose encoder describes images and whose decoder turns mask latents back into sharp binary
masks. The paper uses the 83.65 M-parameter SD2 VAE; `train/train_vae.py` trains a ~1 M-parameter one with the
same layout (4 latent channels, four blocks, so 8x downsampling) from scratch, for offline demos and CI, from the
pieces here: in-memory data ([`load_image_mask_arrays`]) drawn by a resumable [`SeededBatchSampler`], the loss
([`vae_loss`]), the validation scores ([`evaluate_vae`]) and SD's latent scaling ([`calibrate_scaling_factor`]).

Masks are binary by default (`num_classes=1`: white on black, the paper's encoding). With `num_classes=K` (2 to 7)
they are class-index masks, rendered as colour codes ([`gms_hub.models.coding.encode_class_mask`]) the way a multi-class
GMS encodes them, and the mask terms of the loss and the scores read class probabilities from the decoded colours
([`gms_hub.models.coding.decode_class_probabilities`]): a VAE trained so reproduces the coded masks a multi-class GMS maps
to. The binary path does not change with this option.
"""

from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from ..models.coding import decode_class_probabilities, encode_class_mask, one_hot_foreground
from ..inference.fast import mask_probabilities  # decoded RGB -> probabilities, exactly as GMS.decode_mask
from .losses import soft_dice_loss
from ..evaluation.metrics import dice_iou_batch

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------- data
def to_uint8_pair(image, mask, size: int, num_classes: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """PIL image and mask -> uint8 (3, size, size) image and bool (1, size, size) mask.

    The image is resized bilinearly as GMS does ([`~gms_hub.models.processing.preprocess`]); the mask with PIL's
    NEAREST rule, then thresholded at 128 (binary) or kept as class indices (multi-class).

    Args:
        image (`PIL.Image.Image`): the image.
        mask (`PIL.Image.Image`): its mask (0/255, or class indices 0..K when `num_classes` > 1).
        size (`int`): output side.
        num_classes (`int`, defaults to 1): foreground classes; above 1 the mask holds class indices.

    Returns:
        `tuple`: the image (3, size, size) uint8 and the mask (1, size, size): bool (binary) or uint8 class
        indices (multi-class).

    Example:
        >>> image_u8, mask = to_uint8_pair(row["image"], row["mask"], 64)
    """
    from ..models.processing import preprocess

    pixel_values, _ = preprocess([image], size)  # (1, 3, S, S) in [-1, 1], bilinear as GMS does
    image_u8 = ((pixel_values[0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    if num_classes > 1:
        index = torch.from_numpy(np.array(mask.convert("L"), dtype=np.uint8))[None, None].float()  # (1, 1, H, W)
        index = F.interpolate(index, size=(size, size), mode="nearest-exact")[0]  # (1, S, S), PIL NEAREST rule
        if int(index.max()) > num_classes:
            raise ValueError(
                f"A mask holds class index {int(index.max())}, more than num_classes={num_classes}; pass the "
                "dataset's number of foreground classes."
            )
        return image_u8, index.to(torch.uint8)
    m = torch.from_numpy(np.asarray(mask.convert("L")) >= 128)[None, None].float()  # (1, 1, H, W)
    m = F.interpolate(m, size=(size, size), mode="nearest-exact")[0] > 0.5  # PIL NEAREST rule
    return image_u8, m


def load_image_mask_arrays(
    dataset: Optional[str],
    split: str,
    *,
    image_size: int,
    count: int = 1000,
    synthetic_seed: int = 2333,
    synthetic_kinds: Optional[Sequence[str]] = None,
    num_classes: int = 1,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, S, S) uint8 and masks (N, 1, S, S) bool (or uint8 class indices) of one split, in memory.

    Args:
        dataset (`str`, *optional*): a GMS dataset folder or Hub id; `None` generates synthetic examples
            ([`gms_hub.data.synthetic.generate_split`]).
        split (`str`): the split.
        image_size (`int`): every example is resized to this side.
        count (`int`, defaults to 1000): number of synthetic examples (ignored for a dataset).
        synthetic_seed (`int`, defaults to 2333): seed of the synthetic examples.
        synthetic_kinds (`list[str]`, *optional*): synthetic kinds (default: all).
        num_classes (`int`, defaults to 1): foreground classes. Above 1 the masks are class indices: synthetic
            examples are drawn with that many kinds of structure (2 or 3), a dataset must hold index masks.

    Returns:
        `tuple`: images (N, 3, S, S) uint8 and masks (N, 1, S, S), bool for binary and uint8 class indices for
        multi-class.

    Example:
        >>> images, masks = load_image_mask_arrays(None, "train", image_size=64, count=100)
    """
    if dataset is None:
        from ..data.synthetic import generate_split

        columns = generate_split(split, count, seed=synthetic_seed, image_size=image_size, kinds=synthetic_kinds,
                                 num_classes=num_classes)
        pairs = zip(columns["image"], columns["mask"])
    else:
        from ..data import load_gms_dataset

        rows = load_gms_dataset(dataset, split=split)
        pairs = ((row["image"], row["mask"]) for row in rows)
    images, masks = zip(*(to_uint8_pair(image, mask, image_size, num_classes) for image, mask in pairs))
    return torch.stack(images), torch.stack(masks)


class SeededBatchSampler:
    """Random batches from in-memory tensors, with flips / 90-degree rotations and optional random crops.

    Batch ``i`` of process ``rank`` comes from its own generator seeded by ``(seed, rank, i)``, so the state to
    checkpoint is one counter, the same on every process, and a resumed run draws exactly the batches it would
    have. Register it with `accelerator.register_for_checkpointing` (it has `state_dict` / `load_state_dict`).

    Args:
        images (`torch.Tensor`): (N, 3, S, S) uint8.
        masks (`torch.Tensor`): (N, 1, S, S) bool, or uint8 class indices when `num_classes` > 1.
        batch_size (`int`): examples per batch.
        resolution (`int`): side of the batches.
        random_crop (`bool`): crop random `resolution` windows from larger images instead of resizing them.
        seed (`int`): the run's seed.
        rank (`int`, defaults to 0): the process index.
        num_classes (`int`, defaults to 1): foreground classes; above 1 the masks come out colour-coded
            ([`gms_hub.models.coding.encode_class_mask`]).

    Example:
        >>> sampler = SeededBatchSampler(images, masks, 16, 64, random_crop=False, seed=2333)
        >>> images, masks = sampler.sample()  # (16, 3, 64, 64), (16, 3, 64, 64) in [-1, 1]
    """

    def __init__(self, images, masks, batch_size: int, resolution: int, random_crop: bool, seed: int, rank: int = 0,
                 num_classes: int = 1):
        self.images, self.masks, self.num_classes = images, masks, num_classes
        self.batch_size, self.resolution, self.random_crop = batch_size, resolution, random_crop
        self.seed, self.rank, self.batches_drawn = seed, rank, 0
        self.generator = torch.Generator()

    def state_dict(self):
        return {"batches_drawn": self.batches_drawn}

    def load_state_dict(self, state):
        self.batches_drawn = int(state["batches_drawn"])

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.generator))

    def sample(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, R, R) images and (B, 3, R, R) masks (white on black, or colour-coded), both float in [-1, 1]."""
        seed = np.random.SeedSequence([self.seed, self.rank, self.batches_drawn]).generate_state(1)[0]
        self.generator.manual_seed(int(seed))
        self.batches_drawn += 1
        index = torch.randint(len(self.images), (self.batch_size,), generator=self.generator)
        images = self.images[index].float() / 127.5 - 1  # (B, 3, S, S)
        if self.num_classes > 1:
            masks = encode_class_mask(self.masks[index][:, 0].long(), self.num_classes)  # (B, 3, S, S) in {-1, 1}
        else:
            masks = self.masks[index].float().expand(-1, 3, -1, -1) * 2 - 1  # (B, 3, S, S)
        size, r = images.shape[-1], self.resolution
        if size != r:
            if self.random_crop and size > r:
                y, x = self._randint(size - r + 1), self._randint(size - r + 1)
                images, masks = images[..., y : y + r, x : x + r], masks[..., y : y + r, x : x + r]
            else:
                images = F.interpolate(images, size=(r, r), mode="bilinear", align_corners=False, antialias=False)
                masks = F.interpolate(masks, size=(r, r), mode="nearest-exact")
        if self._randint(2):
            images, masks = images.flip(-1), masks.flip(-1)
        if self._randint(2):
            images, masks = images.flip(-2), masks.flip(-2)
        k = self._randint(4)
        return images.rot90(k, (-2, -1)).contiguous(), masks.rot90(k, (-2, -1)).contiguous()


# ----------------------------------------------------------------------------------------- model and loss
def build_vae(
    *,
    pretrained_vae: Optional[str] = None,
    block_out_channels: Sequence[int] = (16, 32, 64, 64),
    layers_per_block: int = 1,
    norm_num_groups: int = 8,
    sample_size: int = 64,
    mid_block_attention: bool = True,
) -> AutoencoderKL:
    """A new SD-layout `AutoencoderKL` (4 latent channels, four blocks, so 8x downsampling), or a saved one.

    Args:
        pretrained_vae (`str`, *optional*): start from this diffusers VAE folder instead (the other arguments
            are then ignored).
        block_out_channels (`tuple[int]`, defaults to `(16, 32, 64, 64)`): widths of the four blocks.
        layers_per_block (`int`, defaults to 1): ResNet layers per block.
        norm_num_groups (`int`, defaults to 8): GroupNorm groups.
        sample_size (`int`, defaults to 64): the training resolution, recorded in the config.
        mid_block_attention (`bool`, defaults to `True`): keep the mid-block self-attention.

    Returns:
        `AutoencoderKL`: the VAE.

    Example:
        >>> vae = build_vae(block_out_channels=(8, 16, 16, 16), norm_num_groups=4, sample_size=32)
    """
    if pretrained_vae:
        return AutoencoderKL.from_pretrained(pretrained_vae)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,  # SD layout: 4 latent channels, four blocks -> 8x downsampling
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        norm_num_groups=norm_num_groups,
        sample_size=sample_size,
        mid_block_add_attention=mid_block_attention,
    )


def vae_loss(
    vae: AutoencoderKL,
    images: torch.Tensor,
    masks: torch.Tensor,
    *,
    image_weight: float = 1.0,
    kl_weight: float = 1e-6,
    mask_weight: float = 1.0,
    num_classes: int = 1,
) -> Dict[str, torch.Tensor]:
    """Reconstruction (images and masks) + KL + mask sharpness (BCE or cross-entropy, + soft Dice); returns all terms.

    loss = `image_weight` * L1(images) + L1(masks) + `kl_weight` * KL (per pixel, so the weight does not depend on
    the resolution) + `mask_weight` * mask terms. Binary: BCE + soft Dice on the channel mean of the decoded masks
    mapped to [0, 1] (the exact quantity `GMS.decode_mask` thresholds). Multi-class: cross-entropy + the mean over
    foreground classes of each class's soft Dice, on the class probabilities of the decoded colours (the exact
    quantity a multi-class GMS takes the arg-max of).

    Args:
        vae (`AutoencoderKL`): the VAE being trained.
        images (`torch.Tensor`): (B, 3, R, R) in [-1, 1].
        masks (`torch.Tensor`): (B, 3, R, R) in {-1, 1}: binary masks as 3-channel images, or colour-coded class
            masks ([`gms_hub.models.coding.encode_class_mask`]) when `num_classes` > 1.
        image_weight (`float`, defaults to 1.0), kl_weight (`float`, defaults to 1e-6), mask_weight (`float`,
            defaults to 1.0): the weights of the terms.
        num_classes (`int`, defaults to 1): foreground classes.

    Returns:
        `dict`: `loss`, `image_l1`, `mask_l1`, `kl`, `dice_loss`, and `bce` (binary) or `ce` (multi-class): scalars.

    Example:
        >>> vae_loss(vae, images, masks)["loss"].backward()
    """
    batch = torch.cat([images, masks])  # (2B, 3, R, R)
    posterior = vae.encode(batch).latent_dist
    decoded = vae.decode(posterior.sample()).sample  # (2B, 3, R, R)
    b = images.shape[0]
    image_l1 = (decoded[:b] - images).abs().mean()
    mask_l1 = (decoded[b:] - masks).abs().mean()
    kl = posterior.kl().mean() / batch[0].numel()  # per pixel, so kl_weight does not depend on resolution
    if num_classes > 1:
        probs = decode_class_probabilities(decoded[b:], num_classes)  # (B, K+1, R, R), sums to 1 over dim 1
        index = decode_class_probabilities(masks, num_classes).argmax(1)  # (B, R, R): exact codes read back exactly
        ce = F.nll_loss(torch.log(probs.clamp_min(1e-6)), index)
        target = one_hot_foreground(index, num_classes, dtype=probs.dtype)  # (B, K, R, R)
        dice = torch.stack([soft_dice_loss(probs[:, k + 1], target[:, k]) for k in range(num_classes)]).mean()
        loss = image_weight * image_l1 + mask_l1 + kl_weight * kl + mask_weight * (ce + dice)
        return {"loss": loss, "image_l1": image_l1, "mask_l1": mask_l1, "kl": kl, "ce": ce, "dice_loss": dice}
    target = (masks[:, :1] > 0).float()  # (B, 1, R, R)
    probs = mask_probabilities(decoded[b:])
    bce = F.binary_cross_entropy(probs.clamp(1e-4, 1 - 1e-4), target)
    dice = soft_dice_loss(probs, target)
    loss = image_weight * image_l1 + mask_l1 + kl_weight * kl + mask_weight * (bce + dice)
    return {"loss": loss, "image_l1": image_l1, "mask_l1": mask_l1, "kl": kl, "bce": bce, "dice_loss": dice}


class VAELossModule(torch.nn.Module):
    """The VAE with [`vae_loss`] as its forward, so DDP sees one forward call per step.

    Args:
        vae (`AutoencoderKL`): the VAE being trained.
        image_weight, kl_weight, mask_weight, num_classes: as in [`vae_loss`].

    Example:
        >>> model = accelerator.prepare(VAELossModule(vae, kl_weight=1e-6))
        >>> terms = model(images, masks)
    """

    def __init__(self, vae: AutoencoderKL, *, image_weight: float = 1.0, kl_weight: float = 1e-6, mask_weight: float = 1.0,
                 num_classes: int = 1):
        super().__init__()
        self.vae = vae
        self.weights = {"image_weight": image_weight, "kl_weight": kl_weight, "mask_weight": mask_weight,
                        "num_classes": num_classes}

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> Dict[str, torch.Tensor]:
        return vae_loss(self.vae, images, masks, **self.weights)


@torch.no_grad()
def evaluate_vae(
    vae: AutoencoderKL, images: torch.Tensor, masks: torch.Tensor, batch_size: int = 32, num_classes: int = 1
) -> Dict[str, float]:
    """Mask reconstruction DSC (encode mean, decode, threshold 0.5 or arg-max), image L1, and the latent std.

    Args:
        vae (`AutoencoderKL`): the VAE.
        images (`torch.Tensor`): (N, 3, S, S) uint8.
        masks (`torch.Tensor`): (N, 1, S, S) bool, or uint8 class indices when `num_classes` > 1.
        batch_size (`int`, defaults to 32): examples per pass.
        num_classes (`int`, defaults to 1): foreground classes. Above 1 the masks are colour-coded, decoded to
            class probabilities and read by arg-max, as a multi-class GMS does.

    Returns:
        `dict`: `mask_dsc` (mean), `mask_dsc_min`, `image_l1`, `latent_std` (of the posterior means of images and
        masks) and `n`. Multi-class: `mask_dsc` is the mean over foreground classes of each class's mean DSC
        (images where a class is absent from both truth and reconstruction are left out of its mean),
        `mask_dsc_per_class` lists those per-class means (class 1 first) and `mask_dsc_min` is the lowest
        per-image, per-class DSC.

    Example:
        >>> evaluate_vae(vae, val_images, val_masks)["mask_dsc"]
    """
    if num_classes > 1:
        return _evaluate_coded_vae(vae, images, masks, batch_size, num_classes)
    dices, l1s, latents = [], [], []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].float() / 127.5 - 1
        gt = masks[start : start + batch_size]  # (b, 1, S, S) bool
        m = gt.float().expand(-1, 3, -1, -1) * 2 - 1
        z = vae.encode(torch.cat([x, m])).latent_dist.mean  # (2b, 4, S/8, S/8)
        decoded = vae.decode(z).sample
        pred = mask_probabilities(decoded[len(x) :]) > 0.5
        dices.append(dice_iou_batch(pred, gt)[0])  # (b,)
        l1s.append((decoded[: len(x)] - x).abs().mean((1, 2, 3)))
        latents.append(z)
    latents = torch.cat(latents)
    return {
        "mask_dsc": float(torch.cat(dices).mean()),
        "mask_dsc_min": float(torch.cat(dices).min()),
        "image_l1": float(torch.cat(l1s).mean()),
        "latent_std": float(latents.std()),
        "n": len(images),
    }


def _evaluate_coded_vae(vae, images, masks, batch_size: int, num_classes: int) -> Dict[str, float]:
    """[`evaluate_vae`] for colour-coded class masks."""
    dices = [[] for _ in range(num_classes)]  # per class: per-image DSC where the class is in truth or prediction
    l1s, latents = [], []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].float() / 127.5 - 1  # (b, 3, S, S)
        gt = masks[start : start + batch_size][:, 0].long()  # (b, S, S) class indices
        m = encode_class_mask(gt, num_classes)  # (b, 3, S, S) in {-1, 1}
        z = vae.encode(torch.cat([x, m])).latent_dist.mean  # (2b, 4, S/8, S/8)
        decoded = vae.decode(z).sample  # (2b, 3, S, S)
        pred = decode_class_probabilities(decoded[len(x) :], num_classes).argmax(1)  # (b, S, S)
        for k in range(1, num_classes + 1):
            dsc, _ = dice_iou_batch(pred == k, gt == k)  # (b,)
            present = ((pred == k) | (gt == k)).flatten(1).any(1)  # (b,)
            dices[k - 1].append(dsc[present])
        l1s.append((decoded[: len(x)] - x).abs().mean((1, 2, 3)))
        latents.append(z)
    per_class = [torch.cat(d) for d in dices]
    latents = torch.cat(latents)
    return {
        "mask_dsc": float(torch.stack([d.mean() for d in per_class]).mean()),
        "mask_dsc_per_class": [float(d.mean()) for d in per_class],
        "mask_dsc_min": float(min(d.min() for d in per_class)),
        "image_l1": float(torch.cat(l1s).mean()),
        "latent_std": float(latents.std()),
        "n": len(images),
    }


def calibrate_scaling_factor(vae: AutoencoderKL, latent_std: float) -> float:
    """Set `vae.config.scaling_factor` to 1 / `latent_std` (rounded to 6 decimals) and return it.

    SD's convention: latents scaled to unit variance, so the mapping model sees O(1) inputs and targets.

    Args:
        vae (`AutoencoderKL`): the trained VAE.
        latent_std (`float`): std of its posterior means (e.g. [`evaluate_vae`]'s `latent_std`).

    Returns:
        `float`: the scaling factor now in the VAE's config.

    Example:
        >>> calibrate_scaling_factor(vae, evaluate_vae(vae, images, masks)["latent_std"])
    """
    scaling_factor = 1.0 / max(latent_std, 1e-8)
    vae.register_to_config(scaling_factor=round(scaling_factor, 6))
    return vae.config.scaling_factor
