"""Fast paths for GMS, each proven equal (to float rounding) to the paper-faithful fp32 eager path.

Nearly all of GMS's compute is in the frozen VAE (per 224x224 image ~208 GFLOP to encode, ~476 GFLOP to
decode, ~4 GFLOP for the LMM). The rewrites here change how the decoder computes, never what:

- **Sub-pixel upsampling.** Each decoder upsampler is a nearest 2x upsample followed by a 3x3 convolution
  (zero padding 1). Every output pixel of phase `(a, b)` (row parity `a`, column parity `b`) reads only a 2x2
  window of the low-resolution input, so the pair equals four 2x2 convolutions of the low-resolution input,
  interleaved: 4/9 of the multiply-adds (plus one border row and column: [`SubpixelUpsample2D`] runs the four
  phases as one padded convolution).
- **Folded mask head.** GMS averages the decoder's three output channels and maps `(x + 1) / 2`; both are
  linear, so they fold into the last convolution (`conv_out`), which then computes one channel, not three.
- **channels_last** memory format, which oneDNN (CPU) and cuDNN (GPU) run faster for these convolutions.
- Opt-in: `torch.compile` (`nn.Module.compile`), bf16/fp16 autocast (CUDA only: bf16 is ~100x slower on
  CPUs without native support), and gradient checkpointing of the decoder for training.

The weights are never copied or renamed: `state_dict()`, `save_pretrained` and `vae.save_pretrained` give the
same files before and after [`optimize`].
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

logger = logging.getLogger(__name__)

# Row (or column) tap sums of a 3x3 kernel for the two phases of a nearest 2x upsample. Output row 2i reads
# upsampled rows 2i-1, 2i, 2i+1 = source rows i-1, i, i: taps (w0 | w1 + w2) on source rows (i-1, i).
# Output row 2i+1 reads upsampled rows 2i, 2i+1, 2i+2 = source rows i, i, i+1: taps (w0 + w1 | w2) on (i, i+1).
# The zero padding row of the upsampled grid (row -1 or 2H) maps to source row -1 or H, also zero padding.
_PHASE_TAPS = torch.tensor(
    [[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]],  # phase 0: 2 taps x 3 original taps
     [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]]  # phase 1
)  # (2, 2, 3)


@dataclass
class FastSettings:
    """The fast paths a [`GMS`] runs, read by its own `forward` and `decode_mask` (`model.fast_settings`).

    [`optimize`] sets them; the defaults are the paper-faithful fp32 eager path. The module rewrites
    (`fast_upsample`, `channels_last`, `gradient_checkpointing`, `compile`) are done to the modules by
    [`optimize`] and recorded here; `fold_mask_mean` and `autocast_dtype` switch code paths of the model.

    Args:
        fold_mask_mean (`bool`, defaults to `False`): `decode_mask` folds the channel mean and `(x + 1) / 2` into
            the decoder's last convolution ([`decode_mask_probabilities`]).
        fast_upsample (`bool`, defaults to `False`): the decoder's upsamplers are [`SubpixelUpsample2D`].
        channels_last (`bool`, defaults to `False`): the weights are in `torch.channels_last` memory format.
        autocast_dtype (`torch.dtype`, *optional*): `forward` runs under `torch.autocast` with this dtype and
            returns float32 outputs.
        gradient_checkpointing (`bool`, defaults to `False`): the decoder recomputes activations in backward.
        compile (`bool`, defaults to `False`): `nn.Module.compile` was called by [`optimize`].

    Example:
        >>> optimize(model)
        >>> model.fast_settings.fold_mask_mean
        True
    """

    fold_mask_mean: bool = False
    fast_upsample: bool = False
    channels_last: bool = False
    autocast_dtype: Optional[torch.dtype] = None
    gradient_checkpointing: bool = False
    compile: bool = False


def mask_probabilities(decoded: torch.Tensor) -> torch.Tensor:
    """The paper's mask decoding: decoded RGB (B, 3, H, W) in about [-1, 1] -> probabilities (B, 1, H, W).

    `clamp((mean over channels + 1) / 2, 0, 1)`; [`folded_mask_weights`] folds the same map into the decoder's
    last convolution.

    Args:
        decoded (`torch.Tensor`): `vae.decode(latents).sample`, (B, C, H, W).

    Returns:
        `torch.Tensor`: (B, 1, H, W) in [0, 1].

    Example:
        >>> probs = mask_probabilities(vae.decode(latents).sample)  # (B, 1, H, W)
    """
    return ((decoded.mean(dim=1, keepdim=True) + 1.0) / 2.0).clamp(0.0, 1.0)  # (B, 1, H, W)


def subpixel_weights(weight: torch.Tensor, bias: Optional[torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The 2x2 phase kernels equivalent to a 3x3 convolution applied after a nearest 2x upsample.

    Args:
        weight (`torch.Tensor`): the 3x3 kernel, (C_out, C_in, 3, 3).
        bias (`torch.Tensor`, *optional*): (C_out,).

    Returns:
        `(weight, bias)`: (4 C_out, C_in, 2, 2) and (4 C_out,), phases ordered (row phase, column phase, C_out).

    Example:
        >>> w, b = subpixel_weights(conv.weight, conv.bias)
        >>> y = F.conv2d(x, w, b, padding=1)  # (B, 4 C_out, H + 1, W + 1); phase (a, b) is y[..., a:a+H, b:b+W]
    """
    if weight.ndim != 4 or tuple(weight.shape[-2:]) != (3, 3):
        raise ValueError(f"Expected a 3x3 convolution kernel (C_out, C_in, 3, 3), got shape {tuple(weight.shape)}.")
    taps = _PHASE_TAPS.to(device=weight.device, dtype=weight.dtype)
    # k[a, c, o, i, p, q] = sum_{k, l} taps[a, p, k] * weight[o, i, k, l] * taps[c, q, l]
    phased = torch.einsum("apk,oikl,cql->acoipq", taps, weight, taps)  # (2, 2, C_out, C_in, 2, 2)
    phased = phased.reshape(4 * weight.shape[0], weight.shape[1], 2, 2)
    return phased, (None if bias is None else bias.repeat(4))


def _interleave_phases(y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 4C, H+1, W+1) phase outputs -> (B, C, 2H, 2W), keeping y's memory format, in one copy."""
    batch, channels = y.shape[0], y.shape[1] // 4
    if y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous():
        src = y.permute(0, 2, 3, 1).reshape(batch, height + 1, width + 1, 2, 2, channels)  # a view
        out = y.new_empty(batch, height, 2, width, 2, channels)
        for a in range(2):
            for c in range(2):
                out[:, :, a, :, c] = src[:, a : a + height, c : c + width, a, c]
        return out.view(batch, 2 * height, 2 * width, channels).permute(0, 3, 1, 2)  # channels_last (B, C, 2H, 2W)
    src = y.view(batch, 2, 2, channels, height + 1, width + 1)
    out = y.new_empty(batch, channels, height, 2, width, 2)
    for a in range(2):
        for c in range(2):
            out[:, :, :, a, :, c] = src[:, a, c, :, a : a + height, c : c + width]
    return out.view(batch, channels, 2 * height, 2 * width)


class SubpixelUpsample2D(nn.Module):
    """Drop-in, exact replacement for diffusers' `Upsample2D` (nearest 2x upsample, then 3x3 conv, padding 1).

    It computes the four output phases as one 2x2 convolution of the low-resolution input with 4x the output
    channels, then interleaves them: about 4/9 of the multiply-adds and no upsampled intermediate. The original
    convolution stays registered under its original name, so the state dict keys and values do not change.

    Args:
        upsample (`diffusers.models.upsampling.Upsample2D`): the module to replace; see [`is_subpixel_compatible`].
    """

    def __init__(self, upsample: nn.Module):
        super().__init__()
        if not is_subpixel_compatible(upsample):
            raise ValueError(
                "SubpixelUpsample2D replaces an Upsample2D with use_conv=True, interpolate=True, no norm and a 3x3 "
                f"stride-1 zero-padding-1 convolution; got {upsample!r}. Leave this module as it is."
            )
        self.channels = upsample.channels
        self.out_channels = upsample.out_channels
        self.conv_name = upsample.name if upsample.name == "conv" else "Conv2d_0"
        setattr(self, self.conv_name, _upsample_conv(upsample))
        self._cache: Optional[Tuple[Any, Tuple[torch.Tensor, Optional[torch.Tensor]]]] = None

    def _conv(self) -> nn.Conv2d:
        return self._modules[self.conv_name]

    def _phase_weights(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        conv = self._conv()
        bias = conv.bias
        if (
            torch.is_grad_enabled()
            or torch.compiler.is_compiling()
            or conv.weight.is_inference()  # inference tensors have no version counter to validate a cache
            or (bias is not None and bias.is_inference())
        ):
            return subpixel_weights(conv.weight, bias)  # differentiable; compile traces it into the graph
        key = (
            conv.weight.data_ptr(), conv.weight._version, conv.weight.dtype, conv.weight.device,
            None if bias is None else (bias.data_ptr(), bias._version),
        )
        if self._cache is None or self._cache[0] != key:
            # A plain tensor (not an inference tensor), so a later grad-mode call could still use the values.
            with torch.inference_mode(False), torch.no_grad():
                self._cache = (key, subpixel_weights(conv.weight, bias))
        return self._cache[1]

    def forward(self, hidden_states: torch.Tensor, output_size=None, *args, **kwargs) -> torch.Tensor:
        height, width = hidden_states.shape[-2:]
        if output_size is not None and tuple(output_size) != (2 * height, 2 * width):
            # Not a plain 2x upsample: do what Upsample2D does.
            upsampled = F.interpolate(hidden_states, size=output_size, mode="nearest")
            return self._conv()(upsampled)
        weight, bias = self._phase_weights()
        y = F.conv2d(hidden_states, weight, bias, padding=1)  # (B, 4 C_out, H + 1, W + 1)
        return _interleave_phases(y, height, width)  # (B, C_out, 2H, 2W)


def _upsample_conv(upsample: nn.Module) -> Optional[nn.Module]:
    # diffusers registers the conv as `conv`, or as `Conv2d_0` for old weight names (name != "conv").
    name = "conv" if getattr(upsample, "name", "conv") == "conv" else "Conv2d_0"
    return getattr(upsample, name, None)


def is_subpixel_compatible(module: nn.Module) -> bool:
    """True when `module` is an `Upsample2D` that [`SubpixelUpsample2D`] reproduces exactly."""
    from diffusers.models.upsampling import Upsample2D

    if not isinstance(module, Upsample2D) or module.use_conv_transpose or not module.use_conv:
        return False
    conv = _upsample_conv(module)
    return (
        getattr(module, "interpolate", True)
        and module.norm is None
        and isinstance(conv, nn.Conv2d)
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


def apply_subpixel_upsampling(module: nn.Module) -> int:
    """Replace, in place, every exactly-reproducible `Upsample2D` inside `module` by a [`SubpixelUpsample2D`].

    Args:
        module (`nn.Module`): e.g. `vae.decoder` of a diffusers `AutoencoderKL`.

    Returns:
        `int`: the number of upsamplers replaced (3 for the SD VAE decoder).

    Example:
        >>> apply_subpixel_upsampling(vae.decoder)
        3
    """
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if is_subpixel_compatible(child):
                setattr(parent, name, SubpixelUpsample2D(child))
                replaced += 1
    return replaced


def folded_mask_weights(conv_out: nn.Conv2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fold `(mean over output channels + 1) / 2` into a convolution: one output channel instead of C.

    Args:
        conv_out (`nn.Conv2d`): the decoder's last convolution (C_out = 3 for the SD VAE), with bias.

    Returns:
        `(weight, bias)`: (1, C_in, k, k) and (1,); differentiable functions of `conv_out`'s parameters.

    Example:
        >>> w, b = folded_mask_weights(vae.decoder.conv_out)
        >>> probs = F.conv2d(h, w, b, padding=1).clamp(0, 1)
    """
    weight = conv_out.weight.mean(dim=0, keepdim=True) * 0.5  # (1, C_in, k, k)
    if conv_out.bias is None:
        bias = weight.new_full((1,), 0.5)
    else:
        bias = (conv_out.bias.mean() * 0.5 + 0.5).reshape(1)
    return weight, bias


def _is_foldable(vae: nn.Module) -> bool:
    decoder = getattr(vae, "decoder", None)
    conv = getattr(decoder, "conv_out", None)
    return (
        isinstance(conv, nn.Conv2d)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and isinstance(getattr(decoder, "conv_norm_out", None), nn.GroupNorm)  # not SpatialNorm (needs latents)
        and not getattr(vae, "use_tiling", False)
    )


def _run(block: nn.Module, hidden: torch.Tensor, use_checkpoint: bool) -> torch.Tensor:
    if use_checkpoint:
        return checkpoint(block, hidden, None, use_reentrant=False)
    return block(hidden, None)


def decode_mask_probabilities(
    vae: nn.Module, latents: torch.Tensor, *, fold_mean: bool = True, gradient_checkpointing: Optional[bool] = None
) -> torch.Tensor:
    """Decode unscaled mask latents into mask probabilities: `clamp((mean_c decoder(z) + 1) / 2, 0, 1)`.

    With `fold_mean=True` the channel mean and `(x + 1) / 2` are folded into the decoder's `conv_out` (equal to
    float rounding); with `False` this is the paper-faithful `vae.decode`.

    Args:
        vae (`AutoencoderKL`): the frozen VAE.
        latents (`torch.Tensor`): unscaled latents (B, 4, h, w) (GMS latents divided by the scaling factor).
        fold_mean (`bool`, defaults to `True`): compute only the mask channel in `conv_out`.
        gradient_checkpointing (`bool`, *optional*): recompute the decoder blocks in the backward pass instead of
            storing their activations; defaults to `vae.decoder.gradient_checkpointing`. Ignored without grad.

    Returns:
        `torch.Tensor`: (B, 1, 8h, 8w) probabilities in [0, 1], in the dtype the decoder computed in.

    Example:
        >>> probs = decode_mask_probabilities(model.vae, latents / model.scaling_factor)
    """
    decoder = vae.decoder
    if not fold_mean or not _is_foldable(vae):
        return mask_probabilities(vae.decode(latents).sample)  # (B, 1, 8h, 8w)
    if gradient_checkpointing is None:
        gradient_checkpointing = bool(getattr(decoder, "gradient_checkpointing", False))
    use_checkpoint = gradient_checkpointing and torch.is_grad_enabled()
    # The same sequence as diffusers' Decoder.forward (latent_embeds=None).
    hidden = latents if vae.post_quant_conv is None else vae.post_quant_conv(latents)  # (B, 4, h, w)
    hidden = decoder.conv_in(hidden)  # (B, C, h, w)
    hidden = _run(decoder.mid_block, hidden, use_checkpoint)
    for up_block in decoder.up_blocks:
        hidden = _run(up_block, hidden, use_checkpoint)  # (B, C_i, ..., ...) up to (B, 128, 8h, 8w)
    hidden = decoder.conv_act(decoder.conv_norm_out(hidden))
    weight, bias = folded_mask_weights(decoder.conv_out)
    conv = decoder.conv_out
    probs = F.conv2d(hidden, weight, bias, conv.stride, conv.padding, conv.dilation)  # (B, 1, 8h, 8w)
    return probs.clamp(0.0, 1.0)


def optimize(
    model: nn.Module,
    *,
    fold_mask_mean: bool = True,
    fast_upsample: bool = True,
    channels_last: Optional[bool] = None,
    compile: Union[bool, Dict[str, Any]] = False,
    autocast_dtype: Optional[torch.dtype] = None,
    gradient_checkpointing: bool = False,
) -> nn.Module:
    """Make a GMS (or a bare `AutoencoderKL`) faster in place, with the same results to float rounding.

    Nothing here changes parameters, buffers or state dict keys, and no method is replaced: the module rewrites
    are done in place and the settings are stored in `model.fast_settings` ([`FastSettings`]), which the model's
    own `forward` and `decode_mask` read. Call it after moving the model to its device
    (`channels_last=None` decides from the device). The exact rewrites (`fold_mask_mean`, `fast_upsample`,
    `channels_last`) are on by default; `compile` and `autocast_dtype` are opt-in.

    Args:
        model ([`GMS`] or `AutoencoderKL`): changed in place and returned.
        fold_mask_mean (`bool`, defaults to `True`): `model.decode_mask` computes the channel mean and
            `(x + 1) / 2` inside the decoder's last convolution (binary GMS only; a bare VAE and a multi-class
            GMS, which reads the three colours, keep the 3 channels).
        fast_upsample (`bool`, defaults to `True`): replace the decoder's upsample + 3x3 conv pairs by
            [`SubpixelUpsample2D`] (4/9 of their multiply-adds).
        channels_last (`bool`, *optional*): convert 4-D weights to `torch.channels_last`; by default on for
            CPU and CUDA.
        compile (`bool` or `dict`, defaults to `False`): call `model.compile(**compile)` (`nn.Module.compile`);
            the first call then compiles for a while (~1-2 min for the SD2 VAE on 2 CPU cores).
        autocast_dtype (`torch.dtype`, *optional*): run `model(pixel_values)` under `torch.autocast` with this
            dtype (`torch.bfloat16` or `torch.float16`); outputs stay float32. Meant for CUDA: on CPUs without
            native bf16 it is far slower than float32. Approximate: check mask agreement (benchmarks/).
        gradient_checkpointing (`bool`, defaults to `False`): recompute decoder activations in the backward pass
            of training (less memory, ~1 extra decoder forward per step).

    Returns:
        The same `model`.

    Example:
        >>> model = GMS.from_pretrained("org/gms-busi", device="cuda")
        >>> optimize(model, compile=True, autocast_dtype=torch.bfloat16)
        >>> masks = model.segment(images, batch_size=32)
    """
    vae = getattr(model, "vae", model)
    if not hasattr(vae, "decoder") or not hasattr(vae, "encoder"):
        raise TypeError(f"optimize() expects a GMS or a diffusers AutoencoderKL, got {type(model).__name__}.")
    if autocast_dtype is not None and autocast_dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"autocast_dtype must be torch.bfloat16, torch.float16 or None, got {autocast_dtype}.")
    is_gms = vae is not model
    device = next(vae.parameters()).device
    if channels_last is None:
        channels_last = device.type in ("cpu", "cuda")
    if autocast_dtype is not None and device.type == "cpu":
        logger.warning("autocast_dtype=%s on CPU: most CPUs run it far slower than float32.", autocast_dtype)
    if (autocast_dtype is not None or compile) and not is_gms:
        raise ValueError("compile and autocast_dtype apply to a GMS model; compile a bare VAE with vae.compile().")

    if fast_upsample:
        replaced = apply_subpixel_upsampling(vae.decoder)
        logger.info("Replaced %d decoder upsamplers by sub-pixel convolutions.", replaced)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if gradient_checkpointing:
        vae.enable_gradient_checkpointing()  # diffusers flag; decode_mask_probabilities reads it
    if is_gms and fold_mask_mean and getattr(model, "num_classes", 1) > 1:
        # The fold computes the binary mask channel (the RGB mean); a multi-class model reads all three colours.
        logger.info("num_classes=%d: the decoder keeps its three colour channels (no folded mask mean).", model.num_classes)
        fold_mask_mean = False
    if is_gms:
        # Plain data that GMS.forward and GMS.decode_mask read: state_dict, save_pretrained and deepcopy are unaffected.
        model.fast_settings = FastSettings(
            fold_mask_mean=fold_mask_mean, fast_upsample=fast_upsample, channels_last=channels_last,
            autocast_dtype=autocast_dtype, gradient_checkpointing=gradient_checkpointing, compile=bool(compile),
        )
    if compile:
        model.compile(**(compile if isinstance(compile, dict) else {}))
    return model
