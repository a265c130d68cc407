"""Regenerate the app's example images (examples/) with the project's synthetic generator.

Usage:
    python -m scripts.make_examples [--output_dir examples] [--seed 5]   (from the repo root)

The files are small on purpose (a few KB to ~20 KB): the Space shows them as clickable examples and
the app's float16 check runs on them. `examples/own-data/` is the README's "Train on your own data" input, in the
layout a user brings: `scans/<case>.png` with binary 0/255 masks in `labels/<case>_mask.png`, and 2-class index
masks (0 background, 1, 2) of other scans in `scans-2class/` + `labels-2class/`; 64 px, a few KB each.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from gms_hub.data.synthetic import generate_example

logger = logging.getLogger(__name__)

OWN_DATA_CASES = 16  # per folder: enough for a seeded train/validation/test split and a batch of 4
OWN_DATA_SIZE = 64
# (file name, generator kind, size in pixels)
EXAMPLES = [
    ("ultrasound.png", "ultrasound", 128),
    ("ultrasound_16bit.png", "ultrasound", 96),
    ("dermoscopy.jpg", "dermoscopy", 160),
    ("histology.png", "histology", 96),
]


def to_16bit(image: Image.Image) -> Image.Image:
    """8-bit gray -> a 12-bit-in-16-bit scan (values 0..4095), as many ultrasound exports store it."""
    pixels = np.asarray(image, dtype=np.uint32) * 4095 // 255
    return Image.fromarray(pixels.astype(np.uint16))  # mode I;16


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default=str(Path(__file__).resolve().parents[1] / "examples"))
    parser.add_argument("--seed", type=int, default=5)
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for index, (name, kind, size) in enumerate(EXAMPLES):
        image, _ = generate_example(kind, np.random.default_rng([args.seed, index]), image_size=size)
        path = output_dir / name
        if name.endswith("_16bit.png"):
            image = to_16bit(image)
            image.save(path, format="PNG", optimize=True)
        elif name.endswith(".jpg"):
            image.save(path, format="JPEG", quality=85, optimize=True)
        else:
            image.save(path, format="PNG", optimize=True)
        logger.info("%s: %s %s, %d bytes", path, image.mode, image.size, path.stat().st_size)
    write_own_data(output_dir / "own-data", args.seed)


def write_own_data(folder: Path, seed: int) -> None:
    """Binary (0/255) and 2-class (0/1/2) image + mask folders for the README's own-data recipe."""
    for num_classes, images, masks in ((1, "scans", "labels"), (2, "scans-2class", "labels-2class")):
        (folder / images).mkdir(parents=True, exist_ok=True)
        (folder / masks).mkdir(parents=True, exist_ok=True)
        for case in range(OWN_DATA_CASES):
            rng = np.random.default_rng([seed, 100 * num_classes, case])
            image, mask = generate_example("ultrasound", rng, image_size=OWN_DATA_SIZE, num_classes=num_classes)
            image.save(folder / images / f"case{case:02d}.png", format="PNG", optimize=True)
            mask.save(folder / masks / f"case{case:02d}_mask.png", format="PNG", optimize=True)
    logger.info("%s: %d binary and %d 2-class cases", folder, OWN_DATA_CASES, OWN_DATA_CASES)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(parse_args())
