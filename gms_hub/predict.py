"""Batch prediction: one lossless PNG mask per input image.

Usage:
    python -m gms_hub.predict --model org/gms-busi --input "scans/*.png" --output_dir masks/
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .image_io import IMAGE_EXTENSIONS, read_image, write_mask_png
from .resolver import ACCEPTED_FORMS, load_model

logger = logging.getLogger(__name__)


def find_inputs(pattern: str) -> List[Path]:
    """A file, a folder (its image files, sorted) or a glob pattern -> list of files."""
    path = Path(pattern)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    if not matches:
        raise FileNotFoundError(f"--input {pattern!r} matches no file (give a file, a folder or a glob like 'dir/*.png').")
    return matches


def output_names(files: List[Path]) -> List[str]:
    """`<stem>.png` per input; inputs sharing a stem (a.png, a.jpg) get their extension appended."""
    stems = [f.stem for f in files]
    return [f"{f.stem}_{f.suffix.lstrip('.').lower()}.png" if stems.count(f.stem) > 1 else f"{f.stem}.png" for f in files]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Segment a file, a folder or a glob of images with a GMS model.")
    parser.add_argument("--model", default="demo", help=f"The model (default: demo): {ACCEPTED_FORMS}.")
    parser.add_argument("--input", required=True, help="An image file, a folder, or a glob pattern (quote it).")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--threshold", type=float, default=None, help="Probability threshold (default: the model's, 0.5).")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--fast", action="store_true",
                        help="Apply gms_hub.fast.optimize (exact rewrites: probabilities equal to float rounding).")
    parser.add_argument("--save_probabilities", action="store_true",
                        help="Also write <name>_prob.png: the probability map as a 16-bit PNG (value / 65535).")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    files = find_inputs(args.input)
    names = output_names(files)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model, device=device)
    if args.fast:
        from .fast import optimize

        optimize(model)
    failures: List[Tuple[Path, str]] = []
    written = 0
    progress = tqdm(total=len(files), desc="Segmenting", unit="image")
    for start in range(0, len(files), args.batch_size):
        batch: List[Tuple[Image.Image, str]] = []
        for path, name in zip(files[start : start + args.batch_size], names[start : start + args.batch_size]):
            try:
                batch.append((read_image(path), name))
            except ValueError as err:
                failures.append((path, str(err)))
                progress.update(1)
        if not batch:
            continue
        try:
            masks, probs = model.segment([b[0] for b in batch], threshold=args.threshold, return_probabilities=True)
        except (ValueError, TypeError):  # e.g. NaN pixels: retry one by one to isolate the bad file
            masks, probs = [], []
            for image, name in batch:
                try:
                    mask, prob = model.segment(image, threshold=args.threshold, return_probabilities=True)
                except (ValueError, TypeError) as single_err:
                    failures.append((files[names.index(name)], str(single_err)))
                    mask = prob = None
                masks.append(mask)
                probs.append(prob)
        for (image, name), mask, prob in zip(batch, masks, probs):
            progress.update(1)
            if mask is None:
                continue
            write_mask_png(mask, output_dir / name)
            if args.save_probabilities:
                prob16 = np.round(prob * 65535).astype(np.uint16)
                Image.fromarray(prob16).save(output_dir / name.replace(".png", "_prob.png"))
            written += 1
    progress.close()
    logger.info("Wrote %d mask(s) to %s; %d file(s) failed.", written, output_dir, len(failures))
    for path, reason in failures:
        logger.error("Skipped %s: %s", path, reason)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
