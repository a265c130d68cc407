"""ONNX export of a GMS: `model.onnx` (pixel values in, mask probabilities out), `config.json` and a README.

Usage:
    python -m gms_hub.export --model demo --output_dir gms-onnx [--opset 17] [--image_size 224]

The exported graph is the whole network, frozen autoencoder included: `pixel_values` (B, 3, S, S) in [-1, 1]
-> `mask_probs` (B, 1, S, S) in [0, 1], with a dynamic batch axis and a fixed side S. [`ONNXGMS`] runs it on
onnxruntime with the same pre- and post-processing as `GMS.segment`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Optional, Union

import torch

logger = logging.getLogger(__name__)

ONNX_NAME = "model.onnx"
INPUT_NAME = "pixel_values"
OUTPUT_NAME = "mask_probs"
DEFAULT_OPSET = 17  # LayerNorm/GroupNorm-era opset that every onnxruntime >= 1.14 runs

README_TEMPLATE = """---
library_name: gms_hub
tags: [onnx, medical-imaging, image-segmentation, gms]
---
# GMS (ONNX export)

`model.onnx` is a Generative Medical Segmentation model (frozen autoencoder + latent mapping model) exported
with `gms_hub.inference.export` (opset {opset}, torch {torch_version}).

- Input `{input_name}`: float32 `(B, 3, {size}, {size})`, RGB in [-1, 1]; the batch axis is dynamic.
- Output `{output_name}`: float32 `(B, 1, {size}, {size})`, foreground probabilities in [0, 1].

Pre-processing (as `GMS.segment`): uint8 images are divided by 255, uint16/float images are stretched from their
min to their max (or a given value range) to [0, 1]; grayscale is repeated to 3 channels and alpha dropped; the
image is resized to {size}x{size} bilinearly (half-pixel centres, no antialiasing), then mapped to [-1, 1] by
`x * 2 - 1`. Post-processing: resize the probabilities back to the image's (H, W) the same way, clamp to [0, 1],
and threshold (`threshold` in `config.json`, {threshold}).

```python
from gms_hub.inference.onnx_runtime import ONNXGMS

model = ONNXGMS.from_pretrained("{folder}")
mask = model.segment(image)  # bool (H, W)
```

`gms_hub.inference.onnx_runtime` needs onnxruntime, numpy, Pillow and the CPU build of torch (its resize helpers are
torch's bilinear interpolation, so masks match `GMS.segment`); it does not import diffusers.
"""


class _MaskProbabilities(torch.nn.Module):
    """The exported function: `pixel_values` -> `GMS(pixel_values).mask_probs`."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values).mask_probs  # (B, 1, S, S)


def _set_output_shape(path: Path, size: int) -> None:
    """Write the static output shape (batch, 1, S, S) into the graph (the tracer leaves symbolic names there)."""
    import onnx

    graph_model = onnx.load(str(path))
    dims = graph_model.graph.output[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, ("batch", 1, size, size)):
        dim.Clear()
        if isinstance(value, str):
            dim.dim_param = value
        else:
            dim.dim_value = value
    onnx.checker.check_model(graph_model)
    onnx.save(graph_model, str(path))


def export_onnx(
    model: torch.nn.Module,
    output_dir: Union[str, os.PathLike],
    opset: int = DEFAULT_OPSET,
    image_size: Optional[int] = None,
) -> Path:
    """Export a GMS to `output_dir/model.onnx`, with its `config.json` and a README on pre/post-processing.

    Args:
        model ([`GMS`]): the model to export; it is moved to the CPU in float32 (in place) and traced in eval mode.
        output_dir (`str` or `os.PathLike`): target folder (created).
        opset (`int`, defaults to 17): ONNX opset version.
        image_size (`int`, *optional*): side S of the exported input; defaults to `model.image_size`. The
            written `config.json` records this S.

    Returns:
        `Path`: the written `model.onnx`.

    Raises:
        `ValueError`: when the model (typically its autoencoder) uses an operator the ONNX exporter cannot
            translate; the message names the operator and the autoencoder class.

    Example:
        >>> model = GMS.from_pretrained(gms_hub.DEMO_MODEL_PATH)
        >>> export_onnx(model, "gms-onnx")
        >>> ONNXGMS.from_pretrained("gms-onnx").segment(image)
    """
    size = int(image_size if image_size is not None else model.image_size)
    if size <= 0 or size % 8:
        raise ValueError(f"image_size must be a positive multiple of 8 (the autoencoder downsamples 8x), got {size}.")
    if opset < 14:
        raise ValueError(f"opset must be at least 14 (scaled dot-product attention of the SD VAE), got {opset}.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / ONNX_NAME
    was_training = model.training
    model.to("cpu", torch.float32).eval()
    dummy = torch.zeros(2, 3, size, size)  # (2, 3, S, S): batch 2 so that the tracer cannot fold the batch axis
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer warns about Python branches on shapes in diffusers' blocks; none depends on the batch.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")  # strided slices stay ops
            torch.onnx.export(
                _MaskProbabilities(model), (dummy,), str(path),
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
                # TorchScript exporter: the dynamo exporter needs onnxscript, an extra dependency.
                dynamo=False,
            )
    except Exception as err:  # UnsupportedOperatorError, SymbolicValueError, RuntimeError from tracing, ...
        path.unlink(missing_ok=True)
        backbone = type(getattr(model, "vae", model)).__name__
        raise ValueError(
            f"Could not export this GMS (autoencoder {backbone}) to ONNX opset {opset}: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else err!r}. An operator of the model has no ONNX translation; "
            "try a higher --opset, or an autoencoder made of standard layers (AutoencoderKL, AutoencoderTiny)."
        ) from err
    finally:
        model.train(was_training)
    _set_output_shape(path, size)

    config = dict(model.config, image_size=size)
    config["onnx"] = {"file": ONNX_NAME, "opset": int(opset), "input": INPUT_NAME, "output": OUTPUT_NAME,
                      "torch_version": torch.__version__}
    (output_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    readme = README_TEMPLATE.format(
        opset=opset, torch_version=torch.__version__, input_name=INPUT_NAME, output_name=OUTPUT_NAME, size=size,
        threshold=config.get("threshold", 0.5), folder=output_dir.name,
    )
    (output_dir / "README.md").write_text(readme)
    logger.info("Wrote %s (%.1f MB), config.json and README.md", path, path.stat().st_size / 2**20)
    return path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Export a GMS model to ONNX (model.onnx + config.json + README.md).")
    parser.add_argument("--model", default="demo", help="Any spec gms_hub.load_model takes: 'demo' (the bundled "
                        "offline demo model), a reference name, a .pth path or URL, a local folder, or a Hub id[@revision].")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET}).")
    parser.add_argument("--image_size", type=int, default=None, help="Input side S (default: the model's).")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    from ..models.resolver import load_model

    model = load_model(args.model, device="cpu")
    export_onnx(model, args.output_dir, opset=args.opset, image_size=args.image_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
