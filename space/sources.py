"""What the registry hands around: where a model comes from (`ModelSource`), a loaded model (`LoadedModel`), an
upload ready for it (`PreparedInput`), and the error when nothing loads (`ModelUnavailableError`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from gms_hub.models.resolver import ModelSpec

from .config import DEMO_BRAIN_FOLDER, DEMO_BRAIN_LABEL, DEMO_LABEL

__all__ = ["LoadedModel", "ModelSource", "ModelUnavailableError", "PreparedInput"]


class ModelUnavailableError(RuntimeError):
    """No source of a benchmark's model could be loaded."""


@dataclass(frozen=True)
class ModelSource:
    """One place a benchmark's model can come from.

    Args:
        kind (`str`): one of `gms_hub.models.resolver.KINDS`: `"hub"` (Hub repo id), `"local"` (folder), `"reference"`
            (the paper's checkpoint), `"pth"` / `"url"` (another released-format checkpoint) or `"demo"`.
        location (`str`): repo id, folder, reference checkpoint name, path or URL.
        revision (`str`, *optional*): Hub revision for `"hub"`.
    """

    kind: str
    location: str
    revision: Optional[str] = None

    @property
    def label(self) -> str:
        """Human-readable description shown in the UI and returned by the API."""
        if self.kind == "hub":
            return f"Hub model {self.location}" + (f"@{self.revision}" if self.revision else "")
        if self.kind == "local":
            return f"local model folder {self.location}"
        if self.kind == "reference":
            return f"the paper's published checkpoint ({self.location}), converted on first use"
        if self.kind in ("pth", "url"):
            return f"checkpoint {self.location}, converted on first use"
        return DEMO_BRAIN_LABEL if Path(self.location).name == DEMO_BRAIN_FOLDER else DEMO_LABEL

    @property
    def spec(self) -> ModelSpec:
        """The resolver's view of this source, for `gms_hub.load_model`."""
        return ModelSpec(self.kind, self.location, self.revision)


@dataclass
class LoadedModel:
    """A loaded GMS, where it came from, and how it runs."""

    model: torch.nn.Module
    source: ModelSource
    device: torch.device
    dtype: torch.dtype

    @property
    def image_size(self) -> int:
        return int(self.model.image_size)


@dataclass
class PreparedInput:
    """An upload ready for the model: pixel values (1, 3, S, S) in [-1, 1] on CPU, the input's (H, W), and an
    8-bit RGB preview for overlays."""

    pixel_values: torch.Tensor
    size: Tuple[int, int]
    display: np.ndarray
