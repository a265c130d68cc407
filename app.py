"""GMS Space: segment a medical image with Generative Medical Segmentation (Huo et al., AAAI 2025).

Run locally with `python app.py` (http://127.0.0.1:7860). The API endpoint `/segment` takes
(image file, model name, threshold) and returns (overlay, mask PNG, probability map, stats);
`/segment_uncertainty` adds posterior samples, test-time augmentation, a seed and the frame of a DICOM/NIfTI
file, and returns the uncertainty map too; `/segment_batch` segments several images.
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


import functools
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image

from gms_hub.dicom import write_dicom_seg
from gms_hub.visualize import label_colors, overlay_labels
from gms_hub.image_io import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, write_mask_png
from gms_hub.medical import MedicalImageError, detect_medical_format, strip_suffix
from gms_hub.processing import resize_probabilities
from space.config import UnknownModelError
from space.registry import ModelRegistry, ModelUnavailableError
from space.results import (
    InputError,
    check_threshold,
    class_stats,
    labels_from_probabilities,
    mask_from_probabilities,
    mask_stats,
    mean_inside,
    probability_image,
    read_upload,
    read_upload_frame,
    uncertainty_from_probabilities,
)
from space.page import (
    DEFAULT_OPACITY,
    ClassRow,
    heatmap_with_colorbar,
    legend_html,
    model_card_markdown,
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
FILE_TYPES = list(IMAGE_EXTENSIONS)  # the batch tab; the single upload also takes DICOM (any name) and NIfTI
MEDICAL_HINT = "PNG, JPEG, BMP, TIFF (8 or 16 bit), DICOM (.dcm or none), NIfTI (.nii, .nii.gz)"
MAX_SAMPLES = 16
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
def _forward(model_name, pixel_values, num_samples=0, tta=False, seed=None):
    """The GPU part: the forward pass(es) -> probabilities (S, S), or (K+1, S, S) for a multi-class model."""
    return registry.mask_probabilities(model_name, pixel_values, num_samples=num_samples, tta=tta, seed=seed)


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
    name = Path(str(path)).name
    stem = strip_suffix(name) if detect_medical_format(path) else Path(name).stem  # scan.nii.gz -> scan
    return stem[:64] or "image"


def _labels(result: dict, threshold: float):
    """The result at the input's size: bool mask (binary) or uint8 label map (multi-class, arg-max)."""
    if result["probs"].ndim == 3:
        return labels_from_probabilities(result["probs"], result["size"])  # (H, W) uint8 0..K
    return mask_from_probabilities(result["probs"], result["size"], threshold)  # (H, W) bool


def _stats(result: dict, labels, threshold: float) -> dict:
    """The stats dict of the API: the `/segment` keys, plus `area_mm2`, `frame`, `classes` and `mean_uncertainty`
    only where they apply (spacing known, several frames, several classes, uncertainty computed)."""
    multiclass = labels.dtype != bool
    foreground = labels > 0 if multiclass else labels  # (H, W) bool
    stats = {"model": result["model"], "source": result["source"], "source_kind": result["source_kind"]}
    if not multiclass:
        stats["threshold"] = threshold
    stats.update(mask_stats(foreground))
    if result.get("pixel_area") is not None:
        stats["area_mm2"] = round(stats["area_px"] * result["pixel_area"], 3)
    if result.get("num_frames", 1) > 1:
        stats["frame"], stats["num_frames"] = result["frame"] + 1, result["num_frames"]
    if multiclass:
        stats["classes"] = class_stats(labels, result["id2label"], result.get("pixel_area"))
    if result.get("uncertainty") is not None:
        stats["num_samples"], stats["tta"] = result["num_samples"], result["tta"]
        stats["mean_uncertainty"] = mean_inside(result["uncertainty"], foreground)
    stats["device"], stats["precision"] = result["device"], result["precision"]
    return stats


def _render(result: dict, threshold: float, opacity: float = DEFAULT_OPACITY):
    """Threshold cached probabilities: (overlay PNG path, mask PNG path, stats, labels at the input's size)."""
    labels = _labels(result, threshold)
    stats = _stats(result, labels, threshold)
    folder = _new_output_folder()
    if labels.dtype == bool:
        overlay = overlay_labels(result["display"], labels, opacity=opacity)
        mask_path = write_mask_png(labels, folder / f"{result['stem']}_mask.png")
    else:  # multi-class: one colour per class; the mask is an index PNG with values 0..K
        overlay = overlay_labels(result["display"], labels, label_colors(len(result["id2label"]) - 1), opacity)
        mask_path = _save_png(labels, folder / f"{result['stem']}_mask.png")
    overlay_path = _save_png(overlay, folder / f"{result['stem']}_overlay.png")
    return overlay_path, mask_path, stats, labels


def _run_model(image_file, key: str, frame: int = 0, num_samples: int = 0, tta: bool = False, seed=None) -> dict:
    """Read, preprocess and segment one upload (one frame of a DICOM/NIfTI file): the cached result the page and
    the API render from. Posterior samples or TTA also compute the uncertainty map."""
    started = time.perf_counter()
    upload = read_upload_frame(image_file, frame=frame, max_pixels=MAX_PIXELS)
    prepared = registry.prepare(key, upload.image, value_range=upload.value_range)
    probs = _forward(key, prepared.pixel_values, num_samples, tta, seed)  # (S, S) or (K+1, S, S)
    loaded = registry.get(key)
    uncertain = num_samples > 0 or tta
    return {
        "probs": probs,
        "uncertainty": uncertainty_from_probabilities(probs) if uncertain else None,  # (S, S) in [0, 1]
        "num_samples": num_samples,
        "tta": tta,
        "id2label": registry.class_names(key),
        "size": prepared.size,
        "display": prepared.display,
        "stem": _stem(image_file),
        "path": str(image_file),
        "kind": upload.kind,
        "frame": upload.frame,
        "num_frames": upload.num_frames,
        "pixel_area": upload.pixel_area_mm2,
        "model": key,
        "source": loaded.source.label,
        "source_location": loaded.source.location,
        "source_kind": loaded.source.kind,
        "device": loaded.device.type,
        "precision": "float16" if loaded.dtype.itemsize == 2 else "float32",
        "seconds": time.perf_counter() - started,
    }


def _check_samples(num_samples, tta) -> tuple:
    try:
        samples = int(num_samples)
    except (TypeError, ValueError):
        raise InputError(f"num_samples must be a whole number in 0..{MAX_SAMPLES}, got {num_samples!r}.") from None
    if samples != float(num_samples) or not 0 <= samples <= MAX_SAMPLES:
        raise InputError(f"num_samples must be a whole number in 0..{MAX_SAMPLES}, got {num_samples!r}. "
                         "Each sample is one more decode.")
    return samples, bool(tta)


def _check_frame(frame) -> int:
    """An API/page frame number (counted from 1, as DICOM counts frames) -> index from 0."""
    try:
        number = int(frame)
    except (TypeError, ValueError):
        raise InputError(f"frame must be a whole number counted from 1, got {frame!r}.") from None
    if number != float(frame) or number < 1:
        raise InputError(f"frame must be a whole number counted from 1, got {frame!r}.")
    return number - 1


def _guarded(fn):
    """Turn what a user can get wrong into a gr.Error with the message; anything else is logged (no upload
    contents, no patient data) and answered without taking the server down."""
    @functools.wraps(fn)  # gradio documents the API from the signature
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (InputError, UnknownModelError, ModelUnavailableError, MedicalImageError) as err:
            raise _user_error(err) from None
        except gr.Error:
            raise
        except Exception as err:  # keep the server up and tell the user what happened
            logger.exception("Segmentation failed")
            raise gr.Error(f"Segmentation failed ({type(err).__name__}: {err}). Try another image or model.") from None

    return wrapper


def _probability_png(result: dict, mask_path: str) -> str:
    """The API's probability map (8-bit, white = 1; for multi-class the foreground probability 1 - background)."""
    probs = result["probs"] if result["probs"].ndim == 2 else 1.0 - result["probs"][0]  # (S, S)
    return _save_png(probability_image(probs, result["display"].shape[:2]),
                     Path(mask_path).with_name(f"{result['stem']}_probability.png"))


@_guarded
def segment(image_file, model_name, threshold):
    """Segment an uploaded image.

    Args:
        image_file (`str`): path of the uploaded PNG, JPEG, BMP or TIFF (gray, RGB, RGBA, 8 or 16 bit), DICOM or
            NIfTI file (its first frame or slice; `/segment_uncertainty` takes a frame number).
        model_name (`str`): one of bus, busi, glas, ham10000, kvasir-instrument, or a name configured in GMS_MODELS.
        threshold (`float`): probability above which a pixel is foreground (0.5 in the paper).

    Returns:
        overlay image, mask PNG path (input size, values 0/255; 0..K for a multi-class model), probability map
        image, stats dict.
    """
    threshold = check_threshold(threshold)
    result = _run_model(image_file, registry.normalize(model_name))
    overlay, mask_path, stats, _ = _render(result, threshold)
    return overlay, mask_path, _probability_png(result, mask_path), stats


@_guarded
def segment_uncertainty(image_file, model_name, threshold, num_samples, tta, seed, frame):
    """Segment one image (or one frame of a DICOM/NIfTI file) with posterior samples and/or TTA.

    Args:
        image_file (`str`): PNG, JPEG, BMP, TIFF, DICOM or NIfTI file.
        model_name (`str`): a model name (as `/segment`).
        threshold (`float`): probability above which a pixel is foreground.
        num_samples (`int`): posterior samples, 0..16 (0: the posterior mean, the paper's inference).
        tta (`bool`): also average over the 8 flips and quarter turns.
        seed (`int`): seed of the posterior noise (the same seed gives the same maps).
        frame (`int`): frame (DICOM) or slice (NIfTI volume), counted from 1; 1 for an ordinary image.

    Returns:
        overlay image, mask PNG path, probability map image, uncertainty map PNG path (16-bit, value / 65535 is
        the normalised predictive entropy at the input's size), stats dict (with `mean_uncertainty` inside the mask).
    """
    threshold = check_threshold(threshold)
    num_samples, tta = _check_samples(num_samples, tta)
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise InputError(f"seed must be a whole number, got {seed!r}.") from None
    key = registry.normalize(model_name)
    result = _run_model(image_file, key, _check_frame(frame), num_samples, tta, seed)
    if result["uncertainty"] is None:  # no samples and no TTA: the entropy of the single pass
        result["uncertainty"] = uncertainty_from_probabilities(result["probs"])
    overlay, mask_path, stats, _ = _render(result, threshold)
    stats.setdefault("mean_uncertainty", None)
    stats["num_samples"], stats["tta"] = num_samples, tta
    full = resize_probabilities(torch.from_numpy(result["uncertainty"]), result["size"]).numpy()  # (H, W) in [0, 1]
    uncertainty_path = Path(mask_path).with_name(f"{result['stem']}_uncertainty.png")
    Image.fromarray(np.rint(full * 65535.0).astype(np.uint16)).save(uncertainty_path, format="PNG")
    return overlay, mask_path, _probability_png(result, mask_path), str(uncertainty_path), stats


def rethreshold(result, threshold, opacity=DEFAULT_OPACITY):
    """Re-threshold the cached probabilities of the last result (no model call): (overlay, mask PNG, stats)."""
    if not result:
        return gr.skip(), gr.skip(), gr.skip()
    try:
        return _render(result, check_threshold(threshold), opacity)[:3]
    except (InputError, ValueError) as err:
        raise _user_error(err) from None


# ---------------------------------------------------------------------------------------------- the page
@_guarded
def segment_page(image_file, model_name, threshold, frame=1, num_samples=0, tta=False):
    """The page's Segment button: the cached result (model-resolution probabilities, preview, uncertainty) that
    the views render from. Posterior noise is seeded (0), so the same settings give the same page."""
    check_threshold(threshold)
    num_samples, tta = _check_samples(num_samples, tta)
    return _run_model(image_file, registry.normalize(model_name), _check_frame(frame), num_samples, tta, seed=0)


def show_preview(image_file):
    """The upload as the model sees it (library intensity rule), shown as soon as a file is chosen, and the
    frame/slice selector, shown only for a DICOM or NIfTI file with several frames."""
    hidden = gr.update(value=1, maximum=2, visible=False)
    if not image_file:
        return None, hidden
    try:
        upload = read_upload_frame(image_file, frame=0, max_pixels=MAX_PIXELS)
        preview = preview_image(image_file, max_pixels=MAX_PIXELS)
    except (InputError, ValueError) as err:
        raise _user_error(err) from None
    path = _save_png(preview, _new_output_folder() / f"{_stem(image_file)}_preview.png")
    if upload.num_frames < 2:
        return path, hidden
    what = "Slice" if upload.kind == "nifti" else "Frame"
    selector = gr.update(value=1, maximum=upload.num_frames, visible=True,
                         label=f"{what} (1 to {upload.num_frames}; segmentation runs on this one)")
    return path, selector


def show_frame(image_file, frame):
    """Move the preview to another frame or slice (numbered from 1)."""
    if not image_file:
        return gr.skip()
    try:
        preview = preview_image(image_file, frame=_check_frame(frame), max_pixels=MAX_PIXELS)
    except (InputError, ValueError) as err:
        raise _user_error(err) from None
    return _save_png(preview, _new_output_folder() / f"{_stem(image_file)}_preview_{int(frame)}.png")


def _dicom_seg(result: dict, labels: np.ndarray, folder: Path):
    """(SEG file update, note update) for the page: a DICOM SEG of the mask for a single-frame DICOM input.

    A SEG of a multi-frame source must hold one segmentation frame per source frame (highdicom places frames by
    the source's frame numbers; without positions, as in cine ultrasound, a subset cannot be referenced), so a
    SEG of the one segmented frame would claim the other frames are empty. The page says so instead.
    """
    hidden = gr.update(value=None, visible=False)
    if result.get("kind") != "dicom":
        return hidden, gr.update(value="", visible=False)
    if result["num_frames"] > 1:
        return hidden, gr.update(visible=True, value=(
            f"No DICOM SEG for one frame of a {result['num_frames']}-frame file: a SEG must cover every frame. "
            "Segment all frames with `python -m gms_hub.predict FILE --output_format dicom-seg`."))
    from gms_hub.image_io import read_medical_image

    names = [result["id2label"][k] for k in sorted(result["id2label"]) if k > 0]
    try:
        seg = write_dicom_seg(np.asarray(labels, dtype=np.uint8)[None], read_medical_image(result["path"]),
                              folder / f"{result['stem']}_seg.dcm", labels=names, model_id=result["source_location"])
    except (MedicalImageError, ValueError) as err:
        return hidden, gr.update(visible=True, value=f"No DICOM SEG: {err}")
    return gr.update(value=str(seg), visible=True), gr.update(value="", visible=False)


def update_view(result, threshold, opacity):
    """Re-render the page's result from cached probabilities: overlay, comparison, mask file, stats table,
    legend, DICOM SEG file and its note."""
    if not result:
        return (gr.skip(),) * 7
    try:
        overlay, mask_path, stats, labels = _render(result, check_threshold(threshold), opacity)
    except (InputError, ValueError) as err:
        raise _user_error(err) from None
    original = _save_png(result["display"], Path(overlay).with_name(f"{result['stem']}_original.png"))
    classes, legend = (), gr.update(value="", visible=False)
    if "classes" in stats:
        colors = [tuple(int(v) for v in c) for c in label_colors(len(stats["classes"]))[1:]]
        classes = [ClassRow(c["name"], c["area_px"], c["area_percent"], color, c.get("area_mm2"))
                   for c, color in zip(stats["classes"], colors)]
        legend = gr.update(value=legend_html([c["name"] for c in stats["classes"]], colors), visible=True)
    frame = (stats["frame"], stats["num_frames"]) if "frame" in stats else None
    table = stats_table_html(stats, model_label=registry.label(stats["model"]), seconds=result.get("seconds"),
                             area_mm2=stats.get("area_mm2"), mean_uncertainty=stats.get("mean_uncertainty"),
                             classes=classes, frame=frame)
    seg_file, seg_note = _dicom_seg(result, labels, Path(overlay).parent)
    return overlay, (original, overlay), mask_path, table, legend, seg_file, seg_note


def _heatmap_png(values, result: dict, name: str, colormap: str) -> str:
    height, width = result["display"].shape[:2]
    scale = max(1.0, HEATMAP_MIN_SIDE / max(height, width))  # small images: keep the bar's text in proportion
    heatmap = heatmap_with_colorbar(values, (round(height * scale), round(width * scale)), colormap, label="")  # (h, w + bar, 4)
    return _save_png(heatmap, _new_output_folder() / f"{result['stem']}_{name}.png")


def show_result(result, threshold, opacity):
    """After a segmentation: the views of `update_view`, the probability heat map (foreground probability) and
    the uncertainty map (when samples or TTA were asked for), each with its colour bar."""
    if not result:
        return (gr.skip(),) * 9
    views = update_view(result, threshold, opacity)
    probs = result["probs"] if result["probs"].ndim == 2 else 1.0 - result["probs"][0]  # (S, S) foreground
    heatmap = _heatmap_png(probs, result, "heatmap", "viridis")
    uncertainty = None
    if result.get("uncertainty") is not None:
        uncertainty = _heatmap_png(result["uncertainty"], result, "uncertainty", "magma")
    return (*views, heatmap, uncertainty)


def describe_source(model_name):
    try:
        return f"**Model:** {registry.describe(model_name)}"
    except UnknownModelError as err:
        return f"**Model:** {err}"


def about_model(model_name):
    """The "About this model" panel: the card of the model that serves (or will serve) `model_name`."""
    try:
        key = registry.normalize(model_name)
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
    header = f"**{registry.label(key)}**, served by {source.label}.\n\n"
    return header + model_card_markdown(source.kind, source.location, source.revision, online=registry.online)


def load_example(evt: gr.SelectData):
    """A click on an example thumbnail: its file and its model."""
    name, key, _ = _available_examples()[evt.index]
    return str(EXAMPLES_DIR / name), key, gr.update(value=1, visible=False)


def segment_batch(image_files, model_name, threshold, progress=gr.Progress()):
    """Segment several images with one model.

    Args:
        image_files (`list[str]`): paths of the uploaded images (PNG, JPEG, BMP or TIFF), at most 50.
        model_name (`str`): one of bus, busi, glas, ham10000, kvasir-instrument, or a name configured in GMS_MODELS.
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
        key = registry.normalize(model_name)
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
            labels = _labels(result, threshold)  # (H, W) bool, or uint8 0..K for a multi-class model
            if labels.dtype == bool:
                masks[mask_name] = write_mask_png(labels, folder / mask_name)
            else:
                masks[mask_name] = _save_png(labels, folder / mask_name)
            row.update(mask=mask_name, source_kind=result["source_kind"], seconds=round(result["seconds"], 3),
                       **mask_stats(labels > 0))
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
    model_choices = [(registry.label(key), key) for key in registry.names()]
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
                            label="Model (benchmark it was trained on, or a configured model)",
                            allow_custom_value=True,  # so the API gets our message for an unknown name
                            elem_id="model",
                        )
                        source = gr.Markdown(describe_source("busi"), elem_id="model-source")
                        # No file_types: DICOM exports often have no extension; the reader decides and explains.
                        image_file = gr.File(
                            label=f"Image: drop, paste or click to choose ({MEDICAL_HINT})",
                            height=120,
                            elem_id="image-file",
                        )
                        preview = gr.Image(
                            label="Your image (as the model sees it)", type="filepath", interactive=False,
                            height=300, buttons=["fullscreen"], elem_id="preview",
                        )
                        # Shown only for a DICOM/NIfTI file with several frames; the maximum is set per upload.
                        frame = gr.Slider(1, 10_000, value=1, step=1, label="Frame", visible=False, elem_id="frame")
                        threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="Threshold (re-thresholds without rerunning)")
                        with gr.Row():
                            num_samples = gr.Slider(
                                0, MAX_SAMPLES, value=0, step=1, elem_id="num-samples", min_width=200,
                                label="Posterior samples (0 = the paper's single pass)",
                                info="Each sample is one more decode.",
                            )
                            tta = gr.Checkbox(False, label="Test-time augmentation (8 flips and turns)", elem_id="tta",
                                              min_width=160)
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
                                legend = gr.HTML("", visible=False, elem_id="legend")  # multi-class models only
                                opacity = gr.Slider(0.0, 1.0, value=DEFAULT_OPACITY, step=0.05, label="Overlay opacity",
                                                    elem_id="opacity")
                            with gr.Tab("Compare", id="compare-tab", elem_id="compare-tab"):
                                compare = gr.ImageSlider(label="Before / after (drag the handle)", type="filepath",
                                                         interactive=False, max_height=360, elem_id="compare")
                            with gr.Tab("Probability", id="probability-tab", elem_id="probability-tab"):
                                heatmap = gr.Image(label="Probability heat map", type="filepath", interactive=False,
                                                   height=360, buttons=[], elem_id="heatmap")  # no toolbar over the bar
                            with gr.Tab("Uncertainty", id="uncertainty-tab", elem_id="uncertainty-tab"):
                                gr.Markdown("Normalised predictive entropy over the passes: 0 where they agree, 1 where "
                                            "they disagree most. Set posterior samples above 0 or tick test-time "
                                            "augmentation, then Segment.")
                                uncertainty = gr.Image(label="Uncertainty map", type="filepath", interactive=False,
                                                       height=360, buttons=[], elem_id="uncertainty")
                        table = gr.HTML("<p>Segment an image to see its numbers here.</p>", label="Result",
                                        elem_id="result-table")
                        mask_file = gr.File(label="Mask PNG (input size, values 0/255; 0..K for several classes)",
                                            interactive=False, elem_id="mask-file")
                        seg_file = gr.File(label="DICOM SEG of the mask", interactive=False, visible=False,
                                           elem_id="seg-file")
                        seg_note = gr.Markdown("", visible=False, elem_id="seg-note")
                with gr.Accordion("About this model", open=False, elem_id="about"):
                    about = gr.Markdown(about_model("busi"), elem_id="model-card")
                # The API endpoints' own outputs and buttons: the page shows results differently (heat map, table),
                # and its button takes the frame and the uncertainty controls, which /segment does not.
                with gr.Group(visible=False):
                    api_overlay = gr.Image(type="filepath", format="png")
                    api_mask = gr.File()
                    api_prob = gr.Image(type="filepath", format="png")
                    api_uncertainty = gr.File()
                    api_stats = gr.JSON()
                    api_seed = gr.Number(0, precision=0)
                    api_frame = gr.Number(1, precision=0)
                    api_segment = gr.Button()
                    api_uncertain = gr.Button()
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
        page_views = [overlay, compare, mask_file, table, legend, seg_file, seg_note, heatmap, uncertainty]
        page_inputs = [image_file, model, threshold, frame, num_samples, tta]

        api_segment.click(
            segment,
            inputs=[image_file, model, threshold],
            outputs=[api_overlay, api_mask, api_prob, api_stats],
            api_name="segment",
            api_description="Segment an image: (image file, model name, threshold) -> (overlay, mask PNG, probability map, stats).",
        )
        api_uncertain.click(
            segment_uncertainty,
            inputs=[image_file, model, threshold, num_samples, tta, api_seed, api_frame],
            outputs=[api_overlay, api_mask, api_prob, api_uncertainty, api_stats],
            api_name="segment_uncertainty",
            api_description="Segment one image or one DICOM/NIfTI frame with posterior samples and test-time "
            "augmentation: (image file, model name, threshold, num_samples 0-16, tta, seed, frame from 1) -> "
            "(overlay, mask PNG, probability map, uncertainty map PNG (16-bit), stats with mean_uncertainty).",
        )
        button.click(segment_page, inputs=page_inputs, outputs=result, api_visibility="private").success(
            show_result, inputs=[result, threshold, opacity], outputs=page_views, api_visibility="private"
        ).then(describe_source, inputs=model, outputs=source, api_visibility="private")
        for control in (threshold, opacity):
            control.release(
                update_view, inputs=[result, threshold, opacity], outputs=page_views[:7],
                api_visibility="private", concurrency_id="rethreshold", concurrency_limit=4,
            )
        image_file.change(show_preview, inputs=image_file, outputs=[preview, frame], api_visibility="private",
                          concurrency_id="preview", concurrency_limit=4)
        frame.release(show_frame, inputs=[image_file, frame], outputs=preview, api_visibility="private",
                      concurrency_id="preview", concurrency_limit=4)
        model.change(describe_source, inputs=model, outputs=source, api_visibility="private", queue=False)
        model.change(about_model, inputs=model, outputs=about, api_visibility="private", queue=False)
        demo.load(describe_source, inputs=model, outputs=source, api_visibility="private", queue=False)
        if examples:
            gallery.select(load_example, outputs=[image_file, model, frame], api_visibility="private",
                           queue=False).then(
                segment_page, inputs=page_inputs, outputs=result, api_visibility="private",
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
