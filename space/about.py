"""The model panel of the page: which source serves a name (`describe_source`) and its card (`about_model`)."""

from __future__ import annotations

from .config import UnknownModelError
from .page import model_card_markdown
from .registry import ModelRegistry
from .retention import RETENTION_S

RETENTION_NOTE = (
    f"**Your data:** uploads and results are kept for {RETENTION_S // 60} minutes at most, and deleted when the "
    "Space stops; nothing is stored anywhere else."
)

__all__ = ["ModelInfo"]


class ModelInfo:
    """Describes the model behind a dropdown name; nothing is loaded here.

    Args:
        registry (`ModelRegistry`): which model serves each name.
    """

    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def describe_source(self, model_name):
        try:
            return f"**Model:** {self.registry.describe(model_name)}"
        except UnknownModelError as err:
            return f"**Model:** {err}"

    def about_model(self, model_name):
        """The "About this model" panel: the card of the model that serves (or will serve) `model_name`."""
        try:
            key = self.registry.normalize(model_name)
        except UnknownModelError as err:
            return str(err)
        loaded = self.registry.serving(key)
        if loaded is not None:
            source = loaded.source
        else:
            candidates = self.registry.candidates(key)
            if not candidates:
                return self.registry.describe(key)
            source = candidates[0]
        header = f"**{self.registry.label(key)}**, served by {source.label}.\n\n"
        card = model_card_markdown(source.kind, source.location, source.revision, online=self.registry.online)
        return f"{header}{RETENTION_NOTE}\n\n{card}"
