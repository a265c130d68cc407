"""Colour coding of class masks, so that one VAE decode serves every class of a multi-class GMS.

The GMS latent mapping model maps an image latent to the latent of its mask, and the frozen VAE decodes
that latent back to a 3-channel picture. For a binary model the mask is repeated to 3 channels (white
foreground on black) and the decoded channels are averaged; that path is the paper's and does **not** go
through this module. For ``num_classes = K >= 2`` foreground classes the mask is instead rendered as a
colour image, one colour per class, and the decoded colours are turned back into class probabilities.

The code: class ``k`` is a corner of the RGB cube, background is black::

    k:       0       1        2        3        4         5          6        7
    colour:  black   red      green    blue     yellow    magenta    cyan     white
    (R,G,B): (0,0,0) (1,0,0)  (0,1,0)  (0,0,1)  (1,1,0)   (1,0,1)    (0,1,1)  (1,1,1)

- For ``K <= 3`` this is one RGB channel per class: the single-channel corners come first.
- Up to ``K = 7`` every corner is used: a 3-bit binary code per pixel. More classes than corners cannot
  be coded, hence `MAX_CODED_CLASSES` = 7 and a `ValueError` beyond it.
- Corners are saturated colours, the values an autoencoder reproduces best, and every channel is either
  "on" or "off", so each decoded channel is read as an independent probability
  ``p_c = ((x_c + 1) / 2)`` clamped to ``[eps, 1 - eps]``. The probability of corner ``k`` is the product
  over channels of ``p_c`` (bit on) or ``1 - p_c`` (bit off); over all 8 corners these products sum to 1.
  Only the ``K + 1`` corners in use are kept and renormalised (a softmax of the log-products), so the
  class probabilities sum to exactly 1 per pixel and a decoded colour near an unused corner is shared
  between the used corners it is closest to.

Gradients: the clamp is a plain one, as in the paper's binary decoding (`gms_hub.inference.fast.mask_probabilities`):
a channel decoded beyond ``[-1, 1]`` gets no gradient from a loss on the probabilities (the latent MSE
still moves it). A straight-through clamp, which passes gradients outside the range, was measured to wreck
training: a saturated pixel's corner probability is about linear in the clamped value, so its gradient
never vanishes and a soft Dice pushes decoded values outwards without bound, pulling the predicted latents
away from the mask latents (2-class synthetic set at 64 px, a tiny coded-mask VAE, the same seeds: validation
Dice 0.37 after 5 epochs with it, 0.64 with the plain clamp, 0.73 after 8; passing only the gradients that
point back into the range also diverged, to 0.27 after 8 epochs).

A VAE that was never trained on saturated colour masks may not reproduce them at all (the bundled demo
VAE decodes saturated colours as near-white): measure with ``benchmarks/coded_mask_reconstruction.py``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

__all__ = [
    "CLASS_CODES",
    "MAX_CODED_CLASSES",
    "check_num_classes",
    "resolve_classes",
    "class_codes",
    "decode_class_probabilities",
    "encode_class_mask",
    "foreground_probabilities",
    "one_hot_foreground",
]

CLASS_CODES: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),  # background: black
    (1, 0, 0),  # red
    (0, 1, 0),  # green
    (0, 0, 1),  # blue
    (1, 1, 0),  # yellow
    (1, 0, 1),  # magenta
    (0, 1, 1),  # cyan
    (1, 1, 1),  # white
)
"""RGB bits of each class index: single-channel corners first, so K <= 3 is one channel per class."""

MAX_CODED_CLASSES = len(CLASS_CODES) - 1
"""Foreground classes the code can hold: the 7 non-black corners of the RGB cube."""

_EPS = 1e-6  # keeps log(p) finite; exact codes then decode to one-hot within ~3e-6


def check_num_classes(num_classes: int) -> int:
    """Validate a number of foreground classes for the colour code.

    Args:
        num_classes (`int`): foreground classes (background not counted).

    Returns:
        `int`: `num_classes`.

    Raises:
        `ValueError`: fewer than 2 (binary models use the paper's white-mask path, not this code) or more
            than `MAX_CODED_CLASSES` (7).

    Example:
        >>> check_num_classes(3)
        3
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"`num_classes` must be an int, got {type(num_classes).__name__} ({num_classes!r}).")
    if num_classes < 2:
        raise ValueError(
            f"The colour code is for 2 to {MAX_CODED_CLASSES} foreground classes, got num_classes={num_classes}. "
            "A binary model (num_classes=1) uses the paper's path: the mask repeated to 3 channels."
        )
    if num_classes > MAX_CODED_CLASSES:
        raise ValueError(
            f"num_classes={num_classes} is more than the colour code supports: at most {MAX_CODED_CLASSES} "
            "foreground classes (the 7 non-black corners of the RGB cube; black is background). Merge classes "
            "or train one model per group of at most 7 classes."
        )
    return num_classes


def resolve_classes(num_classes: int, id2label: Optional[Dict[Any, str]] = None) -> Tuple[int, Dict[int, str]]:
    """Validate a model's `num_classes` and `id2label`, filling in the default names.

    Args:
        num_classes (`int`): foreground classes K (1 for the paper's binary model, up to `MAX_CODED_CLASSES`).
        id2label (`dict`, *optional*): `{0: "background", 1: ..., K: ...}` with int or string keys; defaults to
            `{0: "background", 1: "foreground"}` for K = 1 and `class_1..class_K` otherwise.

    Returns:
        `tuple(int, dict[int, str])`: `num_classes` and the class names by index.

    Example:
        >>> resolve_classes(2)
        (2, {0: 'background', 1: 'class_1', 2: 'class_2'})
    """
    from ..data.loading import parse_id2label  # the id2label rules shared with datasets

    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes counts foreground classes and must be an integer >= 1, got {num_classes!r}.")
    num_classes = int(num_classes)
    if num_classes > 1:
        check_num_classes(num_classes)  # at most MAX_CODED_CLASSES, with the message that says why
    if id2label is None:
        names = ["foreground"] if num_classes == 1 else [f"class_{k}" for k in range(1, num_classes + 1)]
        return num_classes, {0: "background", **{k: name for k, name in enumerate(names, start=1)}}
    parsed = parse_id2label(id2label)
    if len(parsed) != num_classes + 1:
        raise ValueError(
            f"id2label names {len(parsed)} classes ({parsed}) but num_classes={num_classes} needs {num_classes + 1} "
            "entries (background and each foreground class); pass num_classes=len(id2label) - 1."
        )
    return num_classes, parsed


def class_codes(num_classes: int, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The RGB bits of background and the `num_classes` foreground classes.

    Args:
        num_classes (`int`): foreground classes, 2 to 7.
        device (`torch.device`, *optional*): device of the result.
        dtype (`torch.dtype`, defaults to `torch.float32`): dtype of the result.

    Returns:
        `torch.Tensor`: (K+1, 3) with values 0/1; row 0 is black.

    Example:
        >>> class_codes(2).tolist()
        [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    """
    check_num_classes(num_classes)
    return torch.tensor(CLASS_CODES[: num_classes + 1], device=device, dtype=dtype)


def encode_class_mask(index_mask: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Render class-index masks as colour images in the VAE's input range.

    Args:
        index_mask (`torch.Tensor`): (B, H, W) integer class indices, 0 = background, 1..K foreground.
        num_classes (`int`): K, foreground classes (2 to 7).
        dtype (`torch.dtype`, defaults to `torch.float32`): dtype of the output.

    Returns:
        `torch.Tensor`: (B, 3, H, W) with values exactly -1 (channel off) or 1 (channel on).

    Raises:
        `ValueError`: a wrong shape, a non-integer mask, or an index outside 0..K.

    Example:
        >>> mask = torch.tensor([[[0, 1], [2, 0]]])
        >>> encode_class_mask(mask, num_classes=2)[0, :, 0, 1].tolist()  # class 1 is red
        [1.0, -1.0, -1.0]
    """
    check_num_classes(num_classes)
    if index_mask.ndim != 3:
        raise ValueError(f"`index_mask` must be (B, H, W) class indices, got shape {tuple(index_mask.shape)}.")
    if index_mask.is_floating_point() or index_mask.dtype == torch.bool:
        raise ValueError(f"`index_mask` must hold integer class indices, got dtype {index_mask.dtype}.")
    if index_mask.numel() and (int(index_mask.min()) < 0 or int(index_mask.max()) > num_classes):
        found = sorted(torch.unique(index_mask).tolist())
        raise ValueError(
            f"`index_mask` values must be class indices 0..{num_classes} (num_classes={num_classes}), found {found}."
        )
    codes = class_codes(num_classes, device=index_mask.device, dtype=dtype) * 2 - 1  # (K+1, 3) in {-1, 1}
    colours = codes[index_mask.long()]  # (B, H, W, 3)
    return colours.permute(0, 3, 1, 2).contiguous()  # (B, 3, H, W)


def decode_class_probabilities(decoded: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-pixel class probabilities from a decoded colour image.

    Args:
        decoded (`torch.Tensor`): (B, 3, H, W) VAE output, about [-1, 1] (values outside are clamped).
        num_classes (`int`): K, foreground classes (2 to 7).

    Returns:
        `torch.Tensor`: (B, K+1, H, W) probabilities (channel 0 background) that sum to 1 over dim 1,
        in the dtype of `decoded` (computed in float32 at least).

    Example:
        >>> colours = encode_class_mask(torch.tensor([[[0, 1, 2]]]), num_classes=2)
        >>> decode_class_probabilities(colours, 2).argmax(1).tolist()
        [[[0, 1, 2]]]
    """
    check_num_classes(num_classes)
    if decoded.ndim != 4 or decoded.shape[1] != 3:
        raise ValueError(f"`decoded` must be a (B, 3, H, W) colour image, got shape {tuple(decoded.shape)}.")
    work = decoded.float() if decoded.dtype in (torch.float16, torch.bfloat16) else decoded
    p = ((work + 1) / 2).clamp(_EPS, 1 - _EPS)  # (B, 3, H, W) channel "on" probabilities
    log_on, log_off = torch.log(p), torch.log1p(-p)  # (B, 3, H, W) each
    bits = class_codes(num_classes, device=decoded.device, dtype=work.dtype)  # (K+1, 3)
    # log P(corner k) = sum_c bit_kc * log p_c + (1 - bit_kc) * log(1 - p_c)
    log_corner = torch.einsum("kc,bchw->bkhw", bits, log_on) + torch.einsum("kc,bchw->bkhw", 1 - bits, log_off)
    return torch.softmax(log_corner, dim=1).to(decoded.dtype)  # (B, K+1, H, W), renormalised over used corners


def foreground_probabilities(decoded: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The foreground channels of `decode_class_probabilities`: soft per-class masks for a soft Dice.

    Args:
        decoded (`torch.Tensor`): (B, 3, H, W) VAE output, about [-1, 1].
        num_classes (`int`): K, foreground classes (2 to 7).

    Returns:
        `torch.Tensor`: (B, K, H, W) in [0, 1]; channel ``k - 1`` is class ``k``.

    Example:
        >>> soft = foreground_probabilities(decoded, 2)
        >>> dice = soft_dice(soft, one_hot_foreground(index_mask, 2))  # per class
    """
    return decode_class_probabilities(decoded, num_classes)[:, 1:]  # (B, K, H, W)


def one_hot_foreground(index_mask: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot foreground targets matching `foreground_probabilities`.

    Args:
        index_mask (`torch.Tensor`): (B, H, W) integer class indices 0..K.
        num_classes (`int`): K, foreground classes.
        dtype (`torch.dtype`, defaults to `torch.float32`): dtype of the output.

    Returns:
        `torch.Tensor`: (B, K, H, W) with 1 where the pixel is class ``k`` (channel ``k - 1``).

    Example:
        >>> one_hot_foreground(torch.tensor([[[0, 2]]]), 2)[0, :, 0, 1].tolist()
        [0.0, 1.0]
    """
    if index_mask.ndim != 3:
        raise ValueError(f"`index_mask` must be (B, H, W) class indices, got shape {tuple(index_mask.shape)}.")
    classes = torch.arange(1, num_classes + 1, device=index_mask.device).view(1, -1, 1, 1)  # (1, K, 1, 1)
    return (index_mask.unsqueeze(1) == classes).to(dtype)  # (B, K, H, W)
