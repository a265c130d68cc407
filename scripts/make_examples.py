"""Regenerate the app's example images (examples/) with the project's synthetic generator.

Usage:
    python -m scripts.make_examples [--output_dir examples] [--seed 5]   (from the repo root)

The files are small on purpose (a few KB to ~20 KB): the Space shows them as clickable examples and
the app's float16 check runs on them.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from gms_hub.data.synthetic import generate_example

logger = logging.getLogger(__name__)

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


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(parse_args())
