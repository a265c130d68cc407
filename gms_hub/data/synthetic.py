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

from .synthetic_kinds import RENDERERS

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

# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------
def _check_kinds(kinds: Sequence[str] | None) -> tuple[str, ...]:
    if kinds is None:
        return KINDS
    if isinstance(kinds, str):
        kinds = [kinds]
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in RENDERERS]
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
    image, mask = RENDERERS[kind](rng, size)
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
