"""Multi-class synthetic examples: K kinds of structure per image that never overlap (K = 2 or 3).

``python -m gms_hub.data.prepare synthetic --num_classes K`` renders these through
`gms_hub.data.synthetic.generate_example(..., num_classes=K)`; the binary generator (``num_classes=1``) is
untouched. Each image holds one structure of every class, drawn in this order with a gap of background
between them, over the background of its kind (speckled tissue, skin, stroma):

- class 1, ``dark_lesion``: an irregular region darker than its surroundings (a hypoechoic lesion, a
  pigmented spot, a dense nuclear cluster);
- class 2, ``bright_nodule``: a smoother, brighter or paler region;
- class 3, ``ringed_cyst``: a bright ring around a dark core (a walled cyst, a gland).

The mask holds the class index of each pixel (0 = background). As in the binary generator, the image is
painted from the mask, so the mask is exact, every class is non-empty and no mask pixel touches the border.
"""

from __future__ import annotations

import numpy as np

from .synthetic_shapes import _box_blur, _fractal_noise, _irregular_shape, _soft

__all__ = ["MAX_SYNTHETIC_CLASSES", "SYNTHETIC_CLASS_NAMES", "render_multiclass", "synthetic_id2label"]

SYNTHETIC_CLASS_NAMES: tuple[str, ...] = ("dark_lesion", "bright_nodule", "ringed_cyst")
"""Names of the foreground classes, in index order (class 1 first)."""

MAX_SYNTHETIC_CLASSES = len(SYNTHETIC_CLASS_NAMES)

# Per kind: background colour, then class colours (class 3: ring, core). One channel for ultrasound.
_PALETTES = {
    "ultrasound": {"background": [0.5], 1: [0.12], 2: [0.92], 3: ([0.95], [0.1])},
    "dermoscopy": {"background": [0.86, 0.66, 0.56], 1: [0.33, 0.19, 0.11], 2: [0.98, 0.92, 0.88],
                   3: ([0.35, 0.4, 0.62], [0.95, 0.85, 0.8])},
    "histology": {"background": [0.86, 0.6, 0.74], 1: [0.4, 0.2, 0.52], 2: [0.97, 0.94, 0.96],
                  3: ([0.5, 0.25, 0.6], [0.98, 0.95, 0.97])},
}
# Radius range (fraction of the image size) per number of classes: smaller when more must fit.
_RADIUS = {2: (0.12, 0.2), 3: (0.1, 0.16)}


def synthetic_id2label(num_classes: int) -> dict[int, str]:
    """``{0: "background", 1: "dark_lesion", ...}`` for `num_classes` foreground classes (1 to 3).

    Example:
        >>> synthetic_id2label(2)
        {0: 'background', 1: 'dark_lesion', 2: 'bright_nodule'}
    """
    _check_num_classes(num_classes, allow_binary=True)
    return {0: "background", **{i + 1: name for i, name in enumerate(SYNTHETIC_CLASS_NAMES[:num_classes])}}


def _check_num_classes(num_classes: int, allow_binary: bool = False) -> int:
    low = 1 if allow_binary else 2
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or not (
        low <= num_classes <= MAX_SYNTHETIC_CLASSES
    ):
        raise ValueError(
            f"`num_classes` must be an integer from {low} to {MAX_SYNTHETIC_CLASSES} (the synthetic generator draws "
            f"the structures {list(SYNTHETIC_CLASS_NAMES)}), got {num_classes!r}."
        )
    return int(num_classes)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    grown = _box_blur(_box_blur(mask.astype(np.float64), radius, axis=0), radius, axis=1)
    return grown > 1e-9


def _place(rng: np.random.Generator, size: int, num_classes: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """One (mask, signed edge) per class, no two closer than a small gap."""
    gap = max(2, size // 32)
    taken = np.zeros((size, size), dtype=bool)
    placed = []
    low, high = _RADIUS[num_classes]
    for _ in range(num_classes):
        for attempt in range(200):
            shrink = 1.0 if attempt < 20 else 0.7 if attempt < 80 else 0.45
            mask, edge = _irregular_shape(rng, size, radius_range=(low * shrink, high * shrink), roughness=0.2)
            if mask.any() and not (mask & taken).any():
                break
        else:  # 200 draws of ever smaller shapes all overlapping: does not happen for K <= 3 and size >= 32
            raise AssertionError(f"could not place {num_classes} separate structures in {size} px")
        placed.append((mask, edge))
        taken |= _dilate(mask, gap)
    return placed


def _composite(image: np.ndarray, colour, alpha: np.ndarray) -> np.ndarray:
    return image * (1 - alpha[..., None]) + np.asarray(colour)[None, None, :] * alpha[..., None]


def render_multiclass(kind: str, rng: np.random.Generator, size: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Render one multi-class example.

    Args:
        kind (`str`): ``"ultrasound"``, ``"dermoscopy"`` or ``"histology"``.
        rng (`np.random.Generator`): the only source of randomness.
        size (`int`): width and height in pixels.
        num_classes (`int`): foreground classes, 2 or 3.

    Returns:
        `tuple[np.ndarray, np.ndarray]`: the image, float in [0, 1], (S, S) for ultrasound and (S, S, 3)
        otherwise; the mask, uint8 (S, S) class indices 0..K, every class present.

    Example:
        >>> image, mask = render_multiclass("histology", np.random.default_rng(0), 64, 3)
        >>> sorted(np.unique(mask).tolist())
        [0, 1, 2, 3]
    """
    num_classes = _check_num_classes(num_classes)
    palette = _PALETTES[kind]
    channels = len(palette["background"])
    texture = _fractal_noise(rng, size, (4, 8, 16))  # (S, S)
    jitter = 1 + rng.uniform(-0.08, 0.08, channels)
    image = np.asarray(palette["background"])[None, None, :] * jitter * (1 + 0.1 * texture[..., None])  # (S, S, C)

    mask = np.zeros((size, size), dtype=np.uint8)
    for index, (region, edge) in enumerate(_place(rng, size, num_classes), start=1):
        mask[region] = index
        soft = _soft(edge, rng.uniform(1.0, 2.5) * size / 128)  # (S, S)
        strength = rng.uniform(0.7, 0.95)
        inner = 1 + 0.1 * _fractal_noise(rng, size, (6, 12))[..., None]  # texture inside the structure
        if index < 3:
            image = _composite(image, palette[index], soft * strength)
        else:
            ring_colour, core_colour = palette[3]
            ring_width = max(1.5, rng.uniform(0.15, 0.3) * float(edge.max()))
            core = _soft(edge - ring_width, 1.0)
            image = _composite(image, ring_colour, np.clip(soft - core, 0, 1) * strength)
            image = _composite(image, core_colour, core * strength)
        image = image * np.where(region[..., None], inner, 1.0)

    if kind == "ultrasound":  # multiplicative speckle with mean 1
        image = image * rng.rayleigh(np.sqrt(2 / np.pi), (size, size, 1))
        image = image[..., 0]
    else:
        image = image + 0.02 * rng.standard_normal(image.shape)
    return np.clip(image, 0, 1), mask
