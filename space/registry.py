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

import copy
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from gms_hub.data.benchmarks import BENCHMARKS
from gms_hub.models.reference import reference_checkpoint_path
from gms_hub.models.resolver import ModelSpec, classify_spec

from .config import DEMO_BRAIN_FOLDER, DEMO_BRAIN_LABEL, DEMO_LABEL, load_model_config, model_key, network_available, normalize_name

logger = logging.getLogger(__name__)

__all__ = [
    "LoadedModel",
    "ModelRegistry",
    "ModelSource",
    "ModelUnavailableError",
    "PreparedInput",
    "count_half_precision_changes",
]


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


# ---------------------------------------------------------------------------------------------- registry
class ModelRegistry:
    """Resolves, loads (once, lazily, one lock per model) and runs the Space's models.

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
        self.hub_models = {model_key(k): v for k, v in (hub_models or {}).items()}
        self._configured: Dict[str, ModelSource] = {}
        for key, value in self.hub_models.items():
            try:
                self._configured[key] = ModelSource(*classify_spec(value))
            except (ValueError, FileNotFoundError) as err:
                raise ValueError(f"The model configured for {key!r} ({value!r}) is not usable: {err}") from None
        self.online = bool(online)
        self.demo_model_path = None if demo_model_path is None else Path(demo_model_path)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.precision = precision
        self.check_images = list(check_images or [])
        self._lock = threading.Lock()
        self._name_locks: Dict[str, threading.Lock] = {key: threading.Lock() for key in self.names()}
        self._source_locks: Dict[ModelSource, threading.Lock] = {}
        self._by_source: Dict[ModelSource, LoadedModel] = {}
        self._serving: Dict[str, LoadedModel] = {}
        self._failures: Dict[ModelSource, str] = {}

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

    # ------------------------------------------------------------------ names
    @property
    def custom_names(self) -> List[str]:
        """Configured model names that are not benchmarks, in configuration order."""
        return [key for key in self.hub_models if key not in BENCHMARKS]

    def names(self) -> List[str]:
        """Every name the Space serves: the benchmarks (paper's order), then the custom names."""
        return list(BENCHMARKS) + self.custom_names

    def normalize(self, name: object) -> str:
        """`name` as a key of `names()`; `UnknownModelError` listing the available names otherwise.

        Example:
            >>> ModelRegistry({"my-model": "org/repo"}).normalize("My-Model")
            'my-model'
        """
        return normalize_name(name, self.custom_names)

    def label(self, name: object) -> str:
        """Readable name: the benchmark's label, or the custom name itself."""
        key = self.normalize(name)
        return BENCHMARKS.get(key, key)

    # ------------------------------------------------------------------ resolution
    def candidates(self, name: str) -> List[ModelSource]:
        """The sources that may serve `name`, in resolution order (sources that cannot work here are left out).

        Example:
            >>> [s.kind for s in ModelRegistry(demo_model_path=DEMO_MODEL_PATH).candidates("busi")]
            ['demo']
        """
        key = self.normalize(name)
        sources: List[ModelSource] = []
        if key in self._configured:
            # A Hub repo stays a candidate offline: it may be in the Hub cache (`local_files_only`).
            sources.append(self._configured[key])
        if key not in BENCHMARKS:
            return sources  # a custom name has no reference checkpoint, and the demo model is not it
        if self.online or reference_checkpoint_path(key).is_file():
            sources.append(ModelSource("reference", key))
        if self.demo_model_path is not None and (self.demo_model_path / "config.json").is_file():
            sources.append(ModelSource("demo", str(self.demo_model_path)))
        return sources

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
            return f"{self.label(key)}: no model available ({self._nothing_to_load_hint()})."
        return f"{self.label(key)}: will be served by {candidates[0].label} (loaded on first use)."

    def _nothing_to_load_hint(self) -> str:
        where = self.demo_model_path if self.demo_model_path is not None else "gms_hub.DEMO_MODEL_PATH"
        return (
            f"no configured repo, {'the reference checkpoint failed' if self.online else 'offline'}, and no demo model at "
            f"{where}; set GMS_MODELS or GMS_DEMO_MODEL"
        )

    # ------------------------------------------------------------------ loading
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
                    loaded = self._load_source(source)
                except Exception as err:  # any loader failure means: try the next source
                    logger.warning("Could not load %s for %s: %s", source.label, key, err)
                    tried.append(f"{source.label}: {type(err).__name__}: {err}")
                    continue
                logger.info("%s is served by %s.", self.label(key), source.label)
                self._serving[key] = loaded
                return loaded
            detail = "; ".join(tried) if tried else self._nothing_to_load_hint()
            raise ModelUnavailableError(f"No model could be loaded for {self.label(key)}: {detail}.")

    def _load_source(self, source: ModelSource) -> LoadedModel:
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

    # ------------------------------------------------------------------ inference
    def prepare(self, name: str, image, value_range: Optional[Tuple[float, float]] = None) -> PreparedInput:
        """Load the model for `name` if needed and preprocess `image` for it (CPU work, no forward pass).

        Args:
            name (`str`): benchmark key or label.
            image (`PIL.Image.Image` or `np.ndarray`): any mode the library reads (8/16-bit, gray, RGB, RGBA), or a
                DICOM/NIfTI frame from `gms_hub.io.medical.MedicalImage.frames`.
            value_range (`tuple(float, float)`, *optional*): the intensities mapped to 0 and 1 (a medical frame's
                `MedicalImage.value_range`); by default the library's rule for the image's dtype.

        Returns:
            `PreparedInput`.
        """
        from gms_hub.models.processing import preprocess, to_float_rgb

        from .results import display_image

        loaded = self.get(name)
        rgb = to_float_rgb(image, value_range=value_range)  # (H, W, 3) in [0, 1]: the library's intensity rule
        display = display_image(rgb)
        # value_range=(0, 1) makes preprocess's own to_float_rgb the identity on `rgb`.
        pixel_values, sizes = preprocess([rgb], loaded.image_size, value_range=(0.0, 1.0))  # (1, 3, S, S)
        del rgb
        return PreparedInput(pixel_values=pixel_values, size=sizes[0], display=display)

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
        """Run the model for `name` on prepared pixel values (1, 3, S, S).

        Args:
            name (`str`): model name.
            pixel_values (`torch.Tensor`): (1, 3, S, S) in [-1, 1], from `prepare`.
            num_samples (`int`, defaults to 0): posterior samples (`gms_hub.inference.uncertainty.predict_probabilities`);
                0 with `tta=False` is the paper's single pass, bit for bit.
            tta (`bool`, defaults to `False`): also average over the flips and quarter turns.
            seed (`int`, *optional*): seed of the posterior noise (the same seed gives the same maps).

        Returns:
            `np.ndarray`: float32 (S, S) foreground probabilities for a binary model, (K+1, S, S) class
            probabilities (background first) for a model with K > 1 classes.
        """
        from gms_hub.inference.uncertainty import predict_probabilities

        loaded = self.get(name)
        generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        probs = predict_probabilities(
            loaded.model, pixel_values.to(loaded.device, loaded.dtype), num_samples=int(num_samples), tta=bool(tta),
            generator=generator,
        )  # (1, C, S, S): C = 1 (binary) or K + 1
        probs = probs[0].float().cpu().numpy()  # (C, S, S)
        return probs[0] if probs.shape[0] == 1 else probs


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
