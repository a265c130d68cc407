"""Regenerate the Space's T1 brain example (examples/brain_t1.png) from the MNI ICBM152 template in nilearn.

Usage:
    python -m scripts.make_brain_example [--output examples/brain_t1.png] [--image_size 192]   (from the repo root)

The slice comes from the *test* slabs of `python -m gms_hub.data.prepare mni152 --plane axial` (the split the
demo-brain model never trained on): the test slice with the most brain tissue, oriented as the converter orients
every slice (anterior up, the patient's right on the left), cropped to the brain and padded to a square.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from gms_hub.data.mni152 import make_mni152_dataset

logger = logging.getLogger(__name__)


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="examples/brain_t1.png")
    parser.add_argument("--image_size", type=int, default=192)
    parser.add_argument("--source", default=None, help="Folder of the template files (default: nilearn's).")
    args = parser.parse_args(argv)
    splits, _ = make_mni152_dataset(source=args.source, plane="axial", image_size=args.image_size)
    test = splits["test"]
    brain = [int((np.asarray(mask) > 0).sum()) for mask in test["mask"]]
    row = test[int(np.argmax(brain))]
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    row["image"].save(output, optimize=True)
    logger.info("Wrote %s: axial slice %d of the test slabs (%d B)", output, row["slice_index"], output.stat().st_size)
    return output


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
