"""The paper's released mapping models (`.pth`, state dict under `model`) -> GMS, strictly.

Usage:
    python -m gms_hub.convert --checkpoint busi --output_dir gms-busi [--vae SOURCE] [--push_to_hub --hub_model_id ID]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import tempfile
import urllib.request
from pathlib import Path
from typing import Dict, Tuple, Union

import torch

logger = logging.getLogger(__name__)

REFERENCE_URL = "https://raw.githubusercontent.com/King-HAW/GMS/main/ckpt/valid_{name}/best_model.pth"
REFERENCE_NAMES = ("bus", "busi", "glas", "ham10000", "kvasir-instrument")
DOWNLOAD_TIMEOUT_S = 30

# Reference module names -> this package's names.
_BLOCKS = {
    "conv1_0": "encoder.0", "conv2_0": "encoder.1", "conv3_0": "encoder.2", "conv4_0": "encoder.3",
    "conv3_1": "decoder.0", "conv2_2": "decoder.1", "conv1_3": "decoder.2", "conv0_4": "decoder.3",
}
_HEADS = {"convds3": "heads.level3", "convds2": "heads.level2", "convds1": "heads.level1", "convds0": "heads.out"}
_RESBLOCK = {
    "act1": "act1", "act2": "act2", "conv1.0": "norm1", "conv1.2": "conv1",
    "conv2.0": "norm2", "conv2.2": "conv2", "skip_connection": "skip",
}
# The reference registers each PReLU twice (as `actN` and inside the `convN` sequential): same tensor.
_PRELU_ALIASES = {"conv1.1": "act1", "conv2.1": "act2"}


def reference_cache_dir() -> Path:
    """Where downloaded reference checkpoints are kept (`$GMS_HUB_CACHE` or `$HF_HOME/gms_hub`)."""
    if os.environ.get("GMS_HUB_CACHE"):
        return Path(os.environ["GMS_HUB_CACHE"])
    hf_home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
    return Path(hf_home) / "gms_hub" / "reference"


def _download(url: str, name: str) -> Path:
    target = reference_cache_dir() / name / "best_model.pth"
    if target.is_file():
        return target
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise ConnectionError(f"HF_HUB_OFFLINE is set and {url} is not cached at {target}; download it once with network.")
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            payload = response.read()
    except OSError as err:
        raise ConnectionError(f"Could not download {url}: {err}. Pass a local path to the .pth file instead.") from err
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:  # atomic: no half files in the cache
        tmp.write(payload)
    os.replace(tmp.name, target)
    return target


def resolve_checkpoint(checkpoint: Union[str, os.PathLike]) -> Path:
    """A reference name, URL or path -> a local `.pth` path (downloading names and URLs once)."""
    checkpoint = os.fspath(checkpoint)
    if checkpoint.lower() in REFERENCE_NAMES:
        name = checkpoint.lower()
        return _download(REFERENCE_URL.format(name=name), name)
    if re.match(r"^https?://", checkpoint):
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", checkpoint.split("://", 1)[1])
        return _download(checkpoint, name)
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"Checkpoint {checkpoint!r} is neither a file, a URL, nor one of the reference names {REFERENCE_NAMES}."
        )
    return path


def convert_reference_state_dict(reference: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename a reference LMM state dict to `LatentMappingModel` keys (strict: unknown keys raise)."""
    converted: Dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in reference.items():
        prefix, _, rest = key.partition(".")
        new_key = None
        if prefix == "input_blocks":
            new_key = f"conv_in.{rest}"
        elif prefix in _HEADS:
            new_key = f"{_HEADS[prefix]}.{rest}"
        elif prefix in _BLOCKS and rest.startswith("attention."):
            new_key = f"{_BLOCKS[prefix]}.attn.{rest[len('attention.'):]}"
        elif prefix in _BLOCKS and rest.startswith("resblock."):
            inner = rest[len("resblock.") :]
            module, _, param = inner.rpartition(".")
            if module in _PRELU_ALIASES:
                alias = f"{prefix}.resblock.{_PRELU_ALIASES[module]}.{param}"
                if alias in reference and not torch.equal(reference[alias], value):
                    raise ValueError(f"{key} and {alias} should be the same shared PReLU weight but differ.")
                if alias in reference:
                    continue  # the duplicate registration of the same tensor
                module = _PRELU_ALIASES[module]
            if module in _RESBLOCK:
                new_key = f"{_BLOCKS[prefix]}.res.{_RESBLOCK[module]}.{param}"
        if new_key is None:
            unknown.append(key)
        else:
            converted[new_key] = value
    if unknown:
        raise ValueError(f"{len(unknown)} keys are not part of the reference network: {sorted(unknown)[:10]}")
    return converted


def load_reference_state_dict(checkpoint: Union[str, os.PathLike]) -> Tuple[Dict[str, torch.Tensor], str]:
    """Read a reference `.pth` (with `weights_only=True`) and convert it. Returns (state dict, source path)."""
    path = resolve_checkpoint(checkpoint)
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"Could not read {path} as a weights-only torch checkpoint: {err}") from err
    if not isinstance(payload, dict) or "model" not in payload or not isinstance(payload["model"], dict):
        found = sorted(payload)[:10] if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"{path} is not a reference GMS checkpoint: expected a dict with the LMM state dict under 'model', "
            f"found {found}."
        )
    return convert_reference_state_dict(payload["model"]), str(path)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Convert a released GMS .pth checkpoint into a GMS folder / Hub repo.")
    parser.add_argument("--checkpoint", required=True, help=f"Path, URL or one of {', '.join(REFERENCE_NAMES)}.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--vae", default=None, help="VAE source (Hub id, folder or .ckpt); default: the SD2 VAE.")
    parser.add_argument("--vae_subfolder", default="vae", help="Subfolder of --vae ('none' for the folder itself).")
    parser.add_argument("--vae_revision", default=None)
    parser.add_argument("--include_vae", action="store_true", help="Bundle the VAE in the output folder.")
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", default=None)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    from .modeling import GMS
    from .vae import DEFAULT_VAE

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.push_to_hub and not args.hub_model_id:
        raise SystemExit("--push_to_hub needs --hub_model_id (e.g. me/gms-busi).")
    subfolder = None if str(args.vae_subfolder).lower() in ("none", "") else args.vae_subfolder
    model = GMS.from_reference_checkpoint(
        args.checkpoint, vae=args.vae or DEFAULT_VAE, vae_subfolder=subfolder, vae_revision=args.vae_revision
    )
    name = str(args.checkpoint).lower()
    card = dict(
        dataset_name=name.upper() if name in REFERENCE_NAMES else None,
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


if __name__ == "__main__":
    main()
