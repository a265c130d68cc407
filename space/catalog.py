"""Which model names the Space serves and which sources may serve each, in resolution order.

Nothing is loaded here: `space.model_cache` loads a source, `space.registry` ties a name to the first source that
loads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Union

from gms_hub.data.benchmarks import BENCHMARKS
from gms_hub.models.reference import reference_checkpoint_path
from gms_hub.models.resolver import classify_spec

from .config import model_key, normalize_name
from .sources import ModelSource

__all__ = ["ModelCatalog"]


class ModelCatalog:
    """The names of the Space's dropdown (benchmarks, then custom names) and the sources that may serve each.

    Args:
        hub_models (`Mapping[str, str]`, *optional*): model name -> a model spec for `gms_hub.load_model`; each is
            classified here, so a malformed one fails at startup.
        online (`bool`, defaults to `False`): whether Hub/GitHub downloads may be attempted.
        demo_model_path (`str` or `os.PathLike`, *optional*): folder of the offline demo model.

    Example:
        >>> ModelCatalog({"my-model": "org/repo"}).names()[-1]
        'my-model'
    """

    def __init__(
        self,
        hub_models: Optional[Mapping[str, str]] = None,
        online: bool = False,
        demo_model_path: Union[None, str, os.PathLike] = None,
    ):
        self.hub_models = {model_key(k): v for k, v in (hub_models or {}).items()}
        self.configured: Dict[str, ModelSource] = {}
        for key, value in self.hub_models.items():
            try:
                self.configured[key] = ModelSource(*classify_spec(value))
            except (ValueError, FileNotFoundError) as err:
                raise ValueError(f"The model configured for {key!r} ({value!r}) is not usable: {err}") from None
        self.online = bool(online)
        self.demo_model_path = None if demo_model_path is None else Path(demo_model_path)

    @property
    def custom_names(self) -> List[str]:
        """Configured model names that are not benchmarks, in configuration order."""
        return [key for key in self.hub_models if key not in BENCHMARKS]

    def names(self) -> List[str]:
        """Every name the Space serves: the benchmarks (paper's order), then the custom names."""
        return list(BENCHMARKS) + self.custom_names

    def normalize(self, name: object) -> str:
        """`name` as a key of `names()`; `UnknownModelError` listing the available names otherwise."""
        return normalize_name(name, self.custom_names)

    def label(self, name: object) -> str:
        """Readable name: the benchmark's label, or the custom name itself."""
        key = self.normalize(name)
        return BENCHMARKS.get(key, key)

    def candidates(self, name: str) -> List[ModelSource]:
        """The sources that may serve `name`, in resolution order (sources that cannot work here are left out)."""
        key = self.normalize(name)
        sources: List[ModelSource] = []
        if key in self.configured:
            # A Hub repo stays a candidate offline: it may be in the Hub cache (`local_files_only`).
            sources.append(self.configured[key])
        if key not in BENCHMARKS:
            return sources  # a custom name has no reference checkpoint, and the demo model is not it
        if self.online or reference_checkpoint_path(key).is_file():
            sources.append(ModelSource("reference", key))
        if self.demo_model_path is not None and (self.demo_model_path / "config.json").is_file():
            sources.append(ModelSource("demo", str(self.demo_model_path)))
        return sources

    def nothing_to_load_hint(self) -> str:
        """Why no source is left for a benchmark, and what to set."""
        where = self.demo_model_path if self.demo_model_path is not None else "gms_hub.DEMO_MODEL_PATH"
        return (
            f"no configured repo, {'the reference checkpoint failed' if self.online else 'offline'}, and no demo model at "
            f"{where}; set GMS_MODELS or GMS_DEMO_MODEL"
        )
