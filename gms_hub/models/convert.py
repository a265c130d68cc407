"""Convert one of the paper's released `.pth` mapping models into a GMS folder (and push it to the Hub).

Usage:
    python -m gms_hub.convert --checkpoint busi --output_dir gms-busi [--vae SOURCE] [--push_to_hub --hub_model_id ID]

What is known about the released checkpoints (names, URLs, cache, key renaming) lives in `gms_hub.models.reference`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from ..data.benchmarks import BENCHMARK_NAMES
from .reference import REFERENCE_NAMES

logger = logging.getLogger(__name__)

_CHECKPOINT_KINDS = ("reference", "pth", "url")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Convert a released GMS .pth checkpoint into a GMS folder / Hub repo.")
    parser.add_argument("--checkpoint", required=True, help=f"Path, URL or one of {', '.join(REFERENCE_NAMES)}.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--vae", default=None, help="VAE source (Hub id, folder or .ckpt); default: the SD2 VAE.")
    parser.add_argument("--vae_subfolder", default="vae", help="Subfolder of --vae ('none' for the folder itself).")
    parser.add_argument("--vae_revision", default=None)
    parser.add_argument("--include_vae", action="store_true", help="Bundle the VAE in the output folder.")
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", default=None)
    args = parser.parse_args(argv)
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id (e.g. me/gms-busi).")
    if str(args.vae_subfolder).lower() in ("none", ""):
        args.vae_subfolder = None
    return args


def main(args: argparse.Namespace) -> None:
    """Load `--checkpoint` with `gms_hub.load_model`, save it to `--output_dir` and optionally push it."""
    from .resolver import classify_spec, load_model
    from .vae import DEFAULT_VAE

    spec = classify_spec(args.checkpoint)
    if spec.kind not in _CHECKPOINT_KINDS:
        raise ValueError(
            f"--checkpoint {args.checkpoint!r} names a {spec.kind} model, not a released checkpoint; give a .pth path, "
            f"a URL or one of {', '.join(REFERENCE_NAMES)} (a GMS folder or Hub repo needs no conversion)."
        )
    model = load_model(spec, vae=args.vae or DEFAULT_VAE, vae_subfolder=args.vae_subfolder, vae_revision=args.vae_revision)
    card = dict(
        dataset_name=BENCHMARK_NAMES.get(spec.location) if spec.kind == "reference" else None,
        selection_split="test",
        description=(
            f"The paper's released latent mapping model (`{args.checkpoint}`), converted with "
            "`python -m gms_hub.convert`. The reference selected it by Dice on the test split."
        ),
    )
    model.save_pretrained(args.output_dir, include_vae=args.include_vae, model_card_kwargs=card)
    logger.info("Saved GMS to %s", args.output_dir)
    if args.push_to_hub:
        model.push_to_hub(args.hub_model_id, include_vae=args.include_vae, model_card_kwargs=card)
        logger.info("Pushed to %s", args.hub_model_id)


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: parse, run, and turn expected errors into a one-line message and exit code 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        main(args)
    except (ValueError, FileNotFoundError, ConnectionError) as err:
        logger.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
