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
    probability_image,
    read_upload,
)
from space.page import (
    DEFAULT_OPACITY,
    heatmap_with_colorbar,
    model_card_markdown,
    overlay_image,
    preview_image,
    stats_table_html,
    write_batch_outputs,
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
MAX_BATCH_FILES = int(os.environ.get("GMS_MAX_BATCH_FILES", 50))
OUTPUT_DIR = Path(tempfile.mkdtemp(prefix="gms-app-"))
OUTPUT_MAX_AGE_S = 3600
STATE_TTL_S = 1800
HEATMAP_MIN_SIDE = 384  # the heat map is drawn at least this large so its colour bar reads at display size


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


def _stem(path) -> str:
    return Path(str(path)).stem[:64] or "image"


def _render(result: dict, threshold: float, opacity: float = DEFAULT_OPACITY):
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
    overlay = _save_png(overlay_image(result["display"], mask, opacity), folder / f"{result['stem']}_overlay.png")
    return overlay, write_mask_png(mask, folder / f"{result['stem']}_mask.png"), stats


def _run_model(image_file, key: str) -> dict:
    """Read, preprocess and segment one upload: the cached result the page and the API render from."""
    started = time.perf_counter()
    image = read_upload(image_file, max_pixels=MAX_PIXELS)
    prepared = registry.prepare(key, image)
    del image
    probs = _forward(key, prepared.pixel_values)  # (S, S)
    loaded = registry.get(key)
    return {
        "probs": probs,
        "size": prepared.size,
        "display": prepared.display,
        "stem": _stem(image_file),
        "model": key,
        "source": loaded.source.label,
        "source_kind": loaded.source.kind,
        "device": loaded.device.type,
        "precision": "float16" if loaded.dtype.itemsize == 2 else "float32",
        "seconds": time.perf_counter() - started,
    }


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
        result = _run_model(image_file, normalize_name(model_name))
        overlay, mask_path, stats = _render(result, threshold)
        prob_map = _save_png(
            probability_image(result["probs"], result["display"].shape[:2]),
            Path(mask_path).with_name(f"{result['stem']}_probability.png"),
        )
    except (InputError, UnknownModelError, ModelUnavailableError) as err:
        raise _user_error(err) from None
    except gr.Error:
        raise
    except Exception as err:  # keep the server up and tell the user what happened
        logger.exception("Segmentation failed")
        raise gr.Error(f"Segmentation failed ({type(err).__name__}: {err}). Try another image or model.") from None
    return overlay, mask_path, prob_map, stats, result


def rethreshold(result, threshold, opacity=DEFAULT_OPACITY):
    """Re-threshold the cached probabilities of the last result (no model call): (overlay, mask PNG, stats)."""
    if not result:
        return gr.skip(), gr.skip(), gr.skip()
    try:
        return _render(result, check_threshold(threshold), opacity)
    except (InputError, ValueError) as err:
        raise _user_error(err) from None


# ---------------------------------------------------------------------------------------------- the page
def show_preview(image_file):
    """The upload as the model sees it (library intensity rule), shown as soon as a file is chosen."""
    if not image_file:
        return None
    try:
        preview = preview_image(image_file, max_pixels=MAX_PIXELS)
    except (InputError, ValueError) as err:
        raise _user_error(err) from None
    return _save_png(preview, _new_output_folder() / f"{_stem(image_file)}_preview.png")


def update_view(result, threshold, opacity):
    """Re-render the page's result from cached probabilities: overlay, comparison, mask file, stats table."""
    if not result:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    overlay, mask_path, stats = rethreshold(result, threshold, opacity)
    original = _save_png(result["display"], Path(overlay).with_name(f"{result['stem']}_original.png"))
    table = stats_table_html(stats, model_label=BENCHMARKS.get(stats["model"]), seconds=result.get("seconds"))
    return overlay, (original, overlay), mask_path, table


def show_result(result, threshold, opacity):
    """After a segmentation: the views of `update_view` plus the probability heat map with its colour bar."""
    if not result:
        return (gr.skip(),) * 5
    views = update_view(result, threshold, opacity)
    height, width = result["display"].shape[:2]
    scale = max(1.0, HEATMAP_MIN_SIDE / max(height, width))  # small images: keep the bar's text in proportion
    heatmap = heatmap_with_colorbar(result["probs"], (round(height * scale), round(width * scale)), label="")  # (h, w + bar, 4)
    return (*views, _save_png(heatmap, Path(views[0]).with_name(f"{result['stem']}_heatmap.png")))


def describe_source(model_name):
    try:
        return f"**Model:** {registry.describe(model_name)}"
    except UnknownModelError as err:
        return f"**Model:** {err}"


def about_model(model_name):
    """The "About this model" panel: the card of the model that serves (or will serve) `model_name`."""
    try:
        key = normalize_name(model_name)
    except UnknownModelError as err:
        return str(err)
    loaded = registry.serving(key)
    if loaded is not None:
        source = loaded.source
    else:
        candidates = registry.candidates(key)
        if not candidates:
            return registry.describe(key)
        source = candidates[0]
    header = f"**{BENCHMARKS[key]}**, served by {source.label}.\n\n"
    return header + model_card_markdown(source.kind, source.location, source.revision, online=registry.online)


def load_example(evt: gr.SelectData):
    """A click on an example thumbnail: its file and its model."""
    name, key, _ = _available_examples()[evt.index]
    return str(EXAMPLES_DIR / name), key


def segment_batch(image_files, model_name, threshold, progress=gr.Progress()):
    """Segment several images with one model.

    Args:
        image_files (`list[str]`): paths of the uploaded images (PNG, JPEG, BMP or TIFF), at most 50.
        model_name (`str`): one of bus, busi, glas, ham10000, kvasir-instrument.
        threshold (`float`): probability above which a pixel is foreground.

    Returns:
        zip of the mask PNGs (`<name>_mask.png`), CSV of the stats (one row per file; a file that cannot be read
        gets its message in `error`), and the same rows as a table.
    """
    files = [f for f in (image_files or []) if f]
    if not files:
        raise gr.Error("No images were uploaded. Choose one or more PNG, JPEG, BMP or TIFF files.", print_exception=False)
    if len(files) > MAX_BATCH_FILES:
        raise gr.Error(f"{len(files)} files were uploaded; the limit is {MAX_BATCH_FILES} per batch. Split them.",
                       print_exception=False)
    try:
        threshold = check_threshold(threshold)
        key = normalize_name(model_name)
        registry.get(key)  # fail once, before the loop, when no model loads
    except (InputError, UnknownModelError, ModelUnavailableError) as err:
        raise _user_error(err) from None
    folder = _new_output_folder()
    rows, masks = [], {}
    for index, image_file in enumerate(progress.tqdm(files, desc="Segmenting")):
        name = Path(str(image_file)).name
        mask_name = f"{_stem(image_file)}_mask.png"
        if mask_name in masks:  # two uploads with the same name
            mask_name = f"{_stem(image_file)}_{index}_mask.png"
        row = {"file": name, "model": key, "threshold": threshold}
        try:
            result = _run_model(image_file, key)
            mask = mask_from_probabilities(result["probs"], result["size"], threshold)  # (H, W) bool
            masks[mask_name] = write_mask_png(mask, folder / mask_name)
            row.update(mask=mask_name, source_kind=result["source_kind"], seconds=round(result["seconds"], 3),
                       **mask_stats(mask))
        except InputError as err:
            row["error"] = str(err)
        except Exception as err:  # one bad file must not lose the others
            logger.exception("Batch segmentation of %s failed", name)
            row["error"] = f"{type(err).__name__}: {err}"
        rows.append(row)
    zip_path, csv_path = write_batch_outputs(rows, masks, folder)
    table = [[r["file"], r.get("area_px", ""), r.get("area_percent", ""), r.get("error", "")] for r in rows]
    return zip_path, csv_path, table


def _available_examples():
    return [example for example in EXAMPLES if (EXAMPLES_DIR / example[0]).is_file()]


def _example_thumbnails():
    """(thumbnail PNG, label) for the gallery, rendered with the library's intensity rule (16-bit too)."""
    folder = OUTPUT_DIR / "examples"
    folder.mkdir(exist_ok=True)
    thumbs = []
    for name, _, label in _available_examples():
        preview = preview_image(EXAMPLES_DIR / name)
        thumb = Image.fromarray(preview)
        thumb.thumbnail((160, 160))
        thumbs.append((str(folder / f"{Path(name).stem}.png"), label))
        thumb.save(thumbs[-1][0], format="PNG")
    return thumbs


# Paste an image anywhere on the page: it becomes the upload (gradio's file box takes drops and picks only).
PASTE_JS = """
() => {
  document.addEventListener("paste", (event) => {
    const files = Array.from((event.clipboardData && event.clipboardData.files) || []).filter(f => f.type.startsWith("image/"));
    const input = document.querySelector("#image-file input[type=file]");
    if (!files.length || !input) return;
    const transfer = new DataTransfer();
    transfer.items.add(files[0]);
    input.files = transfer.files;
    input.dispatchEvent(new Event("change", { bubbles: true }));
    event.preventDefault();
  });
}
"""

CSS = """
#preview img, #overlay img, #heatmap img { width: 100%; height: 100%; object-fit: contain; }
#examples .caption-label { white-space: normal; }
.gradio-container { max-width: 1400px !important; }
"""


def build_demo() -> gr.Blocks:
    network = "online" if registry.online else "offline (no network found at startup)"
    model_choices = [(label, key) for key, label in BENCHMARKS.items()]
    with gr.Blocks(title="GMS: Generative Medical Segmentation", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "# GMS: Generative Medical Segmentation\n"
            "A frozen Stable Diffusion VAE encodes the image, a 1.5 M-parameter latent mapping model turns the "
            "image latent into a mask latent, and the same VAE decodes the mask "
            "([Huo et al., AAAI 2025](https://arxiv.org/abs/2403.18198)). "
            f"Research demo, not for diagnosis. Network: {network}."
        )
        with gr.Tabs():
            with gr.Tab("Segment an image", id="single"):
                with gr.Row(equal_height=False):
                    with gr.Column(min_width=320):
                        model = gr.Dropdown(
                            choices=model_choices,
                            value="busi",
                            label="Model (benchmark it was trained on)",
                            allow_custom_value=True,  # so the API gets our message for an unknown name
                            elem_id="model",
                        )
                        source = gr.Markdown(describe_source("busi"), elem_id="model-source")
                        image_file = gr.File(
                            label="Image: drop, paste or click to choose (PNG, JPEG, BMP, TIFF; 8 or 16 bit)",
                            file_types=FILE_TYPES,
                            height=120,
                            elem_id="image-file",
                        )
                        preview = gr.Image(
                            label="Your image (as the model sees it)", type="filepath", interactive=False,
                            height=300, buttons=["fullscreen"], elem_id="preview",
                        )
                        threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="Threshold (re-thresholds without rerunning)")
                        button = gr.Button("Segment", variant="primary", elem_id="segment-button")
                        examples = _example_thumbnails()
                        if examples:
                            gallery = gr.Gallery(
                                value=examples, label="Examples (click one to segment it)", columns=4, rows=1,
                                height=180, allow_preview=False, object_fit="contain", buttons=[], elem_id="examples",
                            )
                    with gr.Column(min_width=320):
                        with gr.Tabs():
                            with gr.Tab("Overlay", id="overlay-tab"):
                                overlay = gr.Image(label="Mask overlay", type="filepath", interactive=False,
                                                   height=360, elem_id="overlay")
                                opacity = gr.Slider(0.0, 1.0, value=DEFAULT_OPACITY, step=0.05, label="Overlay opacity",
                                                    elem_id="opacity")
                            with gr.Tab("Compare", id="compare-tab", elem_id="compare-tab"):
                                compare = gr.ImageSlider(label="Before / after (drag the handle)", type="filepath",
                                                         interactive=False, max_height=360, elem_id="compare")
                            with gr.Tab("Probability", id="probability-tab", elem_id="probability-tab"):
                                heatmap = gr.Image(label="Probability heat map", type="filepath", interactive=False,
                                                   height=360, buttons=[], elem_id="heatmap")  # no toolbar over the bar
                        table = gr.HTML("<p>Segment an image to see its numbers here.</p>", label="Result",
                                        elem_id="result-table")
                        mask_file = gr.File(label="Mask PNG (input size, values 0/255)", interactive=False,
                                            elem_id="mask-file")
                with gr.Accordion("About this model", open=False, elem_id="about"):
                    about = gr.Markdown(about_model("busi"), elem_id="model-card")
                # The /segment API's outputs that the page shows differently (heat map, table) stay hidden.
                api_overlay = gr.Image(type="filepath", visible=False, format="png")
                api_prob = gr.Image(type="filepath", visible=False, format="png")
                api_stats = gr.JSON(visible=False)
            with gr.Tab("Batch", id="batch"):
                gr.Markdown("Segment many images with one model: a zip of the mask PNGs and a CSV of the numbers.")
                with gr.Row(equal_height=False):
                    with gr.Column(min_width=320):
                        batch_files = gr.File(label="Images (PNG, JPEG, BMP, TIFF)", file_count="multiple",
                                              file_types=FILE_TYPES, elem_id="batch-files")
                        batch_model = gr.Dropdown(choices=model_choices, value="busi", label="Model",
                                                  allow_custom_value=True, elem_id="batch-model")
                        batch_threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="Threshold")
                        batch_button = gr.Button("Segment all", variant="primary", elem_id="batch-button")
                    with gr.Column(min_width=320):
                        batch_zip = gr.File(label="Masks (zip of PNGs)", interactive=False, elem_id="batch-zip")
                        batch_csv = gr.File(label="Stats (CSV)", interactive=False, elem_id="batch-csv")
                        batch_table = gr.Dataframe(headers=["file", "area_px", "area_percent", "error"],
                                                   label="Results", interactive=False, wrap=True, elem_id="batch-table")
        # Cached probabilities (model resolution) + preview for the sliders; per session, expiring.
        result = gr.State(None, time_to_live=STATE_TTL_S)
        page_views = [overlay, compare, mask_file, table, heatmap]

        button.click(
            segment,
            inputs=[image_file, model, threshold],
            outputs=[api_overlay, mask_file, api_prob, api_stats, result],
            api_name="segment",
            api_description="Segment an image: (image file, model name, threshold) -> (overlay, mask PNG, probability map, stats).",
        ).success(
            show_result, inputs=[result, threshold, opacity], outputs=page_views, api_visibility="private"
        ).then(describe_source, inputs=model, outputs=source, api_visibility="private")
        for control in (threshold, opacity):
            control.release(
                update_view, inputs=[result, threshold, opacity], outputs=page_views[:4],
                api_visibility="private", concurrency_id="rethreshold", concurrency_limit=4,
            )
        image_file.change(show_preview, inputs=image_file, outputs=preview, api_visibility="private",
                          concurrency_id="preview", concurrency_limit=4)
        model.change(describe_source, inputs=model, outputs=source, api_visibility="private", queue=False)
        model.change(about_model, inputs=model, outputs=about, api_visibility="private", queue=False)
        demo.load(describe_source, inputs=model, outputs=source, api_visibility="private", queue=False)
        if examples:
            gallery.select(load_example, outputs=[image_file, model], api_visibility="private", queue=False).then(
                segment, inputs=[image_file, model, threshold], outputs=[api_overlay, mask_file, api_prob, api_stats, result],
                api_visibility="private",
            ).success(
                show_result, inputs=[result, threshold, opacity], outputs=page_views, api_visibility="private"
            ).then(describe_source, inputs=model, outputs=source, api_visibility="private")

        batch_button.click(
            segment_batch,
            inputs=[batch_files, batch_model, batch_threshold],
            outputs=[batch_zip, batch_csv, batch_table],
            api_name="segment_batch",
            api_description="Segment several images: (image files, model name, threshold) -> (zip of mask PNGs, "
            "stats CSV, rows [file, area_px, area_percent, error]).",
            concurrency_id="segment_batch",
            concurrency_limit=1,
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
        js=PASTE_JS,
        css=CSS,
    )
