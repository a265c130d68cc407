"""Predictive distributions of GMS: posterior samples of the image latent and test-time augmentation.

GMS has a source of uncertainty that discriminative models lack: the VAE posterior. The paper samples it
during training (latent = scaling_factor * mean + std * eps, with probability 0.5, method.md) and trains
with flips and quarter turns. At test time both give a set of *passes* per image (a pass is one decode of
one image); their mean probability is the prediction, and the entropy of that mean is the uncertainty.

How the passes combine (`predict_probabilities`):

- `num_samples=0, tta=False`: one pass, the paper's inference (posterior mean); the result is
  `model(pixel_values).mask_probs` itself, bit for bit.
- `num_samples=N > 0`: N passes, each decoding one posterior sample `scaling_factor * mean + std * eps`
  (exactly `GMS.encode(..., sample_posterior=True)`: `std` is not rescaled). The mean pass is *not* added.
- `tta=True`: every image is also seen under the 8 transforms of the dihedral group D4 (identity, the
  three quarter turns, and the four reflections). The paper's augmentation draws a horizontal flip, a
  vertical flip and a quarter turn (`gms_hub.data.transforms`); their compositions are exactly these 8
  transforms (a vertical flip is a half turn after a horizontal flip), so D4 is the set the model was
  trained to be invariant to. Each transformed image is encoded on its own (the VAE is not equivariant),
  decoded with the mean latent (N = 0) or with each of its N posterior samples, and each prediction is
  mapped back with the inverse transform before averaging. So an image gets `8 * max(N, 1)` passes.

Cost: each pass is one LMM + decoder run (the decoder dominates); TTA adds 7 encodes per image. So a call
costs roughly `passes` times the default one (`benchmarks/uncertainty_cost.py` measures it).
"""

from __future__ import annotations

import logging
import math
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

logger = logging.getLogger(__name__)

__all__ = [
    "DIHEDRAL_TRANSFORMS",
    "apply_transform",
    "invert_transform",
    "num_passes",
    "predict_probabilities",
    "predictive_entropy",
]

DIHEDRAL_TRANSFORMS: Tuple[Tuple[int, bool], ...] = tuple((k, f) for f in (False, True) for k in range(4))
"""The 8 elements of D4 as `(quarter_turns, hflip)`: the transform flips left-right first (if `hflip`), then
turns by `quarter_turns * 90` degrees (`torch.rot90` over the last two dims). The identity `(0, False)` is first."""


def apply_transform(x: torch.Tensor, transform: Tuple[int, bool]) -> torch.Tensor:
    """Apply one D4 transform `(quarter_turns, hflip)` to the last two (square) dims of `x`."""
    turns, hflip = transform
    if hflip:
        x = x.flip(-1)
    return torch.rot90(x, turns, dims=(-2, -1)) if turns % 4 else x


def invert_transform(x: torch.Tensor, transform: Tuple[int, bool]) -> torch.Tensor:
    """Undo `apply_transform(., transform)`: turn back, then flip back."""
    turns, hflip = transform
    if turns % 4:
        x = torch.rot90(x, -turns, dims=(-2, -1))
    return x.flip(-1) if hflip else x


def num_passes(num_samples: int = 0, tta: bool = False) -> int:
    """Decodes per image: `max(num_samples, 1)`, times 8 with TTA."""
    return max(int(num_samples), 1) * (len(DIHEDRAL_TRANSFORMS) if tta else 1)


def _check_arguments(pixel_values, num_samples, tta, batch_size) -> None:
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
        shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
        raise ValueError(f"Expected pixel_values of shape (B, 3, S, S) in [-1, 1], got {shape}.")
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 0:
        raise ValueError(f"num_samples must be an integer >= 0 (0 = the posterior mean only), got {num_samples!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer (decodes per chunk), got {batch_size!r}.")
    if tta and pixel_values.shape[-1] != pixel_values.shape[-2]:
        raise ValueError(
            f"tta=True needs square images (quarter turns change the shape of {tuple(pixel_values.shape[-2:])}); "
            "resize to the model's square input first (as `GMS.segment` does) or pass tta=False."
        )


@torch.inference_mode()
def predict_probabilities(
    model,
    pixel_values: torch.Tensor,
    *,
    num_samples: int = 0,
    tta: bool = False,
    generator: Optional[torch.Generator] = None,
    batch_size: int = 8,
) -> torch.Tensor:
    """Mean probability over posterior samples and/or the D4 transforms (module docstring).

    Binary models average the foreground probability (B, 1, S, S); multi-class models (`model.num_classes = K > 1`)
    average the class probabilities (B, K+1, S, S), whose mean still sums to 1 per pixel.

    Args:
        model (`GMS`): the model; passes run on its device and dtype.
        pixel_values (`torch.Tensor` of shape `(B, 3, S, S)`): preprocessed images in [-1, 1].
        num_samples (`int`, defaults to 0): posterior samples per image (and per transform); 0 decodes the
            posterior mean, the paper's inference.
        tta (`bool`, defaults to `False`): also average over the 8 flips and quarter turns (D4).
        generator (`torch.Generator`, *optional*): source of the posterior noise; the same seed gives the same
            maps. Noise is drawn image by image, in input order, so an image's passes do not depend on how the
            images are batched (up to float rounding of the batched convolutions).
        batch_size (`int`, defaults to 8): largest number of passes (decodes) run together.

    Returns:
        `torch.Tensor` of shape `(B, 1, S, S)` (binary) or `(B, K+1, S, S)` (multi-class) in [0, 1], in the model's
        dtype: the mean probability over
        `num_passes(num_samples, tta)` passes. With `num_samples=0, tta=False` this is
        `model(pixel_values).mask_probs`, bit for bit.

    Example:
        >>> probs = predict_probabilities(model, pixel_values, num_samples=8, tta=True,
        ...                               generator=torch.Generator().manual_seed(0))
        >>> uncertainty = predictive_entropy(probs)  # (B, 1, S, S) in [0, 1]
    """
    _check_arguments(pixel_values, num_samples, tta, batch_size)
    pixel_values = pixel_values.to(model.device, model.dtype)
    if num_samples == 0 and not tta:
        return model(pixel_values).mask_probs  # the paper's single pass, untouched

    transforms = DIHEDRAL_TRANSFORMS if tta else DIHEDRAL_TRANSFORMS[:1]
    samples = max(int(num_samples), 1)
    batch = pixel_values.shape[0]

    # 1. Encode every (image, transform) pair, `batch_size` at a time: B * T posteriors.
    views = [(b, t) for b in range(batch) for t in range(len(transforms))]
    means: List[torch.Tensor] = []
    stds: List[torch.Tensor] = []
    for start in range(0, len(views), batch_size):
        chunk = views[start : start + batch_size]
        images = torch.stack([apply_transform(pixel_values[b], transforms[t]) for b, t in chunk])  # (c, 3, S, S)
        posterior = model.encode_posterior(images)
        means.append(posterior.mean * model.scaling_factor)  # (c, 4, h, w), exactly as GMS.encode
        stds.append(posterior.std)  # (c, 4, h, w)
    mean = torch.cat(means)  # (B*T, 4, h, w)
    std = torch.cat(stds)  # (B*T, 4, h, w)

    # 2. One latent per pass, ordered image, transform, sample. Noise is drawn per image (shape (T*N, 4, h, w)),
    #    so for one image without TTA the draw is that of GMS.encode(..., sample_posterior=True).
    if num_samples > 0:
        per_image = len(transforms) * samples
        noise = torch.cat([
            randn_tensor((per_image, *mean.shape[1:]), generator=generator, device=mean.device, dtype=mean.dtype)
            for _ in range(batch)
        ])  # (B*T*N, 4, h, w)
        latents = mean.repeat_interleave(samples, dim=0) + std.repeat_interleave(samples, dim=0) * noise
    else:
        latents = mean  # (B*T, 4, h, w)
    owners = [view for view in views for _ in range(samples)]  # (image, transform) of each pass

    # 3. LMM + decoder `batch_size` passes at a time; map each prediction back and sum per image.
    total: Optional[torch.Tensor] = None
    for start in range(0, latents.shape[0], batch_size):
        probs = model.decode_mask(model.lmm(latents[start : start + batch_size])["out"])  # (c, 1 or K+1, S, S)
        if total is None:
            total = torch.zeros((batch, *probs.shape[1:]), device=probs.device, dtype=torch.float32)
        for prob, (b, t) in zip(probs, owners[start : start + batch_size]):
            total[b] += invert_transform(prob, transforms[t]).float()  # (1 or K+1, S, S)
    return (total / (len(transforms) * samples)).to(probs.dtype)  # (B, 1 or K+1, S, S): the mean over the passes


def predictive_entropy(
    probs: Union[torch.Tensor, np.ndarray], num_classes: int = 1
) -> Union[torch.Tensor, np.ndarray]:
    """Entropy of a mean predicted distribution, normalised by its maximum to [0, 1].

    Binary (`num_classes=1`): `probs` is the foreground probability p (any shape) and the result is
    `-(p log p + (1 - p) log(1 - p)) / log 2`, with `0 log 0 = 0`. Multi-class (`num_classes=K > 1`): `probs`
    holds the K + 1 class probabilities (background first) along dim -3, e.g. `(K+1, H, W)` or
    `(B, K+1, H, W)`, and the result is `-sum_c p_c log p_c / log(K+1)` without that dim.

    Args:
        probs (`torch.Tensor` or `np.ndarray`): mean probabilities in [0, 1] (averaged over passes first: this
            is the entropy of the mean, not the mean of the entropies).
        num_classes (`int`, defaults to 1): foreground classes K.

    Returns:
        float32 map(s) in [0, 1] of the same type as `probs`: 0 where the prediction is certain, 1 at p = 0.5
        (binary) or at the uniform distribution.

    Example:
        >>> predictive_entropy(torch.tensor([0.0, 0.5, 1.0]))
        tensor([0., 1., 0.])
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1 (foreground classes), got {num_classes!r}.")
    as_numpy = isinstance(probs, np.ndarray)
    if not as_numpy and not isinstance(probs, torch.Tensor):
        raise TypeError(f"probs must be a torch.Tensor or np.ndarray, got {type(probs).__name__}.")
    p = (torch.from_numpy(probs) if as_numpy else probs).to(torch.float64).clamp(0.0, 1.0)
    if num_classes == 1:
        entropy = -(torch.xlogy(p, p) + torch.xlogy(1.0 - p, 1.0 - p)) / math.log(2.0)
    else:
        if p.ndim < 3 or p.shape[-3] != num_classes + 1:
            raise ValueError(
                f"With num_classes={num_classes}, probs must hold {num_classes + 1} class probabilities along dim -3 "
                f"(background first), e.g. ({num_classes + 1}, H, W); got shape {tuple(p.shape)}."
            )
        entropy = -torch.xlogy(p, p).sum(dim=-3) / math.log(num_classes + 1)
    entropy = (entropy.clamp(0.0, 1.0) + 0.0).to(torch.float32)  # + 0.0 turns -0.0 into 0.0
    return entropy.numpy() if as_numpy else entropy
