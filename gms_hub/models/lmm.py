"""The latent mapping model (LMM): the only trainable part of GMS.

A small UNet-like network without any down- or up-sampling: every tensor keeps the latent's spatial size
(28x28 for a 224x224 image). Each block is a residual block followed by single-head spatial
self-attention; the decoder path concatenates encoder features. Four heads give deep supervision.
"""

from __future__ import annotations

import math
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn

HEAD_NAMES = ("level3", "level2", "level1", "out")


def _norm(channels: int, num_groups: int) -> nn.GroupNorm:
    # eps 1e-6 as in the reference network (the Stable Diffusion convention), not torch's 1e-5.
    return nn.GroupNorm(num_groups, channels, eps=1e-6, affine=True)


class ResBlock(nn.Module):
    """[GroupNorm -> PReLU -> 3x3 conv] x 2 plus a skip (identity, or 1x1 conv without bias)."""

    def __init__(self, in_channels: int, out_channels: int, num_groups: int = 16):
        super().__init__()
        self.norm1 = _norm(in_channels, num_groups)
        self.act1 = nn.PReLU(num_parameters=1, init=0.25)  # one slope shared by all channels
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels, num_groups)
        self.act2 = nn.PReLU(num_parameters=1, init=0.25)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act1(self.norm1(x)))
        h = self.conv2(self.act2(self.norm2(h)))
        return self.skip(x) + h


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over all spatial positions, with a residual connection."""

    def __init__(self, channels: int, num_groups: int = 16):
        super().__init__()
        self.norm = _norm(channels, num_groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        # (B, C, H, W) -> (B, 1, HW, C): one head over the HW positions
        q, k, v = (t.reshape(b, 1, c, h * w).transpose(-1, -2) for t in (self.q(y), self.k(y), self.v(y)))
        # softmax(q k^T / sqrt(C)) v, the same math as the reference's explicit bmm/softmax
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(c))  # (B, 1, HW, C)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class ResAttBlock(nn.Module):
    """ResBlock followed by spatial self-attention."""

    def __init__(self, in_channels: int, out_channels: int, num_groups: int = 16):
        super().__init__()
        self.res = ResBlock(in_channels, out_channels, num_groups)
        self.attn = SpatialSelfAttention(out_channels, num_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.res(x))


def _head(in_channels: int, out_channels: int, num_groups: int) -> nn.Sequential:
    return nn.Sequential(_norm(in_channels, num_groups), nn.SiLU(), nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False))


class LatentMappingModel(nn.Module):
    """Maps an image latent to a mask latent (the paper's latent mapping model).

    Args:
        in_channels (`int`, defaults to 4): latent channels of the image latent.
        out_channels (`int`, defaults to 4): latent channels of the mask latent.
        base_channels (`int`, defaults to 32): width of the first block.
        channel_mult (`Sequence[int]`, defaults to `(1, 2, 4, 4)`): width multipliers of the four encoder blocks.
        norm_num_groups (`int`, defaults to 16): GroupNorm groups; every block width must be divisible by it.

    With the defaults the network has 1,564,976 parameters, as in the paper.

    Example:
        >>> lmm = LatentMappingModel()
        >>> heads = lmm(torch.randn(1, 4, 28, 28))
        >>> heads["out"].shape  # torch.Size([1, 4, 28, 28])
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 4,
        base_channels: int = 32,
        channel_mult: Sequence[int] = (1, 2, 4, 4),
        norm_num_groups: int = 16,
    ):
        super().__init__()
        channel_mult = tuple(int(m) for m in channel_mult)
        if len(channel_mult) != 4:
            raise ValueError(f"channel_mult must have 4 entries (one per encoder block), got {channel_mult}.")
        c0 = base_channels
        c1, c2, c3, c4 = (base_channels * m for m in channel_mult)
        for width in (c0, c1, c2, c3, c4):
            if width % norm_num_groups:
                raise ValueError(
                    f"Every block width must be divisible by norm_num_groups={norm_num_groups}; got widths "
                    f"{(c0, c1, c2, c3, c4)} from base_channels={base_channels}, channel_mult={channel_mult}."
                )
        g = norm_num_groups
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv_in = nn.Conv2d(in_channels, c0, 3, padding=1)
        # Encoder: x1..x4
        self.encoder = nn.ModuleList(
            [ResAttBlock(c0, c1, g), ResAttBlock(c1, c2, g), ResAttBlock(c2, c3, g), ResAttBlock(c3, c4, g)]
        )
        # Decoder with concatenation skips: d3, d2, d1, d0
        self.decoder = nn.ModuleList(
            [
                ResAttBlock(c3 + c4, c3, g),
                ResAttBlock(c2 + c3, c2, g),
                ResAttBlock(c1 + c2, c1, g),
                ResAttBlock(c0 + c1, c0, g),
            ]
        )
        self.heads = nn.ModuleDict(
            {
                "level3": _head(c3, out_channels, g),
                "level2": _head(c2, out_channels, g),
                "level1": _head(c1, out_channels, g),
                "out": _head(c0, out_channels, g),
            }
        )
        self.gradient_checkpointing = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan_out, leaky_relu) convolutions and zero biases, as in the reference."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def _block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        return block(x)

    def forward(self, z: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Map image latents `z` (B, C_in, h, w) to the four heads, each (B, C_out, h, w)."""
        if z.ndim != 4 or z.shape[1] != self.in_channels:
            raise ValueError(f"Expected latents of shape (B, {self.in_channels}, h, w), got {tuple(z.shape)}.")
        x0 = self.conv_in(z)  # (B, c0, h, w)
        x1 = self._block(self.encoder[0], x0)  # (B, c1, h, w)
        x2 = self._block(self.encoder[1], x1)  # (B, c2, h, w)
        x3 = self._block(self.encoder[2], x2)  # (B, c3, h, w)
        x4 = self._block(self.encoder[3], x3)  # (B, c4, h, w)
        d3 = self._block(self.decoder[0], torch.cat([x3, x4], dim=1))  # (B, c3, h, w)
        d2 = self._block(self.decoder[1], torch.cat([x2, d3], dim=1))  # (B, c2, h, w)
        d1 = self._block(self.decoder[2], torch.cat([x1, d2], dim=1))  # (B, c1, h, w)
        d0 = self._block(self.decoder[3], torch.cat([x0, d1], dim=1))  # (B, c0, h, w)
        return {
            "level3": self.heads["level3"](d3),
            "level2": self.heads["level2"](d2),
            "level1": self.heads["level1"](d1),
            "out": self.heads["out"](d0),
        }
