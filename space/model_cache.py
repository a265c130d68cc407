"""Loading a model source once (one lock per source) and choosing its precision; failures are remembered so a
broken source is not retried on every request."""

from __future__ import annotations

import copy
import logging
import threading
from typing import Dict, Optional, Sequence, Tuple

import torch

from .sources import LoadedModel, ModelSource, ModelUnavailableError

logger = logging.getLogger(__name__)

__all__ = ["ModelCache", "count_half_precision_changes"]


class ModelCache:
    """Loads each `ModelSource` once, on `device`, in the precision it is exact in, and keeps it.

    Args:
        device (`torch.device`): where models run.
        online (`bool`, defaults to `False`): whether downloads may be attempted (else `local_files_only`).
        precision (`str`, defaults to `"auto"`): `"auto"` runs float16 on CUDA for a model only if its float16
            masks equal its float32 masks on `check_images`, else float32; `"fp32"` always float32.
        check_images (`Sequence`, *optional*): images (PIL or arrays) for the float16 check.
    """

    def __init__(self, device: torch.device, online: bool = False, precision: str = "auto",
                 check_images: Optional[Sequence] = None):
        self.device, self.online, self.precision = device, bool(online), precision
        self.check_images = list(check_images or [])
        self._lock = threading.Lock()
        self._source_locks: Dict[ModelSource, threading.Lock] = {}
        self._by_source: Dict[ModelSource, LoadedModel] = {}
        self._failures: Dict[ModelSource, str] = {}

    def load(self, source: ModelSource) -> LoadedModel:
        """The model of `source`, loaded on first use; a source that failed once raises `ModelUnavailableError`."""
        with self._lock:
            lock = self._source_locks.setdefault(source, threading.Lock())
        with lock:
            if source in self._by_source:
                return self._by_source[source]
            if source in self._failures:
                raise ModelUnavailableError(f"failed earlier: {self._failures[source]}")
            try:
                model = self._build(source).to(self.device).eval()
            except Exception as err:
                self._failures[source] = f"{type(err).__name__}: {err}"
                raise
            model, dtype = self._choose_precision(model, source)
            loaded = LoadedModel(model=model, source=source, device=self.device, dtype=dtype)
            self._by_source[source] = loaded
            return loaded

    def _build(self, source: ModelSource) -> torch.nn.Module:
        from gms_hub import load_model

        logger.info("Loading %s ...", source.label)
        return load_model(source.spec, local_files_only=source.kind == "demo" or not self.online)

    def _choose_precision(self, model: torch.nn.Module, source: ModelSource) -> Tuple[torch.nn.Module, torch.dtype]:
        """float16 on CUDA only when it reproduces the float32 masks of the check images exactly."""
        if self.device.type != "cuda" or self.precision == "fp32":
            return model, torch.float32
        if not self.check_images:
            logger.info("No check images for %s: keeping float32.", source.label)
            return model, torch.float32
        half = copy.deepcopy(model).half()
        differing = count_half_precision_changes(model, half, self.check_images)
        if differing:
            logger.info("%s: float16 changes %d mask pixels on the check images; keeping float32.", source.label, differing)
            return model, torch.float32
        logger.info("%s: float16 masks equal float32 masks on %d check images; using float16.", source.label, len(self.check_images))
        return half, torch.float16


@torch.inference_mode()
def count_half_precision_changes(model: torch.nn.Module, half_model: torch.nn.Module, images: Sequence) -> int:
    """How many mask pixels differ between `model` (float32) and `half_model` (float16) on `images`.

    Masks are compared where a user sees them: at the model's resolution and at each image's own size,
    thresholded at `model.threshold`.

    Example:
        >>> count_half_precision_changes(model, copy.deepcopy(model).half(), [Image.open("examples/ultrasound.png")])
        0
    """
    from gms_hub.models.processing import preprocess, resize_probabilities

    pixel_values, sizes = preprocess(list(images), model.image_size)  # (N, 3, S, S)
    pixel_values = pixel_values.to(model.device)
    probs32 = model(pixel_values).mask_probs.float()  # (N, 1, S, S)
    probs16 = half_model(pixel_values.half()).mask_probs.float()  # (N, 1, S, S)
    differing = 0
    for p32, p16, size in zip(probs32, probs16, sizes):
        for target in (tuple(p32.shape[-2:]), size):
            mask32 = resize_probabilities(p32, target) > model.threshold
            mask16 = resize_probabilities(p16, target) > model.threshold
            differing += int((mask32 != mask16).sum())
    return differing
