"""The paper's released mapping models: names, URLs, the download cache, key renaming and strict loading.

The reference repository publishes one `.pth` per benchmark with the LMM state dict under `model`. This module
downloads it once (atomically, into `reference_cache_dir()`), reads it with `torch.load(weights_only=True)` and
renames its keys to `LatentMappingModel`'s. `GMS.from_reference_checkpoint` builds a model from it; the CLI that
writes a GMS folder is `gms_hub.models.convert`.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import urllib.request
from pathlib import Path
from typing import Dict, Tuple, Union

import torch
from huggingface_hub import constants as hf_constants

from ..data.benchmarks import BENCHMARKS

logger = logging.getLogger(__name__)

__all__ = [
    "REFERENCE_NAMES",
    "REFERENCE_URL",
    "convert_reference_state_dict",
    "load_reference_state_dict",
    "reference_cache_dir",
    "reference_checkpoint_path",
    "resolve_checkpoint",
]

REFERENCE_URL = "https://raw.githubusercontent.com/King-HAW/GMS/main/ckpt/valid_{name}/best_model.pth"
REFERENCE_NAMES = tuple(BENCHMARKS)
"""The benchmarks with a released checkpoint: all five of `gms_hub.data.benchmarks.BENCHMARKS`."""
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


def reference_checkpoint_path(name_or_url: str) -> Path:
    """Where the checkpoint of a reference name or URL is (or will be) cached; nothing is downloaded.

    Example:
        >>> reference_checkpoint_path("busi").is_file()  # True once downloaded
    """
    return reference_cache_dir() / _cache_key(name_or_url) / "best_model.pth"


def _cache_key(name_or_url: str) -> str:
    if name_or_url.lower() in REFERENCE_NAMES:
        return name_or_url.lower()
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name_or_url.split("://", 1)[-1])


def _download(url: str, target: Path, local_files_only: bool = False) -> Path:
    if target.is_file():
        return target
    if hf_constants.HF_HUB_OFFLINE or local_files_only:
        reason = "HF_HUB_OFFLINE is set" if hf_constants.HF_HUB_OFFLINE else "local_files_only=True"
        raise ConnectionError(
            f"{reason} and {url} is not cached at {target}; download it once with network, or pass the .pth path."
        )
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


def resolve_checkpoint(checkpoint: Union[str, os.PathLike], local_files_only: bool = False) -> Path:
    """A `.pth` path, a reference name or a URL -> a local `.pth` path (names and URLs are downloaded once).

    Args:
        checkpoint (`str` or `os.PathLike`): an existing file, one of `REFERENCE_NAMES` (any case), or an http(s) URL.
        local_files_only (`bool`, defaults to `False`): never download; a name or URL must already be cached.

    Returns:
        `Path`: the local file.

    Raises:
        `FileNotFoundError`: for a path that is no file; `ConnectionError` when a download is needed but not possible.

    Example:
        >>> resolve_checkpoint("busi")  # ~/.cache/huggingface/gms_hub/reference/busi/best_model.pth
    """
    checkpoint = os.fspath(checkpoint)
    if os.path.isfile(checkpoint):  # an existing file wins over a name it happens to share
        return Path(checkpoint)
    if checkpoint.lower() in REFERENCE_NAMES:
        url = REFERENCE_URL.format(name=checkpoint.lower())
        return _download(url, reference_checkpoint_path(checkpoint), local_files_only)
    if re.match(r"^https?://", checkpoint, flags=re.IGNORECASE):
        return _download(checkpoint, reference_checkpoint_path(checkpoint), local_files_only)
    raise FileNotFoundError(
        f"Checkpoint {checkpoint!r} is neither a file, a URL, nor one of the reference names {REFERENCE_NAMES}."
    )


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


def load_reference_state_dict(
    checkpoint: Union[str, os.PathLike], local_files_only: bool = False
) -> Tuple[Dict[str, torch.Tensor], str]:
    """Read a reference `.pth` (with `weights_only=True`) and convert it to `LatentMappingModel` keys.

    Args:
        checkpoint (`str` or `os.PathLike`): a `.pth` path, a reference name or a URL (see `resolve_checkpoint`).
        local_files_only (`bool`, defaults to `False`): never download.

    Returns:
        `tuple(dict, str)`: the converted state dict and the local path it was read from.

    Example:
        >>> state_dict, path = load_reference_state_dict("busi")
    """
    path = resolve_checkpoint(checkpoint, local_files_only=local_files_only)
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
