"""Which model serves each name of the Space's dropdown, loaded lazily once and cached.

The names are the five benchmarks plus any other name configured in `GMS_MODELS` (`my-model=org/repo`); such a
custom name is served by its configured model only (no fallback: a visitor who picks it must get that model or
an error). Resolution order for every benchmark (first that loads wins):
1. a configured model: `GMS_MODELS` (JSON object or `busi=org/gms-busi,bus=...`) over the config file
   (`app_models.json`); a value is anything `gms_hub.load_model` accepts, usually a Hub repo id (optionally
   `@revision`) or a local folder;
2. the paper's published checkpoint, converted on first use (`GMS.from_reference_checkpoint`): online, or
   offline when it is already cached;
3. the offline demo model (`GMS_DEMO_MODEL` or `gms_hub.DEMO_MODEL_PATH`), labelled
   "demo model trained on synthetic data".

What a configured value names is decided by `gms_hub.models.resolver.classify_spec` and loaded by
`gms_hub.load_model`, as everywhere else. Network availability is decided once (`space.config.network_available`),
so an offline app never waits on retries.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .catalog import ModelCatalog
from .config import load_model_config, network_available
from .inference import mask_probabilities, prepare_input
from .model_cache import ModelCache, count_half_precision_changes
from .sources import LoadedModel, ModelSource, ModelUnavailableError, PreparedInput

logger = logging.getLogger(__name__)

__all__ = [
    "LoadedModel",
    "ModelRegistry",
    "ModelSource",
    "ModelUnavailableError",
    "PreparedInput",
    "count_half_precision_changes",
]


class ModelRegistry:
    """The model serving each name of the Space: the first source of `ModelCatalog.candidates` that
    `ModelCache` loads (once, lazily, one lock per name), and running it.

    Args:
        hub_models (`Mapping[str, str]`, *optional*): model name (a benchmark or a custom name, see
            `space.config.model_key`) -> a model spec for `gms_hub.load_model`, usually a Hub repo id (`@revision`
            allowed) or a folder. Each is classified here, so a malformed one fails at startup.
        online (`bool`, defaults to `False`): whether Hub/GitHub downloads may be attempted.
        demo_model_path (`str` or `os.PathLike`, *optional*): folder of the offline demo model.
        device (`str`, *optional*): `"cuda"` when available, else `"cpu"`.
        precision (`str`, defaults to `"auto"`): `"auto"` runs float16 on CUDA for a model only if its float16
            masks equal its float32 masks on `check_images`, else float32; `"fp32"` always float32. CPU is float32.
        check_images (`Sequence`, *optional*): images (PIL or arrays) for the float16 check.

    Example:
        >>> registry = ModelRegistry(demo_model_path=DEMO_MODEL_PATH)
        >>> registry.get("busi").source.label
        'demo model trained on synthetic data'
    """

    def __init__(
        self,
        hub_models: Optional[Mapping[str, str]] = None,
        online: bool = False,
        demo_model_path: Union[None, str, os.PathLike] = None,
        device: Optional[str] = None,
        precision: str = "auto",
        check_images: Optional[Sequence] = None,
    ):
        if precision not in ("auto", "fp32"):
            raise ValueError(f"precision must be 'auto' or 'fp32', got {precision!r}.")
        self.catalog = ModelCatalog(hub_models, online=online, demo_model_path=demo_model_path)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cache = ModelCache(device, online=self.catalog.online, precision=precision, check_images=check_images)
        self._name_locks: Dict[str, threading.Lock] = {key: threading.Lock() for key in self.names()}
        self._serving: Dict[str, LoadedModel] = {}

    @classmethod
    def from_env(
        cls,
        config_file: Union[None, str, os.PathLike] = None,
        check_images: Optional[Sequence] = None,
        network_timeout_s: float = 2.0,
    ) -> "ModelRegistry":
        """Build the registry from the environment: `GMS_MODELS`, `GMS_DEMO_MODEL`, `GMS_DEVICE`, `GMS_PRECISION`,
        plus `config_file` and one network probe (`HF_HUB_OFFLINE` skips it).

        Example:
            >>> registry = ModelRegistry.from_env("app_models.json")
        """
        from gms_hub import DEMO_MODEL_PATH

        return cls(
            hub_models=load_model_config(config_file, os.environ.get("GMS_MODELS")),
            online=network_available(network_timeout_s),
            demo_model_path=os.environ.get("GMS_DEMO_MODEL") or DEMO_MODEL_PATH,
            device=os.environ.get("GMS_DEVICE") or None,
            precision=os.environ.get("GMS_PRECISION", "auto").strip().lower(),
            check_images=check_images,
        )

    # ------------------------------------------------------------------ settings (read-only views)
    @property
    def hub_models(self) -> Dict[str, str]:
        return self.catalog.hub_models

    @property
    def online(self) -> bool:
        return self.catalog.online

    @property
    def demo_model_path(self):
        return self.catalog.demo_model_path

    @property
    def device(self) -> torch.device:
        return self.cache.device

    @property
    def precision(self) -> str:
        return self.cache.precision

    @property
    def check_images(self) -> list:
        return self.cache.check_images

    # ------------------------------------------------------------------ names (see `ModelCatalog`)
    @property
    def custom_names(self) -> List[str]:
        """Configured model names that are not benchmarks, in configuration order."""
        return self.catalog.custom_names

    def names(self) -> List[str]:
        """Every name the Space serves: the benchmarks (paper's order), then the custom names."""
        return self.catalog.names()

    def normalize(self, name: object) -> str:
        """`name` as a key of `names()`; `UnknownModelError` listing the available names otherwise.

        Example:
            >>> ModelRegistry({"my-model": "org/repo"}).normalize("My-Model")
            'my-model'
        """
        return self.catalog.normalize(name)

    def label(self, name: object) -> str:
        """Readable name: the benchmark's label, or the custom name itself."""
        return self.catalog.label(name)

    def candidates(self, name: str) -> List[ModelSource]:
        """The sources that may serve `name`, in resolution order (sources that cannot work here are left out).

        Example:
            >>> [s.kind for s in ModelRegistry(demo_model_path=DEMO_MODEL_PATH).candidates("busi")]
            ['demo']
        """
        return self.catalog.candidates(name)

    # ------------------------------------------------------------------ serving
    def serving(self, name: str) -> Optional[LoadedModel]:
        """The model already serving `name`, or `None` before its first use (nothing is loaded here)."""
        return self._serving.get(self.normalize(name))

    def describe(self, name: str) -> str:
        """Which source serves `name` (once loaded) or will be tried first (before)."""
        key = self.normalize(name)
        loaded = self._serving.get(key)
        if loaded is not None:
            precision = "float16" if loaded.dtype == torch.float16 else "float32"
            return f"{self.label(key)}: served by {loaded.source.label} ({loaded.device.type}, {precision})."
        candidates = self.candidates(key)
        if not candidates:
            return f"{self.label(key)}: no model available ({self.catalog.nothing_to_load_hint()})."
        return f"{self.label(key)}: will be served by {candidates[0].label} (loaded on first use)."

    def get(self, name: str) -> LoadedModel:
        """The model serving `name`, loading it on first use (thread-safe; each model loads once).

        Raises:
            `UnknownModelError` for an unknown name, `ModelUnavailableError` when no source loads.
        """
        key = self.normalize(name)
        loaded = self._serving.get(key)
        if loaded is not None:
            return loaded
        with self._name_locks[key]:
            if key in self._serving:
                return self._serving[key]
            tried = []
            for source in self.candidates(key):
                try:
                    loaded = self.cache.load(source)
                except Exception as err:  # any loader failure means: try the next source
                    logger.warning("Could not load %s for %s: %s", source.label, key, err)
                    tried.append(f"{source.label}: {type(err).__name__}: {err}")
                    continue
                logger.info("%s is served by %s.", self.label(key), source.label)
                self._serving[key] = loaded
                return loaded
            detail = "; ".join(tried) if tried else self.catalog.nothing_to_load_hint()
            raise ModelUnavailableError(f"No model could be loaded for {self.label(key)}: {detail}.")

    # ------------------------------------------------------------------ inference (see `space.inference`)
    def prepare(self, name: str, image, value_range: Optional[Tuple[float, float]] = None) -> PreparedInput:
        """Load the model for `name` if needed and preprocess `image` for it (`space.inference.prepare_input`)."""
        return prepare_input(self.get(name), image, value_range=value_range)

    def class_names(self, name: str) -> Dict[int, str]:
        """`id2label` of the model serving `name` (loading it if needed): {0: "background", 1: ...}.

        A model without `id2label` (a binary GMS written before multi-class existed) is binary:
        `{0: "background", 1: "foreground"}`.
        """
        model = self.get(name).model
        id2label = getattr(model, "id2label", None) or {0: "background", 1: "foreground"}
        return {int(k): str(v) for k, v in id2label.items()}

    @torch.inference_mode()
    def mask_probabilities(
        self, name: str, pixel_values: torch.Tensor, num_samples: int = 0, tta: bool = False, seed: Optional[int] = None
    ) -> np.ndarray:
        """Run the model for `name` on prepared pixel values (1, 3, S, S) (`space.inference.mask_probabilities`):
        (S, S) foreground probabilities, or (K+1, S, S) class probabilities for a multi-class model."""
        return mask_probabilities(self.get(name), pixel_values, num_samples=num_samples, tta=tta, seed=seed)
