"""Run an exported GMS (`gms_hub.inference.export`) on onnxruntime, with the same `segment` behaviour as `GMS.segment`.

Importing this module does not import diffusers: a deployment needs onnxruntime, numpy, Pillow and the CPU
build of torch (whose bilinear resize `gms_hub.models.processing` uses, so that masks match `GMS.segment`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch

from ..models.processing import ImageInput, ValueRange, segment_images

logger = logging.getLogger(__name__)

# The same names as gms_hub.inference.export and gms_hub.models.serialization (not imported: they import diffusers).
CONFIG_NAME = "config.json"
ONNX_NAME = "model.onnx"
MODEL_TYPE = "gms"


def _fetch(source: str, filename: str, **hub_kwargs) -> str:
    if os.path.isdir(source):
        path = os.path.join(source, filename)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{source} has no {filename}; is it a folder written by gms_hub.inference.export?")
        return path
    from huggingface_hub import hf_hub_download

    return hf_hub_download(source, filename, **hub_kwargs)


class ONNXGMS:
    """A GMS exported to ONNX, run by onnxruntime.

    Args:
        session (`onnxruntime.InferenceSession`): the session of `model.onnx`.
        config (`dict`): the exported `config.json` (`image_size`, `threshold`, ...).

    Example:
        >>> model = ONNXGMS.from_pretrained("gms-onnx")
        >>> masks = model.segment([Image.open("a.png"), Image.open("b.png")])
    """

    def __init__(self, session, config: Dict[str, Any]):
        self.session = session
        self.config = config
        self.image_size = int(config["image_size"])
        self.threshold = float(config.get("threshold", 0.5))
        onnx_config = config.get("onnx", {})
        inputs, outputs = session.get_inputs(), session.get_outputs()
        self.input_name = onnx_config.get("input", inputs[0].name)
        self.output_name = onnx_config.get("output", outputs[0].name)
        if self.input_name not in [i.name for i in inputs]:
            raise ValueError(f"The ONNX graph has no input {self.input_name!r} (it has {[i.name for i in inputs]}).")
        shape = next(i.shape for i in inputs if i.name == self.input_name)
        if len(shape) != 4 or shape[1] != 3 or list(shape[2:]) != [self.image_size, self.image_size]:
            raise ValueError(
                f"The ONNX input {self.input_name!r} has shape {shape}, but config.json says image_size "
                f"{self.image_size}, i.e. (batch, 3, {self.image_size}, {self.image_size}). The files come from "
                "different exports: export again with gms_hub.inference.export (--image_size S) to get a matching pair."
            )

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: Union[str, os.PathLike],
        providers: Optional[Sequence[str]] = None,
        session_options=None,
        **hub_kwargs,
    ) -> "ONNXGMS":
        """Open a folder (or Hub repo) written by `gms_hub.inference.export`.

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`): local folder or Hub repo id.
            providers (`list[str]`, *optional*): onnxruntime execution providers, in order of preference
                (default: `["CPUExecutionProvider"]`).
            session_options (`onnxruntime.SessionOptions`, *optional*): e.g. thread counts.
            hub_kwargs: `revision`, `cache_dir`, `token`, ... for Hub repos.

        Returns:
            `ONNXGMS`.

        Example:
            >>> model = ONNXGMS.from_pretrained("gms-onnx", providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        """
        import onnxruntime as ort

        source = os.fspath(pretrained_model_name_or_path)
        config_path = _fetch(source, CONFIG_NAME, **hub_kwargs)
        try:
            config = json.loads(Path(config_path).read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{config_path} is not valid JSON: {err}") from err
        if not isinstance(config, dict) or config.get("model_type") != MODEL_TYPE or "image_size" not in config:
            raise ValueError(
                f"{config_path} is not the config of an exported GMS (expected \"model_type\": \"{MODEL_TYPE}\" and "
                "an image_size); export the model with `python -m gms_hub.export`."
            )
        onnx_path = _fetch(source, config.get("onnx", {}).get("file", ONNX_NAME), **hub_kwargs)
        session = ort.InferenceSession(onnx_path, sess_options=session_options,
                                       providers=list(providers or ["CPUExecutionProvider"]))
        return cls(session, config)

    def __call__(self, pixel_values: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
        """Preprocessed images (B, 3, S, S) in [-1, 1] -> mask probabilities (B, 1, S, S), float32 numpy."""
        array = pixel_values.detach().cpu().numpy() if isinstance(pixel_values, torch.Tensor) else pixel_values
        array = np.ascontiguousarray(array, dtype=np.float32)
        if array.ndim != 4 or array.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(
                f"Expected pixel_values of shape (B, 3, {self.image_size}, {self.image_size}), got {array.shape}."
            )
        return self.session.run([self.output_name], {self.input_name: array})[0]  # (B, 1, S, S)

    def segment(
        self,
        images: Union[ImageInput, Sequence[ImageInput]],
        threshold: Optional[float] = None,
        return_probabilities: bool = False,
        value_range: ValueRange = None,
        batch_size: int = 8,
    ):
        """Segment images of any size, exactly as [`GMS.segment`]; masks come back at each image's (H, W).

        Args:
            images (`PIL.Image`, `np.ndarray` or a list of them): (H, W), (H, W, 1|3|4); uint8, uint16 or float.
            threshold (`float`, *optional*): defaults to the exported model's threshold.
            return_probabilities (`bool`, defaults to `False`): also return float32 probability maps.
            value_range (`tuple(float, float)`, *optional*): intensity range of uint16/float inputs.
            batch_size (`int`, defaults to 8): images per run of the session.

        Returns:
            A bool mask (H, W) for one image, a list of masks for a list; with `return_probabilities=True`,
            a tuple `(masks, probabilities)` of the same structure.

        Example:
            >>> mask, prob = model.segment(Image.open("scan.png"), return_probabilities=True)
        """
        threshold = self.threshold if threshold is None else float(threshold)
        return segment_images(
            lambda pixel_values: torch.from_numpy(self(pixel_values)),
            images, self.image_size, threshold, return_probabilities, value_range, batch_size,
        )
