"""gms_hub: Generative Medical Segmentation (Huo et al., AAAI 2025) on the Hugging Face stack."""

from pathlib import Path

__version__ = "0.1.0"

#: The offline demo model (a small VAE + LMM trained by the project on synthetic data), bundled with the package.
DEMO_MODEL_PATH = Path(__file__).parent / "demo_model"

from .lmm import LatentMappingModel  # noqa: E402
from .modeling import GMS, GMSOutput  # noqa: E402

__all__ = ["GMS", "GMSOutput", "LatentMappingModel", "DEMO_MODEL_PATH", "__version__"]
