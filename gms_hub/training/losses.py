"""The GMS training loss: latent MSE plus soft Dice through the frozen decoder, with deep supervision.

method.md, "Training": loss = sum_h MSE(head_h, z_mask) + sum_h SoftDice(decode(head_h), mask) over the heads
h in {level2, level1, out} (`level3` is computed by the network but is not in the loss), both weights 1.

Multi-class models (`model.num_classes = K > 1`, `gms_hub.models.coding`): the mask latent is the latent of the colour-coded
mask (`encode_class_mask`), and the Dice term of a head is the soft Dice of each foreground class
(`foreground_probabilities` of the decoded colours against the one-hot mask) **averaged over the K classes**, so it
stays in [0, 1] per head like the binary term; the heads are summed as in the binary loss. Binary models take the
paper's path unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..models.coding import encode_class_mask, foreground_probabilities, one_hot_foreground

# The heads that enter the loss. The reference computes `level3` too but leaves it out of the loss.
LOSS_HEADS: Tuple[str, ...] = ("level2", "level1", "out")

# Smoothing of the soft Dice, as in the reference.
SOFT_DICE_SMOOTH = 1e-5


@dataclass
class GMSLossOutput:
    """Output of [`gms_loss`].

    Args:
        loss (`torch.Tensor`): scalar, `latent_mse + dice`, the value to backpropagate.
        latent_mse (`torch.Tensor`): scalar, the MSE between each loss head and the mask latent, summed over heads.
        dice (`torch.Tensor`): scalar, the soft Dice loss of each decoded loss head, summed over heads.
    """

    loss: torch.Tensor
    latent_mse: torch.Tensor
    dice: torch.Tensor


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, smooth: float = SOFT_DICE_SMOOTH) -> torch.Tensor:
    """Soft Dice loss, computed per sample and averaged over the batch.

    Per sample: `1 - (2 * sum(p * g) + smooth) / (sum(p) + sum(g) + smooth)`.

    Args:
        probs (`torch.Tensor`): predicted probabilities (B, ...), in [0, 1].
        target (`torch.Tensor`): target masks, same shape, in {0, 1}.
        smooth (`float`, defaults to 1e-5): the reference's smoothing constant.

    Returns:
        `torch.Tensor`: scalar.

    Example:
        >>> soft_dice_loss(torch.ones(2, 1, 4, 4), torch.ones(2, 1, 4, 4))  # ~0
        tensor(0.)
    """
    if probs.shape != target.shape:
        raise ValueError(f"`probs` and `target` must have the same shape, got {tuple(probs.shape)} and {tuple(target.shape)}.")
    p = probs.reshape(probs.shape[0], -1).float()
    g = target.reshape(target.shape[0], -1).float()
    intersection = (p * g).sum(dim=1)
    dice = (2.0 * intersection + smooth) / (p.sum(dim=1) + g.sum(dim=1) + smooth)  # (B,)
    return (1.0 - dice).mean()


def mask_latents(model: nn.Module, masks: torch.Tensor) -> torch.Tensor:
    """Encode masks into the target latents: scaling_factor * posterior mean of the mask as an RGB image.

    Args:
        model ([`GMS`]): supplies the frozen VAE.
        masks (`torch.Tensor`): (B, 1, S, S) in {0, 1} (binary), or class indices 0..K (multi-class, long or float),
            rendered with `gms_hub.models.coding.encode_class_mask`.

    Returns:
        `torch.Tensor`: (B, 4, S/8, S/8), no gradient.
    """
    num_classes = getattr(model, "num_classes", 1)
    with torch.no_grad():
        if num_classes > 1:
            mask_images = encode_class_mask(class_indices(masks), num_classes)  # (B, 3, S, S) in {-1, 1}
        else:
            mask_images = (masks * 2.0 - 1.0).repeat(1, 3, 1, 1)  # (B, 3, S, S) in {-1, 1}
        return model.encode(mask_images.to(model.vae.dtype), sample_posterior=False)


def class_indices(masks: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) class-index masks (long, or float holding whole numbers) -> (B, S, S) long.

    Example:
        >>> class_indices(torch.tensor([[[[0.0, 2.0]]]])).tolist()
        [[[0, 2]]]
    """
    if masks.ndim != 4 or masks.shape[1] != 1:
        raise ValueError(f"Expected class-index masks of shape (B, 1, S, S), got {tuple(masks.shape)}.")
    indices = masks[:, 0].round().long() if masks.is_floating_point() else masks[:, 0].long()  # (B, S, S)
    if masks.is_floating_point() and not torch.equal(indices.to(masks.dtype), masks[:, 0]):
        raise ValueError(
            "Multi-class masks must hold class indices 0..K, got fractional values; build them with "
            "TrainTransform(num_classes=K) / EvalTransform(num_classes=K), which resize masks with nearest neighbour."
        )
    return indices


def gms_loss(
    model: nn.Module,
    pixel_values: torch.Tensor,
    masks: torch.Tensor,
    sample_posterior: bool = False,
    generator: Optional[torch.Generator] = None,
    lmm: Optional[nn.Module] = None,
) -> GMSLossOutput:
    """The paper's training loss for one batch.

    The image latent is the scaled posterior mean of the frozen VAE, or, with `sample_posterior=True` (the
    paper's latent-noise augmentation), a sample `scaling_factor * mean + std * eps`: the reference does not
    rescale `std` by the scaling factor, and neither does [`GMS.encode`]. The mask latent is always the scaled
    posterior mean. The three loss heads are decoded by the frozen decoder in one batched pass; the VAE has
    no trainable parameters, but gradients flow through the decoder into the LMM.

    Args:
        model ([`GMS`]): the model; its VAE stays frozen.
        pixel_values (`torch.Tensor`): images (B, 3, S, S) in [-1, 1].
        masks (`torch.Tensor`): ground-truth masks (B, 1, S, S): in {0, 1} for a binary model, class indices 0..K
            (long or float) for a multi-class one.
        sample_posterior (`bool`, defaults to `False`): sample the image latent instead of taking the mean.
        generator (`torch.Generator`, *optional*): source of the posterior noise.
        lmm (`nn.Module`, *optional*): the module run as the LMM, e.g. `model.lmm` wrapped by
            `accelerator.prepare` (DDP only synchronises gradients when its wrapper runs the forward).
            Defaults to `model.lmm`.

    Returns:
        [`GMSLossOutput`]: `loss` (to backpropagate), `latent_mse` and `dice` (each summed over the loss heads).

    Example:
        >>> out = gms_loss(model, batch["pixel_values"], batch["masks"], sample_posterior=True)
        >>> out.loss.backward()
    """
    if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
        raise ValueError(f"Expected pixel_values of shape (B, 3, S, S), got {tuple(pixel_values.shape)}.")
    expected_masks = (pixel_values.shape[0], 1, *pixel_values.shape[2:])
    if tuple(masks.shape) != expected_masks:
        raise ValueError(
            f"Expected masks of shape {expected_masks} (B, 1, S, S) matching pixel_values, got {tuple(masks.shape)}."
        )
    lmm = model.lmm if lmm is None else lmm
    batch_size = pixel_values.shape[0]

    with torch.no_grad():
        z_image = model.encode(pixel_values, sample_posterior=sample_posterior, generator=generator)  # (B, 4, h, w)
    z_mask = mask_latents(model, masks)  # (B, 4, h, w)

    heads = lmm(z_image)
    predicted = torch.cat([heads[name] for name in LOSS_HEADS])  # (3B, 4, h, w)
    # One decoder pass over the three heads: the decoder works per sample, so this equals three passes.
    num_classes = getattr(model, "num_classes", 1)
    if num_classes > 1:
        decoded = model.vae.decode(predicted / model.scaling_factor).sample  # (3B, 3, S, S)
        probs = foreground_probabilities(decoded, num_classes)  # (3B, K, S, S)
        target = one_hot_foreground(class_indices(masks), num_classes, dtype=probs.dtype)  # (B, K, S, S)
    else:
        probs = model.decode_mask(predicted)  # (3B, 1, S, S)
        target = masks

    latent_mse = predicted.new_zeros((), dtype=torch.float32)
    dice = predicted.new_zeros((), dtype=torch.float32)
    for index in range(len(LOSS_HEADS)):
        head = predicted[index * batch_size : (index + 1) * batch_size]
        latent_mse = latent_mse + F.mse_loss(head.float(), z_mask.float())
        head_probs = probs[index * batch_size : (index + 1) * batch_size]  # (B, 1 or K, S, S)
        if num_classes > 1:  # the mean over classes of each class's soft Dice
            per_class = [soft_dice_loss(head_probs[:, k], target[:, k]) for k in range(num_classes)]
            dice = dice + torch.stack(per_class).mean()
        else:
            dice = dice + soft_dice_loss(head_probs, target)
    return GMSLossOutput(loss=latent_mse + dice, latent_mse=latent_mse, dice=dice)
