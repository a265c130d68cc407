"""Convert a benchmark's raw download (or generate the synthetic one) into a Hub-style dataset folder.

Usage:
    python -m gms_hub.data.prepare busi --raw_dir Dataset_BUSI_with_GT --output_dir outputs/gms-busi
    python -m gms_hub.data.prepare ham10000 --raw_dir HAM10000 --output_dir outputs/gms-ham10000 --num_proc 4
    python -m gms_hub.data.prepare glas --raw_dir GlaS --output_dir outputs/gms-glas --splits glas.json \\
        --push_to_hub --hub_dataset_id my-org/gms-glas --private
    python -m gms_hub.data.prepare synthetic --output_dir outputs/synthetic --num_train 64 --image_size 64
    python -m gms_hub.data.prepare busi --multiclass --raw_dir Dataset_BUSI_with_GT --output_dir outputs/gms-busi-mc
    python -m gms_hub.data.prepare folder --images scans/images --masks scans/masks --mask_suffix _mask \
        --labels benign,malignant --output_dir outputs/my-dataset
    python -m gms_hub.data.prepare mni152 --output_dir outputs/mni152-axial --plane axial --image_size 256
    python -m gms_hub.data.prepare folder --images ct/images --masks ct/masks --output_dir outputs/my-ct  # .dcm, .nii.gz
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..io.safety import UnsafeOutputError
from .benchmarks import BENCHMARKS
from .bus import BUSConverter
from .busi import BUSIConverter
from .common import BenchmarkConverter
from .convert import convert_benchmark
from .folder import convert_folder
from .glas import GlaSConverter
from .ham10000 import HAM10000Converter
from .hub import DEFAULT_MAX_SHARD_SIZE, DatasetCardInfo, push_dataset_folder, write_dataset_folder
from .kvasir_instrument import KvasirInstrumentConverter

logger = logging.getLogger(__name__)

_BY_DATASET = {
    converter.dataset: converter
    for converter in (BUSConverter, BUSIConverter, GlaSConverter, HAM10000Converter, KvasirInstrumentConverter)
}
# One converter per benchmark of `gms_hub.data.benchmarks.BENCHMARKS`, in its order (a missing one fails at import).
CONVERTERS: dict[str, type[BenchmarkConverter]] = {key: _BY_DATASET[key] for key in BENCHMARKS}


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output_dir", required=True, help="Dataset folder to create (Hub repo layout).")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing non-empty --output_dir.")
    parser.add_argument("--max_shard_size", default=DEFAULT_MAX_SHARD_SIZE, help="Parquet shard size limit, e.g. 500MB.")
    parser.add_argument("--push_to_hub", action="store_true", help="Upload the folder to the Hub when done.")
    parser.add_argument("--hub_dataset_id", default=None, help="Dataset repo id for --push_to_hub, e.g. my-org/gms-busi.")
    parser.add_argument("--hub_token", default=None, help="Hub token (defaults to the logged-in one).")
    parser.add_argument("--private", action="store_true", help="Create the Hub repo as private.")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gms_hub.data.prepare",
        description="Convert a GMS benchmark (or generate the synthetic one) into a Hub-style dataset folder.",
    )
    choices = "{" + ",".join([*CONVERTERS, "synthetic", "folder", "mni152"]) + "}"
    subparsers = parser.add_subparsers(dest="dataset", required=True, metavar=choices)
    for name, converter in CONVERTERS.items():
        sub = subparsers.add_parser(name, help=f"{converter.display_name}: {converter.layout}")
        sub.add_argument("--raw_dir", required=True, help=f"The extracted download ({converter.layout}).")
        sub.add_argument(
            "--splits",
            default=None,
            help="Split list: .pkl or .json path or URL (default: the paper's pickle from the GMS repository).",
        )
        sub.add_argument(
            "--validation_fraction", type=float, default=0.1, help="Share of the paper's train list for validation."
        )
        sub.add_argument("--seed", type=int, default=2333, help="Seed of the validation carve-out.")
        sub.add_argument("--num_proc", type=int, default=1, help="Processes decoding the raw files.")
        if name == "busi":
            sub.add_argument("--multiclass", action="store_true",
                             help="Masks hold the lesion type (1 benign, 2 malignant) instead of 0/255; same split.")
        _add_common(sub)
    sub = subparsers.add_parser("synthetic", help="Generate the synthetic benchmark.")
    sub.add_argument("--num_train", type=int, default=None)
    sub.add_argument("--num_validation", type=int, default=None)
    sub.add_argument("--num_test", type=int, default=None)
    sub.add_argument("--seed", type=int, default=None)
    sub.add_argument("--image_size", type=int, default=None)
    sub.add_argument("--num_classes", type=int, default=None,
                     help="Kinds of non-overlapping structure per image (1 to 3); masks hold class indices when > 1.")
    _add_common(sub)
    sub = subparsers.add_parser("folder", help="Your own folder of images and masks (binary or multi-class).")
    sub.add_argument("--images", required=True,
                     help="Folder of images (any nesting; png, jpg, bmp, tif, DICOM, NIfTI: a multi-frame DICOM or a "
                          "3D NIfTI gives one example per frame/slice, stored as 8-bit PNG; the single-frame DICOM files of one "
                          "series are one volume, rows <folder>/series<n>_slice<k> in spatial order).")
    sub.add_argument("--masks", required=True,
                     help="Folder of masks mirroring --images' sub-folders (image files, or DICOM/NIfTI holding class "
                          "values, frame for frame; a mask file per slice file of a DICOM series).")
    sub.add_argument("--mask_suffix", default=None, help="Suffix of mask stems, e.g. _mask or _seg.")
    sub.add_argument("--labels", default=None,
                     help="Foreground class names in index order, e.g. benign,malignant (default class_1..class_K).")
    sub.add_argument("--palette", default=None,
                     help='RGB colour masks: JSON file or string {"label": [r, g, b], ...}; black is background.')
    sub.add_argument("--splits", default=None,
                     help="Split list (.json/.pkl, {\"train\": [...], \"test\": [...]}) of names (image paths without "
                          "extension); default: a seeded split by the fractions.")
    sub.add_argument("--test_fraction", type=float, default=0.2, help="Share of all pairs for test (without --splits).")
    sub.add_argument("--validation_fraction", type=float, default=0.1,
                     help="Share of all pairs (of the train list with --splits) for validation.")
    sub.add_argument("--seed", type=int, default=2333, help="Seed of the split.")
    sub.add_argument("--slice_axis", type=int, default=-1, help="Axis 3D NIfTI images and masks are sliced along.")
    _add_common(sub)
    sub = subparsers.add_parser("mni152", help="Grey/white matter slices of the MNI ICBM152 template (from nilearn).")
    sub.add_argument("--plane", default="axial", choices=["axial", "coronal", "sagittal"], help="Slicing plane.")
    sub.add_argument("--image_size", type=int, default=256, help="Side of the square slices (0: the template's).")
    sub.add_argument("--source", default=None,
                     help="Folder of the three template files (default: the installed nilearn's data folder).")
    sub.add_argument("--min_brain_fraction", type=float, default=0.02, help="Least share of a slice that is brain.")
    sub.add_argument("--train_slab", type=int, default=20, help="Training slices per slab cycle.")
    sub.add_argument("--held_out_slab", type=int, default=10, help="Slices per test or validation slab.")
    sub.add_argument("--gap", type=int, default=5, help="Dropped slices on each side of a held-out slab (>= 5).")
    sub.add_argument("--margin", type=int, default=4, help="Voxels kept around the brain's bounding box in-plane.")
    _add_common(sub)
    args = parser.parse_args(argv)
    if args.push_to_hub and not args.hub_dataset_id:
        parser.error("--push_to_hub needs --hub_dataset_id (e.g. my-org/gms-busi).")
    if getattr(args, "num_proc", 1) < 1:
        parser.error(f"--num_proc must be >= 1, got {args.num_proc}.")
    return args


def _recorded_command(args: argparse.Namespace) -> str:
    """The command for the dataset card: local paths become placeholders, the token is never recorded."""
    parts = ["python -m gms_hub.data.prepare", args.dataset]
    if args.dataset == "folder":
        parts += ["--images", "IMAGES_DIR", "--masks", "MASKS_DIR", "--output_dir", "OUTPUT_DIR"]
        if args.mask_suffix:
            parts += ["--mask_suffix", shlex.quote(args.mask_suffix)]
        if args.labels:
            parts += ["--labels", shlex.quote(args.labels)]
        if args.palette:
            palette = Path(args.palette).name if os.path.isfile(args.palette) else args.palette
            parts += ["--palette", shlex.quote(palette)]
        if args.splits:
            parts += ["--splits", shlex.quote(Path(args.splits).name)]
        else:
            parts += ["--test_fraction", str(args.test_fraction)]
        parts += ["--validation_fraction", str(args.validation_fraction), "--seed", str(args.seed)]
        if args.slice_axis != -1:
            parts += ["--slice_axis", str(args.slice_axis)]
        return " ".join(parts)
    if args.dataset == "mni152":
        for key in ("plane", "image_size", "min_brain_fraction", "train_slab", "held_out_slab", "gap", "margin"):
            parts += [f"--{key}", str(getattr(args, key))]
        return " ".join(parts + ["--output_dir", "OUTPUT_DIR"])
    if args.dataset == "synthetic":
        for key in ("num_train", "num_validation", "num_test", "seed", "image_size", "num_classes"):
            if getattr(args, key) is not None:
                parts += [f"--{key}", str(getattr(args, key))]
        parts += ["--output_dir", "OUTPUT_DIR"]
        return " ".join(parts)
    if getattr(args, "multiclass", False):
        parts.append("--multiclass")
    parts += ["--raw_dir", "RAW_DIR", "--output_dir", "OUTPUT_DIR"]
    if args.splits is not None:
        splits = args.splits if args.splits.startswith(("http://", "https://")) else Path(args.splits).name
        parts += ["--splits", shlex.quote(splits)]
    parts += ["--validation_fraction", str(args.validation_fraction), "--seed", str(args.seed)]
    return " ".join(parts)


def _synthetic(args: argparse.Namespace) -> None:
    from . import synthetic

    given = {key: getattr(args, key) for key in ("num_train", "num_validation", "num_test", "seed", "image_size")}
    defaults = {k: p.default for k, p in inspect.signature(synthetic.make_synthetic_dataset).parameters.items()}
    used = {key: (value if value is not None else defaults[key]) for key, value in given.items()}
    num_classes = args.num_classes if args.num_classes is not None else 1
    dataset_dict = synthetic.make_synthetic_dataset(**used, num_classes=num_classes)
    counts = {split: len(ds) for split, ds in dataset_dict.items()}
    body = synthetic.synthetic_card(counts, seed=used["seed"], image_size=used["image_size"], num_classes=num_classes)
    if "## Generation" in body:  # the title, description and counts are already in the card
        body = body[body.index("## Generation"):].split("## Splits")[0]
    card = DatasetCardInfo.from_mapping({**synthetic.SYNTHETIC_CARD, "body": body})
    provenance = {"seed": used["seed"], "command": _recorded_command(args)}
    write_dataset_folder(
        dataset_dict, args.output_dir, card, provenance=provenance, max_shard_size=args.max_shard_size,
        overwrite=args.overwrite, id2label=synthetic.synthetic_id2label(num_classes) if num_classes > 1 else None,
    )


def _mni152(args: argparse.Namespace) -> None:
    from . import mni152

    dataset_dict, provenance = mni152.make_mni152_dataset(
        source=args.source, plane=args.plane, image_size=args.image_size or None,
        min_brain_fraction=args.min_brain_fraction, train_slab=args.train_slab, held_out_slab=args.held_out_slab,
        gap=args.gap, margin=args.margin,
    )
    card = DatasetCardInfo.from_mapping({**mni152.MNI152_CARD, "body": mni152.mni152_card_body(provenance)})
    write_dataset_folder(
        dataset_dict, args.output_dir, card, provenance={**provenance, "command": _recorded_command(args)},
        max_shard_size=args.max_shard_size, overwrite=args.overwrite, id2label=mni152.MNI152_ID2LABEL,
    )


def main(args: argparse.Namespace) -> Path:
    """Run the conversion (and the push) described by parsed command-line arguments."""
    if args.dataset == "synthetic":
        _synthetic(args)
    elif args.dataset == "mni152":
        _mni152(args)
    elif args.dataset == "folder":
        convert_folder(
            images=args.images,
            masks=args.masks,
            output_dir=args.output_dir,
            mask_suffix=args.mask_suffix,
            labels=args.labels,
            palette=args.palette,
            splits=args.splits,
            test_fraction=args.test_fraction,
            validation_fraction=args.validation_fraction,
            seed=args.seed,
            max_shard_size=args.max_shard_size,
            overwrite=args.overwrite,
            progress=True,
            command=_recorded_command(args),
            slice_axis=args.slice_axis,
        )
    else:
        converter = BUSIConverter(multiclass=True) if getattr(args, "multiclass", False) else CONVERTERS[args.dataset]()
        convert_benchmark(
            converter,
            raw_dir=args.raw_dir,
            output_dir=args.output_dir,
            splits=args.splits,
            validation_fraction=args.validation_fraction,
            seed=args.seed,
            num_proc=args.num_proc,
            max_shard_size=args.max_shard_size,
            overwrite=args.overwrite,
            progress=True,
            command=_recorded_command(args),
        )
    logger.info("Dataset folder ready: %s", os.path.abspath(args.output_dir))
    if args.push_to_hub:
        url = push_dataset_folder(args.output_dir, args.hub_dataset_id, token=args.hub_token, private=args.private or None)
        logger.info("Pushed to %s", url)
    return Path(args.output_dir)


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: parse, run, and turn expected errors into a one-paragraph message and exit code 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        main(args)
    except UnsafeOutputError as err:  # an argument that would put the inputs at risk: a usage error
        logger.error("%s", err)
        return 2
    except (ValueError, FileNotFoundError, FileExistsError, ConnectionError) as err:
        logger.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
