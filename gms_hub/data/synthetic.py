"""A synthetic segmentation benchmark that looks like the paper's modalities.

Every example is rendered from its ground-truth mask, so the mask is exact: a binary lesion shape is
drawn first, then an image is painted around it with the nuisances that make the real benchmarks hard
(speckle, low contrast, acoustic shadows, hair, vignetting, stained texture). Rendering is numpy only
and fast (a few milliseconds per 128 px image), so tests, the offline demo model and CI can build
training sets on the fly.

Kinds:
    - ``"ultrasound"`` (BUS/BUSI-like, grayscale): multiplicative Rayleigh speckle over layered tissue,
      depth attenuation, a darker (hypoechoic) irregular lesion with a soft low-contrast rim and internal
      echoes, posterior acoustic shadowing or enhancement, and shadow streaks and dark blobs elsewhere
      that are *not* lesion.
    - ``"dermoscopy"`` (HAM10000-like, RGB): skin with texture and vignetting, a pigmented irregular lesion
      with uneven pigment and a blurred border, dark hair-like curves crossing the field (and the lesion).
    - ``"histology"`` (GlaS-like, RGB): H&E-like pink stroma with scattered nuclei, one to three glands
      (the mask) drawn as a pale lumen ringed by dense purple epithelial nuclei.

Multi-class (``num_classes`` 2 or 3): K kinds of non-overlapping structure per image, masks of class
indices; see `gms_hub.data.synthetic_multiclass`. ``num_classes=1`` is the binary generator above, unchanged.

Determinism: example ``i`` of split ``s`` uses its own ``np.random.default_rng([seed, split_id(s), i])``,
so the same seed gives the same bytes, any example can be regenerated alone, and different seeds give
unrelated images.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from PIL import Image

from .synthetic_shapes import _smooth_noise, _fractal_noise, _box_blur, _stamp_disks, _curve_points, _irregular_shape, _sigmoid, _soft

logger = logging.getLogger(__name__)

__all__ = [
    "KINDS",
    "SPLIT_IDS",
    "SYNTHETIC_CARD",
    "generate_example",
    "generate_split",
    "make_synthetic_dataset",
    "synthetic_card",
    "synthetic_id2label",
]

KINDS: tuple[str, ...] = ("ultrasound", "dermoscopy", "histology")
"""The kinds of image the generator renders, in the order examples cycle through them."""

SPLIT_IDS: dict[str, int] = {"train": 0, "validation": 1, "test": 2}
"""Stable integer per split, mixed into each example's random seed."""

MIN_IMAGE_SIZE = 32
"""Below this, lesions of a few pixels and one-pixel hairs stop resembling anything."""

def _render_ultrasound(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    yy = np.linspace(0, 1, size)[:, None]
    # Layered tissue: bright skin line near the top, horizontal bands, smooth echogenicity texture.
    tissue = 0.5 + 0.08 * _fractal_noise(rng, size, (4, 8, 16))
    bands = 0.05 * np.sin(2 * np.pi * (yy * rng.uniform(2, 5) + rng.uniform(0, 1)) + 0.8 * _smooth_noise(rng, size, 4))
    tissue = tissue + bands
    skin = rng.uniform(0.05, 0.12)
    tissue = tissue + 0.35 * np.exp(-(((yy - skin) / 0.03) ** 2))

    mask, edge = _irregular_shape(rng, size, radius_range=(0.15, 0.32), roughness=0.22)
    soft = _soft(edge, rng.uniform(1.0, 3.5) * size / 128)
    # Hypoechoic lesion: darker by a random, sometimes small, factor; internal echoes keep it textured.
    contrast = rng.uniform(0.5, 0.8)
    inner = 0.55 + 0.25 * _fractal_noise(rng, size, (6, 12))
    lesion_level = np.clip(1 - contrast * np.clip(inner, 0.2, 1.2), 0.15, 1)
    tissue = tissue * (1 - soft) + tissue * lesion_level * soft
    # Echogenic rim on part of the boundary (a halo), as in many malignant lesions.
    if rng.random() < 0.5:
        rim = np.exp(-((edge / (1.5 * size / 128)) ** 2)) * (edge < 0)
        tissue = tissue + rng.uniform(0.05, 0.2) * rim * (0.5 + 0.5 * _smooth_noise(rng, size, 6))

    # Posterior shadow (darker) or enhancement (brighter) in the columns below the lesion.
    cols = mask.any(0)
    rows = np.where(mask.any(1))[0]
    column_profile = _box_blur(cols.astype(np.float64)[None, :], max(1, size // 40), axis=1)[0]
    bottom = rows.max() / size + rng.uniform(0.02, 0.06)  # the lesion's far wall stays visible above the shadow
    below = _sigmoid((yy - bottom) / 0.03) * np.exp(-np.clip(yy - bottom, 0, None) / rng.uniform(0.2, 0.6))
    posterior = column_profile[None, :] * below
    sign = -1.0 if rng.random() < 0.5 else 0.6
    tissue = tissue * (1 + sign * rng.uniform(0.05, 0.25) * posterior)

    # Distractors: vertical acoustic shadow streaks and faint dark blobs that are not lesion.
    for _ in range(int(rng.integers(1, 4))):
        x0 = rng.uniform(0, size)
        width = rng.uniform(0.02, 0.08) * size
        start = rng.uniform(0.1, 0.7)
        streak = np.exp(-(((np.arange(size) - x0) / width) ** 2))[None, :] * _sigmoid((yy - start) / 0.05)
        tissue = tissue * (1 - rng.uniform(0.1, 0.35) * streak)
    for _ in range(int(rng.integers(0, 2))):
        _, blob_edge = _irregular_shape(rng, size, radius_range=(0.05, 0.12), roughness=0.1, keep_out=mask)
        blob = _soft(blob_edge, 3.0 * size / 128) * (~mask)
        tissue = tissue * (1 - rng.uniform(0.1, 0.25) * blob)

    # Depth attenuation with time-gain-compensation residue.
    tissue = tissue * np.exp(-rng.uniform(0.2, 0.8) * yy) * (1 + 0.1 * np.sin(2 * np.pi * yy * rng.uniform(0.5, 1.5)))

    # Multiplicative Rayleigh speckle, correlated laterally (the beam is wider than the pulse).
    re = rng.standard_normal((size, size))
    im = rng.standard_normal((size, size))
    lateral = max(1, int(round(size / 100)))
    re = _box_blur(re, lateral, axis=1)
    im = _box_blur(im, lateral, axis=1)
    speckle = np.hypot(re, im)
    speckle = speckle / speckle.mean()
    image = tissue * (1 + rng.uniform(0.35, 0.6) * (speckle - 1))
    image = image + 0.03 * rng.standard_normal((size, size))
    image = np.clip(image * rng.uniform(0.8, 1.1), 0, 1)
    return image, mask


def _render_dermoscopy(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    skin_color = np.array([0.86, 0.64, 0.54]) + rng.uniform(-0.08, 0.06, 3)
    texture = 0.04 * _fractal_noise(rng, size, (4, 12, 32))
    skin = skin_color[None, None, :] * (1 + texture[..., None] + 0.02 * rng.standard_normal((size, size, 1)))

    mask, edge = _irregular_shape(rng, size, radius_range=(0.18, 0.36), roughness=0.25)
    soft = _soft(edge, rng.uniform(1.5, 5.0) * size / 128)
    # Uneven pigment: darker core, patchy network, sometimes a pale regression area inside.
    pigment = np.array([0.42, 0.26, 0.18]) * rng.uniform(0.45, 1.2) * (1 + rng.uniform(-0.1, 0.1, 3))
    depth = np.clip(0.55 + 0.3 * _fractal_noise(rng, size, (5, 10, 20)) + 0.25 * np.clip(edge / (0.15 * size), 0, 1), 0, 1)
    strength = rng.uniform(0.45, 0.95)  # low values give faint, low-contrast lesions
    alpha = soft * strength * depth
    lesion = skin * (1 - alpha[..., None]) + pigment[None, None, :] * alpha[..., None]
    image = lesion

    # Hairs: dark thin curves, some forced to cross the lesion.
    hair_layer = np.zeros((size, size))
    n_hairs = int(rng.integers(2, 9))
    ys_lesion, xs_lesion = np.nonzero(mask)
    for i in range(n_hairs):
        if i < 2 and rng.random() < 0.8:  # through a lesion pixel
            j = rng.integers(len(ys_lesion))
            through = np.array([ys_lesion[j], xs_lesion[j]], dtype=np.float64)
            angle = rng.uniform(0, np.pi)
            d = np.array([np.sin(angle), np.cos(angle)]) * size
            start, end = through - d, through + d
        else:
            start = rng.uniform(-0.2, 1.2, 2) * size
            end = rng.uniform(-0.2, 1.2, 2) * size
        points = _curve_points(rng, start, end, bend=0.25)
        thickness = rng.uniform(0.4, 1.2) * max(1.0, size / 128)
        _stamp_disks(hair_layer, points, thickness, np.full(len(points), rng.uniform(0.6, 0.95)))
    hair_color = np.array([0.12, 0.08, 0.06])
    image = image * (1 - hair_layer[..., None]) + hair_color * hair_layer[..., None]

    # Dermoscope vignetting (dark corners) and a slight global color cast.
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    r = np.hypot(yy, xx) / 0.5
    vignette = 1 - rng.uniform(0.2, 0.6) * np.clip(r - rng.uniform(0.6, 0.9), 0, None) / 0.5
    image = image * np.clip(vignette, 0.05, 1)[..., None]
    image = image * (1 + rng.uniform(-0.06, 0.06, 3))[None, None, :]
    image = image + 0.015 * rng.standard_normal(image.shape)
    return np.clip(image, 0, 1), mask


def _render_histology(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    stroma_color = np.array([0.86, 0.6, 0.74]) + rng.uniform(-0.06, 0.06, 3)
    fibers = _fractal_noise(rng, size, (6, 16, 40))
    stroma = stroma_color[None, None, :] * (1 + 0.08 * fibers[..., None])

    mask = np.zeros((size, size), dtype=bool)
    edges = []
    for _ in range(int(rng.integers(1, 4))):
        gland, gland_edge = _irregular_shape(rng, size, radius_range=(0.14, 0.26), roughness=0.2, keep_out=mask)
        mask |= gland
        edges.append(gland_edge)
    edge = np.max(edges, axis=0)  # signed distance to the nearest gland boundary (inside positive)
    ring_width = rng.uniform(0.03, 0.08) * size
    lumen = _soft(edge - ring_width, 2.0)
    epithelium = np.clip(_soft(edge, 1.5) - lumen, 0, 1)

    # Lumen from nearly white to stroma-like pink (mucin, debris), so brightness alone is not the answer.
    lumen_mix = rng.uniform(0.25, 0.9)
    lumen_color = lumen_mix * np.array([0.95, 0.9, 0.93]) + (1 - lumen_mix) * stroma_color
    lumen_color = lumen_color[None, None, :] * (1 + 0.05 * _smooth_noise(rng, size, 10)[..., None])
    epithelium_color = np.array([0.72, 0.5, 0.72]) + rng.uniform(-0.05, 0.05, 3)
    image = stroma * (1 - lumen[..., None]) + lumen_color * lumen[..., None]
    image = image * (1 - epithelium[..., None]) + epithelium_color * epithelium[..., None]

    # Distractors: pale stromal clefts / vessels without an epithelial ring, outside the glands.
    for _ in range(int(rng.integers(0, 3))):
        _, cleft_edge = _irregular_shape(rng, size, radius_range=(0.04, 0.1), roughness=0.3, keep_out=mask)
        cleft = _soft(cleft_edge, 1.5) * (~mask) * rng.uniform(0.4, 0.8)
        image = image * (1 - cleft[..., None]) + np.array([0.96, 0.9, 0.94]) * cleft[..., None]

    # Nuclei: dense along the gland epithelium, scattered in the stroma (a nuclear-density cue that is
    # not perfectly aligned with the boundary).
    nucleus_color = np.array([0.35, 0.2, 0.5])
    nuclear_radius = max(0.8, size / 110)
    n_stroma = int(size * size / rng.uniform(40, 90))
    stroma_nuclei = rng.uniform(0, size - 1, (n_stroma, 2))
    ey, ex = np.nonzero(epithelium > 0.3)
    density = rng.uniform(0.5, 1.0)
    n_epi = min(len(ey), int(density * len(ey) / max(1.0, 2.5 * nuclear_radius**2)))
    pick = rng.choice(len(ey), size=n_epi, replace=False) if n_epi else np.zeros(0, dtype=int)
    epi_nuclei = np.stack([ey[pick], ex[pick]], axis=1).astype(np.float64) + rng.uniform(-1.0, 1.0, (n_epi, 2))
    centers = np.concatenate([stroma_nuclei, epi_nuclei])
    shade = 1 + rng.uniform(-0.15, 0.25, (len(centers), 1))
    _stamp_disks(image, centers, nuclear_radius * rng.uniform(0.7, 1.3, len(centers)), nucleus_color * shade)

    image = image * (1 + 0.06 * _smooth_noise(rng, size, 3)[..., None])  # uneven staining
    image = image + 0.025 * rng.standard_normal(image.shape)
    return np.clip(image, 0, 1), mask


_RENDERERS = {
    "ultrasound": _render_ultrasound,
    "dermoscopy": _render_dermoscopy,
    "histology": _render_histology,
}


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------
def _check_kinds(kinds: Sequence[str] | None) -> tuple[str, ...]:
    if kinds is None:
        return KINDS
    if isinstance(kinds, str):
        kinds = [kinds]
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in _RENDERERS]
    if not kinds or unknown:
        raise ValueError(
            f"`kinds` must be a non-empty subset of {list(KINDS)}, got {list(kinds)}; "
            f"unknown: {unknown}. Pass None for all kinds."
        )
    return kinds


def _check_image_size(image_size: int) -> int:
    if not isinstance(image_size, (int, np.integer)) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"`image_size` must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}.")
    return int(image_size)


def synthetic_id2label(num_classes: int) -> dict[int, str]:
    """Class names of the synthetic data with `num_classes` foreground classes (see `gms_hub.data.synthetic_multiclass`)."""
    from .synthetic_multiclass import synthetic_id2label as names

    return names(num_classes)


def generate_example(
    kind: str, rng: np.random.Generator, image_size: int = 224, num_classes: int = 1
) -> tuple[Image.Image, Image.Image]:
    """Render one synthetic image and its exact ground-truth mask.

    The mask is the geometry the image was painted from; it is non-empty and keeps at least two
    pixels of background on every side of the image.

    Args:
        kind (`str`): one of `KINDS` (``"ultrasound"``, ``"dermoscopy"``, ``"histology"``).
        rng (`np.random.Generator`): the only source of randomness; the same generator state gives
            the same bytes.
        image_size (`int`, defaults to 224): width and height of the square output, >= 32.
        num_classes (`int`, defaults to 1): 1 for the binary benchmark; 2 or 3 for that many kinds of
            non-overlapping structure, every one present (`gms_hub.data.synthetic_multiclass`).

    Returns:
        `tuple[PIL.Image.Image, PIL.Image.Image]`: the image (mode ``"L"`` for ultrasound, ``"RGB"``
        otherwise) and the mask (mode ``"L"``, values exactly 0 and 255; class indices 0..K when
        `num_classes` > 1).

    Example:
        >>> image, mask = generate_example("ultrasound", np.random.default_rng(0), image_size=64)
        >>> image.mode, mask.size, np.unique(np.asarray(mask)).tolist()
        ('L', (64, 64), [0, 255])
    """
    (kind,) = _check_kinds([kind])
    size = _check_image_size(image_size)
    if num_classes != 1:
        from .synthetic_multiclass import render_multiclass

        image, mask = render_multiclass(kind, rng, size, num_classes)
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
        return Image.fromarray(np.rint(image * 255).astype(np.uint8)), Image.fromarray(mask)
    image, mask = _RENDERERS[kind](rng, size)
    assert mask.any() and not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
    pixels = np.rint(image * 255).astype(np.uint8)
    return Image.fromarray(pixels), Image.fromarray(mask.astype(np.uint8) * 255)


def generate_split(
    split: str,
    num_examples: int,
    seed: int = 2333,
    image_size: int = 224,
    kinds: Sequence[str] | None = None,
    num_classes: int = 1,
) -> dict[str, list]:
    """Render one split as column lists (``image``, ``mask``, ``name``, ``kind``).

    Example ``i`` has kind ``kinds[i % len(kinds)]`` and its own generator
    ``np.random.default_rng([seed, SPLIT_IDS[split], i])``.

    Args:
        split (`str`): ``"train"``, ``"validation"`` or ``"test"``.
        num_examples (`int`): how many examples, >= 0.
        seed (`int`, defaults to 2333): base seed.
        image_size (`int`, defaults to 224): square image size in pixels.
        kinds (`Sequence[str]`, *optional*): subset of `KINDS`; all of them by default.
        num_classes (`int`, defaults to 1): foreground classes (see `generate_example`).

    Returns:
        `dict[str, list]`: columns of equal length, ready for `datasets.Dataset.from_dict`.

    Example:
        >>> columns = generate_split("test", 3, seed=7, image_size=64)
        >>> columns["name"], columns["kind"]
        (['synthetic_test_00000', 'synthetic_test_00001', 'synthetic_test_00002'], ['ultrasound', 'dermoscopy', 'histology'])
    """
    if split not in SPLIT_IDS:
        raise ValueError(f"`split` must be one of {list(SPLIT_IDS)}, got {split!r}.")
    if int(num_examples) < 0:
        raise ValueError(f"`num_examples` must be >= 0, got {num_examples}.")
    if int(seed) < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed} (numpy seeds cannot be negative).")
    kinds = _check_kinds(kinds)
    size = _check_image_size(image_size)
    columns: dict[str, list] = {"image": [], "mask": [], "name": [], "kind": []}
    for index in range(int(num_examples)):
        kind = kinds[index % len(kinds)]
        rng = np.random.default_rng([int(seed), SPLIT_IDS[split], index])
        image, mask = generate_example(kind, rng, size, num_classes=num_classes)
        columns["image"].append(image)
        columns["mask"].append(mask)
        columns["name"].append(f"synthetic_{split}_{index:05d}")
        columns["kind"].append(kind)
    return columns


def make_synthetic_dataset(
    num_train: int = 300,
    num_validation: int = 60,
    num_test: int = 90,
    seed: int = 2333,
    image_size: int = 224,
    kinds: Sequence[str] | None = None,
    num_classes: int = 1,
):
    """Generate the synthetic benchmark as a `datasets.DatasetDict` in the project's schema.

    Args:
        num_train (`int`, defaults to 300): examples in ``train``.
        num_validation (`int`, defaults to 60): examples in ``validation``.
        num_test (`int`, defaults to 90): examples in ``test``.
        seed (`int`, defaults to 2333): base seed; the same seed gives the same bytes.
        image_size (`int`, defaults to 224): square image size in pixels (>= 32).
        kinds (`Sequence[str]`, *optional*): subset of `KINDS` to mix; all of them by default.
        num_classes (`int`, defaults to 1): foreground classes, 1 to 3 (see `generate_example`); the class
            names are `synthetic_id2label(num_classes)`.

    Returns:
        `datasets.DatasetDict`: splits ``train``, ``validation``, ``test`` with columns ``image``
        (`Image`, ``L`` or ``RGB``), ``mask`` (`Image`, ``L``, 0/255, or class indices 0..K), ``name`` and
        ``kind`` (strings).

    Example:
        >>> ds = make_synthetic_dataset(num_train=6, num_validation=3, num_test=3, image_size=64)
        >>> ds["train"][0]["name"], ds["train"].features["mask"]
        ('synthetic_train_00000', Image(mode=None, decode=True))
    """
    import datasets  # imported here: generating arrays alone should not need `datasets`

    features = datasets.Features(
        {
            "image": datasets.Image(),
            "mask": datasets.Image(),
            "name": datasets.Value("string"),
            "kind": datasets.Value("string"),
        }
    )
    counts = {"train": num_train, "validation": num_validation, "test": num_test}
    splits = {}
    for split, count in counts.items():
        logger.info("Generating %d synthetic %s examples (seed %d, %d px)", count, split, seed, image_size)
        columns = generate_split(split, count, seed=seed, image_size=image_size, kinds=kinds, num_classes=num_classes)
        splits[split] = datasets.Dataset.from_dict(columns, features=features, split=split)
    return datasets.DatasetDict(splits)


SYNTHETIC_CARD: dict = {
    "pretty_name": "GMS synthetic segmentation benchmark",
    "license": "apache-2.0",
    "task_categories": ["image-segmentation"],
    "tags": ["medical", "synthetic", "segmentation"],
    "source": "Generated by `gms_hub.data.synthetic` (numpy rendering, no real patient data).",
    "citation": None,
    "description": (
        "Synthetic image/mask pairs that resemble the modalities of the GMS paper's benchmarks. "
        "Each image is rendered from its mask, so masks are exact (values 0 and 255), non-empty and "
        "never touch the image border.\n\n"
        "- **ultrasound** (grayscale, BUS/BUSI-like): Rayleigh speckle over layered tissue, depth "
        "attenuation, a darker irregular lesion with a soft low-contrast rim and internal echoes, "
        "posterior shadowing or enhancement, plus shadow streaks and faint dark blobs that are not lesion.\n"
        "- **dermoscopy** (RGB, HAM10000-like): textured skin, vignetting, a pigmented irregular lesion "
        "with uneven pigment and blurred border, dark hair-like curves crossing it.\n"
        "- **histology** (RGB, GlaS-like): H&E-like stroma with scattered nuclei and one to three glands "
        "(the mask): a pale lumen ringed by dense epithelial nuclei.\n\n"
        "Not medical data; for tests, demos and CI only."
    ),
}
"""Dataset-card metadata for the synthetic benchmark (see `synthetic_card` for the full text)."""


def synthetic_card(
    counts: dict[str, int],
    seed: int,
    image_size: int,
    kinds: Sequence[str] | None = None,
    num_classes: int = 1,
) -> str:
    """Markdown body of the synthetic benchmark's dataset card (no YAML header).

    Args:
        counts (`dict[str, int]`): examples per split, e.g. ``{"train": 300, "validation": 60, "test": 90}``.
        seed (`int`): the base seed used.
        image_size (`int`): the image size used.
        kinds (`Sequence[str]`, *optional*): the kinds mixed in; all by default.
        num_classes (`int`, defaults to 1): foreground classes; above 1 the card lists them.

    Returns:
        `str`: markdown with the description, generation parameters, the command that regenerates the
        data, and the split counts.

    Example:
        >>> text = synthetic_card({"train": 6, "validation": 3, "test": 3}, seed=1, image_size=64)
        >>> "--seed 1" in text
        True
    """
    kinds = _check_kinds(kinds)
    command = (
        "python -m gms_hub.data.prepare synthetic --output_dir DIR "
        f"--num_train {counts.get('train', 0)} --num_validation {counts.get('validation', 0)} "
        f"--num_test {counts.get('test', 0)} --seed {seed} --image_size {image_size}"
        + (f" --num_classes {num_classes}" if num_classes != 1 else "")
    )
    classes = ""
    if num_classes != 1:
        names = ", ".join(f"{i} = `{name}`" for i, name in synthetic_id2label(num_classes).items())
        classes = (f"- classes: {names}; one non-overlapping structure of each class per image, masks hold "
                   "class indices (see `gms_hub.data.synthetic_multiclass`)\n")
    rows = "\n".join(f"| {split} | {count} |" for split, count in counts.items())
    return (
        f"# {SYNTHETIC_CARD['pretty_name']}\n\n"
        f"{SYNTHETIC_CARD['description']}\n\n"
        "## Generation\n\n"
        f"- seed: {seed} (example `i` of split `s` uses `numpy.random.default_rng([seed, split_id, i])`, "
        f"split ids {SPLIT_IDS})\n"
        f"- image size: {image_size} x {image_size}\n"
        f"- kinds: {', '.join(kinds)} (cycled in this order)\n"
        f"{classes}"
        f"- source: {SYNTHETIC_CARD['source']}\n\n"
        f"Regenerate with:\n\n```bash\n{command}\n```\n\n"
        "## Splits\n\n| split | examples |\n|---|---|\n"
        f"{rows}\n"
    )
