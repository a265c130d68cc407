"""gms_hub: Generative Medical Segmentation (Huo et al., AAAI 2025) on the Hugging Face stack."""

from importlib import import_module
from pathlib import Path

__version__ = "0.1.0"

#: The offline demo model (a small VAE + LMM trained by the project on synthetic data), bundled with the package.
DEMO_MODEL_PATH = Path(__file__).parent / "demo_model"
#: The offline real-data demo model: grey/white matter on T1 brain slices (the MNI ICBM152 template), bundled too.
DEMO_BRAIN_PATH = Path(__file__).parent / "demo_brain"

# Imported on first use, so `gms_hub.data` and the CLIs don't pay for torch/diffusers until they need them.
_LAZY = {
    "GMS": ".models.gms",
    "GMSOutput": ".models.gms",
    "LatentMappingModel": ".models.lmm",
    "load_model": ".models.resolver",
}

__all__ = ["GMS", "GMSOutput", "LatentMappingModel", "load_model", "DEMO_MODEL_PATH", "DEMO_BRAIN_PATH", "__version__"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'gms_hub' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
