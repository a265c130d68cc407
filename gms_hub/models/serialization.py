"""The files of a saved GMS, and how they are written and read (local folders and Hub repos alike).

A GMS folder holds `config.json` (`"model_type": "gms"`, the VAE reference, the LMM shape), `model.safetensors`
(the LMM weights only), `README.md` (the model card) and, when the VAE is bundled, `vae/` (a diffusers
`AutoencoderKL` folder). [`GMS.save_pretrained`] and [`GMS.from_pretrained`] are the public entry points.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from dataclasses import asdict, is_dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError

from .vae import is_single_file

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
VAE_FOLDER = "vae"
VAE_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
MODEL_TYPE = "gms"
# Keys of config.json that describe a saved model but are not GMS constructor arguments.
INFORMATIONAL_KEYS = ("model_type", "gms_hub_version", "scaling_factor", "vae_bundled")
# The constructor arguments that name the VAE; they are resolved together.
VAE_ARGUMENTS = ("vae", "vae_subfolder", "vae_revision")


def constructor_config(
    recorded: Optional[Dict[str, Any]],
    *,
    vae_source: Optional[str],
    vae_subfolder: Optional[str],
    channel_mult: Sequence[int],
    vae_class: str,
    num_classes: int,
    id2label: Dict[int, str],
) -> Dict[str, Any]:
    """The constructor arguments that define a GMS, as `config.json` records them.

    `recorded` is what the Hub mixin recorded before `__init__` ran (the JSON-able arguments and the defaults of the
    others). One spelling each: a VAE object has no reference (`None`), a path is a string, a single-file VAE has no
    subfolder; `vae_kwargs` is a loading option, not configuration.
    """
    config = {key: value for key, value in (recorded or {}).items() if key != "vae_kwargs"}
    config.update(
        vae=vae_source,
        vae_subfolder=None if vae_source is not None and is_single_file(vae_source) else vae_subfolder,
        channel_mult=[int(m) for m in channel_mult],
        vae_class=vae_class,
        num_classes=num_classes,
        id2label={str(index): name for index, name in id2label.items()},  # JSON keys are strings
    )
    return config


def is_local_reference(source: Optional[str]) -> bool:
    """Whether a VAE reference names a path on this machine (not a Hub id)."""
    return source is not None and (os.path.exists(source) or is_single_file(source) or os.path.isabs(source))


# ----------------------------------------------------------------------------------------------- writing
def build_saved_config(
    config: Dict[str, Any], include_vae: bool, overrides: Union[None, Dict[str, Any], Any] = None, warn: bool = True
) -> Dict[str, Any]:
    """The `config.json` of one save: the model's `config`, the entries of `overrides` (the `config` argument of
    `save_pretrained` / `push_to_hub`, a dict or a dataclass) written over it, and `vae_bundled` with `include_vae`.

    Raises a `ValueError` when the VAE can be neither referenced nor bundled; warns when the reference is a path
    on this machine. A bundled VAE keeps its Hub reference, but never a local path (`vae` is then `null`).
    """
    if is_dataclass(overrides) and not isinstance(overrides, type):
        overrides = asdict(overrides)
    if overrides is not None and not isinstance(overrides, dict):
        raise TypeError(f"config must be a dict or a dataclass instance, got {type(overrides).__name__}.")
    saved = dict(config)
    # The informational keys describe this model and this save: they are not taken from `overrides`.
    saved.update({k: v for k, v in (overrides or {}).items() if k not in INFORMATIONAL_KEYS})
    saved.pop("vae_bundled", None)
    if include_vae:
        saved["vae_bundled"] = True
        if is_local_reference(saved.get("vae")):  # a path of this machine: no use elsewhere, and not to publish
            saved.update(vae=None, vae_subfolder=None, vae_revision=None)
    elif saved.get("vae") is None:
        raise ValueError(
            "This GMS was built from an autoencoder object, so config.json cannot reference its VAE; "
            "save with include_vae=True to bundle it."
        )
    elif is_local_reference(saved["vae"]) and warn:
        logger.warning(
            "config.json names the VAE by its local path %s: the saved model loads from any folder of this machine, "
            "not from another one. To publish or move it, bundle the VAE: save_pretrained(..., include_vae=True) / "
            "push_to_hub(..., include_vae=True) (`--include_vae` on the command line).",
            saved["vae"],
        )
    return saved


def write_weights(
    model, save_directory: Union[str, os.PathLike], include_vae: bool = False, save_dtype: Optional[torch.dtype] = None
) -> None:
    """Write `model.safetensors` (the LMM of `model`, a [`GMS`]) and, with `include_vae`, the VAE in `vae/`."""
    from safetensors.torch import load_file, save_file

    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    state_dict = {k: v.detach().to("cpu", save_dtype or v.dtype).contiguous() for k, v in model.lmm.state_dict().items()}
    save_file(state_dict, str(save_directory / WEIGHTS_NAME), metadata={"format": "pt", "library": "gms_hub"})
    if include_vae:
        model.vae.save_pretrained(str(save_directory / VAE_FOLDER), safe_serialization=True)
        if save_dtype is not None:  # re-store the weights in save_dtype (the VAE itself is left untouched)
            vae_weights = str(save_directory / VAE_FOLDER / VAE_FILES[1])
            tensors = {k: v.to(save_dtype) for k, v in load_file(vae_weights).items()}
            save_file(tensors, vae_weights, metadata={"format": "pt"})


# ----------------------------------------------------------------------------------------------- reading
def file_fetcher(source: str, **hub_kwargs) -> Callable[[str], str]:
    """`fetch(filename) -> local path` for a local GMS folder or a Hub repo id (downloaded with `hub_kwargs`:
    revision, cache_dir, force_download, local_files_only, token)."""

    def fetch(filename: str) -> str:
        if os.path.isdir(source):
            path = os.path.join(source, filename)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{source} has no {filename}; is it a folder written by GMS.save_pretrained?")
            return path
        try:
            return hf_hub_download(source, filename, **hub_kwargs)
        except EntryNotFoundError as err:
            raise FileNotFoundError(f"The Hub repo {source} has no {filename}; is it a GMS repo?") from err

    return fetch


def read_config(path: str) -> Dict[str, Any]:
    """A GMS `config.json`; anything else (another library's config, broken JSON) raises a `ValueError`."""
    try:
        config = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    check_config(config, path)
    return config


def check_config(config: Any, path: str) -> None:
    """Raise a `ValueError` unless `config` (the content of `path`) is a GMS config."""
    if not isinstance(config, dict) or config.get("model_type") != MODEL_TYPE:
        found = {k: config.get(k) for k in ("model_type", "_class_name", "architectures") if isinstance(config, dict) and k in config}
        raise ValueError(
            f"{path} is not a GMS config: expected \"model_type\": \"{MODEL_TYPE}\", found {found or 'no model_type'}. "
            "It was probably written by another library; load a folder or repo saved by GMS.save_pretrained."
        )


def read_weights(path: str) -> Dict[str, torch.Tensor]:
    """A safetensors file; a truncated or corrupt one raises a `ValueError` that says what to do."""
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except Exception as err:  # SafetensorError for truncated or corrupt files
        raise ValueError(
            f"Could not read the weights file {path}: {err}. The file is truncated or corrupt; "
            "download it again (force_download=True) or re-save the model."
        ) from err


def resolve_vae_arguments(
    config: Dict[str, Any], fetch: Callable[[str], str], source: str, given: Dict[str, Any]
) -> Tuple[Dict[str, Any], bool]:
    """The `vae`, `vae_subfolder`, `vae_revision` GMS arguments for a saved config, and whether they name the
    bundled `vae/` folder.

    `given` are the arguments `from_pretrained` received (the config's own unless the caller passed a VAE). When they
    are the config's reference and the folder bundles that VAE, the bundled copy is used (no network).
    """
    reference = {key: config.get(key) for key in VAE_ARGUMENTS}
    if config.get("vae_bundled") and given == reference:
        vae_dir = os.path.dirname(fetch(f"{VAE_FOLDER}/{VAE_FILES[0]}"))
        fetch(f"{VAE_FOLDER}/{VAE_FILES[1]}")
        return dict(vae=vae_dir, vae_subfolder=None, vae_revision=None), True
    if given.get("vae") is None:
        raise ValueError(f"{source}/config.json names no VAE and bundles none; pass vae=... to from_pretrained.")
    return dict(given), False


def load_state_dict_strict(module: torch.nn.Module, state_dict: Dict[str, torch.Tensor], source: str) -> None:
    """`module.load_state_dict` that names every missing, unexpected and mis-shaped key before loading anything."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{k}: got {tuple(state_dict[k].shape)}, expected {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state_dict))
        if tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
            if keys:
                parts.append(f"{len(keys)} {label}: {keys[:10]}" + (" ..." if len(keys) > 10 else ""))
        raise ValueError(
            f"The weights in {source} do not match the latent mapping model ({'; '.join(parts)}). "
            "Check that base_channels / channel_mult in config.json match the weights."
        )
    module.load_state_dict(state_dict, strict=True)
