"""GMS Space: segment a medical image with Generative Medical Segmentation (Huo et al., AAAI 2025).

Run locally with `python app.py` (http://127.0.0.1:7860). The API endpoint `/segment` takes
(image file, model name, threshold) and returns (overlay, mask PNG, probability map, stats).
The Space's own code lives in the `space/` package beside this file (model registry in `space.registry`,
upload handling and rendering in `space.results`, settings in `space.config`); this file only builds the UI. Environment: `GMS_MODELS`, `GMS_MODELS_FILE`, `GMS_DEMO_MODEL`, `GMS_DEVICE`,
`GMS_PRECISION`, `GMS_MAX_IMAGE_PIXELS`, `GMS_CONCURRENCY`, `GMS_QUEUE_SIZE`, `GRADIO_SERVER_NAME`,
`GRADIO_SERVER_PORT`, `HF_HUB_OFFLINE` (see the README's `app` section).
"""

from __future__ import annotations

try:  # ZeroGPU (imported before torch): borrow a GPU for the forward pass only; a no-op without `spaces`.
    import spaces

    gpu = spaces.GPU(duration=60)
except ImportError:
    spaces = None

    def gpu(fn):
        return fn


import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import gradio as gr
from PIL import Image

from gms_hub.benchmarks import BENCHMARKS
from gms_hub.image_io import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, write_mask_png
from space.config import UnknownModelError, normalize_name
from space.registry import ModelRegistry, ModelUnavailableError
from space.results import (
    InputError,
    check_threshold,
    mask_from_probabilities,
    mask_stats,
    overlay_mask,
    probability_image,
    read_upload,
)

logger = logging.getLogger("gms_app")
if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "examples"
# (file, model, label): the committed examples, made by scripts/make_examples.py.
EXAMPLES = [
    ("ultrasound.png", "busi", "breast ultrasound (8-bit gray PNG)"),
    ("ultrasound_16bit.png", "bus", "breast ultrasound (16-bit PNG)"),
    ("dermoscopy.jpg", "ham10000", "dermoscopy (RGB JPEG)"),
    ("histology.png", "glas", "colon histology (RGB PNG)"),
]
FILE_TYPES = list(IMAGE_EXTENSIONS)
MAX_PIXELS = int(os.environ.get("GMS_MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS))
OUTPUT_DIR = Path(tempfile.mkdtemp(prefix="gms-app-"))
OUTPUT_MAX_AGE_S = 3600
STATE_TTL_S = 1800

def _example_images():
    images = []
    for name, _, _ in EXAMPLES:
        try:
            images.append(read_upload(EXAMPLES_DIR / name))
        except (InputError, OSError) as err:
            logger.warning("Example %s unusable for the float16 check: %s", name, err)
    return images


registry = ModelRegistry.from_env(
    config_file=os.environ.get("GMS_MODELS_FILE", ROOT / "app_models.json"),
    check_images=_example_images(),
)


@gpu
def _forward(model_name, pixel_values):
    """The GPU part: one forward pass -> probabilities (S, S)."""
    return registry.mask_probabilities(model_name, pixel_values)


def _user_error(err: Exception) -> gr.Error:
    return gr.Error(str(err), print_exception=False)


def _new_output_folder() -> Path:
    # One folder per result keeps download names readable; results older than an hour are pruned.
    now = time.time()
    for old in OUTPUT_DIR.iterdir():
        if now - old.stat().st_mtime > OUTPUT_MAX_AGE_S:
            shutil.rmtree(old, ignore_errors=True)
    folder = OUTPUT_DIR / uuid.uuid4().hex
    folder.mkdir()
    return folder


def _save_png(array, path: Path) -> str:
    # Images go out as PNG files we write ourselves: lossless, and gradio then copies them into its cache
    # atomically (its in-memory image path rewrites a shared cache file, which races under concurrent
    # identical results).
    Image.fromarray(array).save(path, format="PNG")
    return str(path)


def _render(result: dict, threshold: float):
    """Threshold cached probabilities: (overlay PNG path, mask PNG path, stats)."""
    mask = mask_from_probabilities(result["probs"], result["size"], threshold)  # (H, W) bool
    stats = {
        "model": result["model"],
        "source": result["source"],
        "source_kind": result["source_kind"],
        "threshold": threshold,
        **mask_stats(mask),
        "device": result["device"],
        "precision": result["precision"],
    }
    folder = _new_output_folder()
    overlay = _save_png(overlay_mask(result["display"], mask), folder / f"{result['stem']}_overlay.png")
    return overlay, write_mask_png(mask, folder / f"{result['stem']}_mask.png"), stats


def segment(image_file, model_name, threshold):
    """Segment an uploaded image.

    Args:
        image_file (`str`): path of the uploaded PNG, JPEG, BMP or TIFF (gray, RGB, RGBA, 8 or 16 bit).
        model_name (`str`): one of bus, busi, glas, ham10000, kvasir-instrument.
        threshold (`float`): probability above which a pixel is foreground (0.5 in the paper).

    Returns:
        overlay image, mask PNG path (input size, values 0/255), probability map image, stats dict,
        and the cached result (for re-thresholding in the UI).
    """
    try:
        threshold = check_threshold(threshold)
        key = normalize_name(model_name)
        image = read_upload(image_file, max_pixels=MAX_PIXELS)
        prepared = registry.prepare(key, image)
        del image
        probs = _forward(key, prepared.pixel_values)  # (S, S)
        loaded = registry.get(key)
        result = {
            "probs": probs,
            "size": prepared.size,
            "display": prepared.display,
            "stem": Path(str(image_file)).stem[:64] or "image",
            "model": key,
            "source": loaded.source.label,
            "source_kind": loaded.source.kind,
            "device": loaded.device.type,
            "precision": "float16" if loaded.dtype.itemsize == 2 else "float32",
        }
        overlay, mask_path, stats = _render(result, threshold)
        prob_map = _save_png(
            probability_image(probs, prepared.display.shape[:2]), Path(mask_path).with_name(f"{result['stem']}_probability.png")
        )
    except (InputError, UnknownModelError, ModelUnavailableError) as err:
        raise _user_error(err) from None
    except gr.Error:
        raise
    except Exception as err:  # keep the server up and tell the user what happened
        logger.exception("Segmentation failed")
        raise gr.Error(f"Segmentation failed ({type(err).__name__}: {err}). Try another image or model.") from None
    return overlay, mask_path, prob_map, stats, result


def rethreshold(result, threshold):
    """Re-threshold the cached probabilities of the last result (no model call)."""
    if not result:
        return gr.skip(), gr.skip(), gr.skip()
    try:
        return _render(result, check_threshold(threshold))
    except InputError as err:
        raise _user_error(err) from None


def describe_source(model_name):
    try:
        return f"**Model:** {registry.describe(model_name)}"
    except UnknownModelError as err:
        return f"**Model:** {err}"


def build_demo() -> gr.Blocks:
    network = "online" if registry.online else "offline (no network found at startup)"
    with gr.Blocks(title="GMS: Generative Medical Segmentation", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "# GMS: Generative Medical Segmentation\n"
            "A frozen Stable Diffusion VAE encodes the image, a 1.5 M-parameter latent mapping model turns the "
            "image latent into a mask latent, and the same VAE decodes the mask "
            "([Huo et al., AAAI 2025](https://arxiv.org/abs/2403.18198)). "
            f"Research demo, not for diagnosis. Network: {network}."
        )
        with gr.Row():
            with gr.Column():
                model = gr.Dropdown(
                    choices=[(label, key) for key, label in BENCHMARKS.items()],
                    value="busi",
                    label="Model (benchmark it was trained on)",
                    allow_custom_value=True,  # so the API gets our message for an unknown name
                    elem_id="model",
                )
                source = gr.Markdown(describe_source("busi"), elem_id="model-source")
                image_file = gr.File(
                    label="Image (PNG, JPEG, BMP or TIFF; gray, RGB, RGBA, 8 or 16 bit)",
                    file_types=FILE_TYPES,
                    elem_id="image-file",
                )
                threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="Threshold (re-thresholds without rerunning)")
                button = gr.Button("Segment", variant="primary", elem_id="segment-button")
            with gr.Column():
                overlay = gr.Image(label="Mask overlay", format="png", interactive=False, elem_id="overlay")
                prob_map = gr.Image(label="Probability map", format="png", interactive=False, elem_id="probability")
                mask_file = gr.File(label="Mask PNG (input size, values 0/255)", interactive=False, elem_id="mask-file")
                stats = gr.JSON(label="Stats", elem_id="stats")
        # Cached probabilities (model resolution) + preview for the threshold slider; per session, expiring.
        result = gr.State(None, time_to_live=STATE_TTL_S)

        button.click(
            segment,
            inputs=[image_file, model, threshold],
            outputs=[overlay, mask_file, prob_map, stats, result],
            api_name="segment",
            api_description="Segment an image: (image file, model name, threshold) -> (overlay, mask PNG, probability map, stats).",
        ).then(describe_source, inputs=model, outputs=source, api_visibility="private")
        threshold.release(
            rethreshold, inputs=[result, threshold], outputs=[overlay, mask_file, stats],
            api_visibility="private", concurrency_id="rethreshold", concurrency_limit=4,
        )
        model.change(describe_source, inputs=model, outputs=source, api_visibility="private", queue=False)
        demo.load(describe_source, inputs=model, outputs=source, api_visibility="private", queue=False)

        examples = [[str(EXAMPLES_DIR / name), key, 0.5] for name, key, _ in EXAMPLES if (EXAMPLES_DIR / name).is_file()]
        if examples:
            gr.Examples(
                examples=examples,
                inputs=[image_file, model, threshold],
                outputs=[overlay, mask_file, prob_map, stats, result],
                fn=segment,
                run_on_click=True,
                cache_examples=False,
                example_labels=[label for name, _, label in EXAMPLES if (EXAMPLES_DIR / name).is_file()],
                api_visibility="private",
            )
    # The queue bounds concurrent forward passes (and so memory); extra requests wait, beyond max_size they are refused.
    demo.queue(
        default_concurrency_limit=int(os.environ.get("GMS_CONCURRENCY", 2)),
        max_size=int(os.environ.get("GMS_QUEUE_SIZE", 32)),
    )
    return demo


demo = build_demo()

if __name__ == "__main__":
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        max_file_size="200mb",
        state_session_capacity=500,
        allowed_paths=[str(EXAMPLES_DIR)],
    )
