"""What the Space's events and API endpoints do: segment, re-threshold, preview, render the page's result.

`SpaceHandlers` holds what the handlers share (the model registry, the GPU forward pass, the results folder and
the limits); `app.py` builds one and wires its methods to the page's components and to the API. User mistakes
become `gr.Error` with the message; anything else is logged (no upload contents, no patient data) and answered
without taking the server down. The batch tab's handler lives in `space.batch`.
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import gradio as gr
import numpy as np
import torch
from PIL import Image

from gms_hub.io.dicom import write_dicom_seg
from gms_hub.io.mask_files import write_label_png
from gms_hub.io.medical import MedicalImageError, strip_suffix
from gms_hub.io.reading import detect_medical_format
from gms_hub.models.processing import resize_probabilities
from gms_hub.io.visualize import label_colors, overlay_labels

from .config import UnknownModelError
from .page import DEFAULT_OPACITY, ClassRow, heatmap_with_colorbar, legend_html, model_card_markdown, preview_image, stats_table_html
from .registry import ModelRegistry, ModelUnavailableError
from .results import (
    InputError,
    UploadFrame,
    check_threshold,
    probability_image,
    read_upload_frame,
    result_labels,
    result_stats,
    uncertainty_from_probabilities,
)

logger = logging.getLogger(__name__)

__all__ = ["SpaceHandlers", "guarded", "user_error"]

USER_ERRORS = (InputError, UnknownModelError, ModelUnavailableError, MedicalImageError)
"""What a user can get wrong (a bad upload, setting or model name): answered with its message."""


def user_error(err: Exception) -> gr.Error:
    return gr.Error(str(err), print_exception=False)


def guarded(fn):
    """Turn what a user can get wrong into a gr.Error with the message; anything else is logged (no upload
    contents, no patient data) and answered without taking the server down."""
    @functools.wraps(fn)  # gradio documents the API from the signature
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            raise user_error(err) from None
        except gr.Error:
            raise
        except Exception as err:  # keep the server up and tell the user what happened
            logger.exception("Segmentation failed")
            raise gr.Error(f"Segmentation failed ({type(err).__name__}: {err}). Try another image or model.") from None

    return wrapper


def save_png(array: np.ndarray, path: Path) -> str:
    # Images go out as PNG files we write ourselves: lossless, and gradio then copies them into its cache
    # atomically (its in-memory image path rewrites a shared cache file, which races under concurrent
    # identical results).
    Image.fromarray(array).save(path, format="PNG")
    return str(path)


def upload_stem(path) -> str:
    """The output name of an upload: `scan.nii.gz` -> `scan`, `us.png` -> `us`, at most 64 characters."""
    name = Path(str(path)).name
    stem = strip_suffix(name) if detect_medical_format(path) else Path(name).stem
    return stem[:64] or "image"


def check_frame(frame) -> int:
    """An API/page frame number (counted from 1, as DICOM counts frames) -> index from 0."""
    try:
        number = int(frame)
    except (TypeError, ValueError):
        raise InputError(f"frame must be a whole number counted from 1, got {frame!r}.") from None
    if number != float(frame) or number < 1:
        raise InputError(f"frame must be a whole number counted from 1, got {frame!r}.")
    return number - 1


class SpaceHandlers:
    """The Space's event handlers and API functions, bound to one registry and one results folder.

    Args:
        registry (`ModelRegistry`): which model serves each name.
        forward (`Callable`): `(model_name, pixel_values, num_samples, tta, seed) -> probabilities`, the GPU part
            (decorated for ZeroGPU in `app.py`).
        output_dir (`Path`): where results are written, one folder per result, pruned after `output_max_age_s`.
        max_pixels (`int`): largest accepted frame (rows x columns).
        max_samples (`int`, defaults to 16): most posterior samples per request.
        examples (`Sequence[tuple]`, defaults to `()`): (file, model key, label) of the gallery's examples.
        examples_dir (`Path`, *optional*): their folder.
        heatmap_min_side (`int`, defaults to 384): heat maps are drawn at least this large, so the bar's text reads.
        output_max_age_s (`float`, defaults to 3600): age at which result folders are deleted.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        forward: Callable,
        output_dir: Path,
        max_pixels: int,
        *,
        max_samples: int = 16,
        examples: Sequence[Tuple[str, str, str]] = (),
        examples_dir: Optional[Path] = None,
        heatmap_min_side: int = 384,
        output_max_age_s: float = 3600,
    ):
        self.registry, self.forward, self.output_dir = registry, forward, Path(output_dir)
        self.max_pixels, self.max_samples = int(max_pixels), int(max_samples)
        self.examples, self.examples_dir = list(examples), examples_dir
        self.heatmap_min_side, self.output_max_age_s = heatmap_min_side, output_max_age_s

    # ------------------------------------------------------------------------------------------ shared steps
    def new_output_folder(self) -> Path:
        """A fresh folder for one result (download names stay readable); results older than the limit go."""
        now = time.time()
        for old in self.output_dir.iterdir():
            if now - old.stat().st_mtime > self.output_max_age_s:
                shutil.rmtree(old, ignore_errors=True)
        folder = self.output_dir / uuid.uuid4().hex
        folder.mkdir()
        return folder

    def check_samples(self, num_samples, tta) -> Tuple[int, bool]:
        try:
            samples = int(num_samples)
        except (TypeError, ValueError):
            raise InputError(f"num_samples must be a whole number in 0..{self.max_samples}, got {num_samples!r}.") from None
        if samples != float(num_samples) or not 0 <= samples <= self.max_samples:
            raise InputError(f"num_samples must be a whole number in 0..{self.max_samples}, got {num_samples!r}. "
                             "Each sample is one more decode.")
        return samples, bool(tta)

    def segment_frame(self, upload: UploadFrame, key: str, image_file, num_samples: int = 0, tta: bool = False,
                      seed=None) -> dict:
        """Preprocess and segment one frame: the cached result the page and the API render from. Posterior samples
        or TTA also compute the uncertainty map."""
        started = time.perf_counter()
        prepared = self.registry.prepare(key, upload.image, value_range=upload.value_range)
        probs = self.forward(key, prepared.pixel_values, num_samples, tta, seed)  # (S, S) or (K+1, S, S)
        loaded = self.registry.get(key)
        uncertain = num_samples > 0 or tta
        return {
            "probs": probs,
            "uncertainty": uncertainty_from_probabilities(probs) if uncertain else None,  # (S, S) in [0, 1]
            "num_samples": num_samples,
            "tta": tta,
            "id2label": self.registry.class_names(key),
            "size": prepared.size,
            "display": prepared.display,
            "stem": upload_stem(image_file),
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

    def run_model(self, image_file, key: str, frame: int = 0, num_samples: int = 0, tta: bool = False, seed=None) -> dict:
        """Read one upload (one frame of a DICOM/NIfTI file) and segment it (`segment_frame`)."""
        upload = read_upload_frame(image_file, frame=frame, max_pixels=self.max_pixels)
        return self.segment_frame(upload, key, image_file, num_samples, tta, seed)

    def render(self, result: dict, threshold: float, opacity: float = DEFAULT_OPACITY):
        """Threshold cached probabilities: (overlay PNG path, mask PNG path, stats, labels at the input's size)."""
        labels = result_labels(result, threshold)
        stats = result_stats(result, labels, threshold)
        folder = self.new_output_folder()
        num_classes = 1 if labels.dtype == bool else len(result["id2label"]) - 1
        # multi-class: one colour per class; the mask is an index PNG with values 0..K
        overlay = overlay_labels(result["display"], labels, label_colors(num_classes), opacity)
        mask_path = write_label_png(labels, folder / f"{result['stem']}_mask.png", num_classes)
        overlay_path = save_png(overlay, folder / f"{result['stem']}_overlay.png")
        return overlay_path, mask_path, stats, labels

    def probability_png(self, result: dict, mask_path: str) -> str:
        """The API's probability map (8-bit, white = 1; for multi-class the foreground probability 1 - background)."""
        probs = result["probs"] if result["probs"].ndim == 2 else 1.0 - result["probs"][0]  # (S, S)
        return save_png(probability_image(probs, result["display"].shape[:2]),
                        Path(mask_path).with_name(f"{result['stem']}_probability.png"))

    # ------------------------------------------------------------------------------------------ the API
    @guarded
    def segment(self, image_file, model_name, threshold):
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
        result = self.run_model(image_file, self.registry.normalize(model_name))
        overlay, mask_path, stats, _ = self.render(result, threshold)
        return overlay, mask_path, self.probability_png(result, mask_path), stats

    @guarded
    def segment_uncertainty(self, image_file, model_name, threshold, num_samples, tta, seed, frame):
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
            the normalised predictive entropy at the input's size), stats dict (with `mean_uncertainty` inside the
            mask).
        """
        threshold = check_threshold(threshold)
        num_samples, tta = self.check_samples(num_samples, tta)
        try:
            seed = int(seed)
        except (TypeError, ValueError):
            raise InputError(f"seed must be a whole number, got {seed!r}.") from None
        key = self.registry.normalize(model_name)
        result = self.run_model(image_file, key, check_frame(frame), num_samples, tta, seed)
        if result["uncertainty"] is None:  # no samples and no TTA: the entropy of the single pass
            result["uncertainty"] = uncertainty_from_probabilities(result["probs"])
        overlay, mask_path, stats, _ = self.render(result, threshold)
        stats.setdefault("mean_uncertainty", None)
        stats["num_samples"], stats["tta"] = num_samples, tta
        full = resize_probabilities(torch.from_numpy(result["uncertainty"]), result["size"]).numpy()  # (H, W) in [0, 1]
        uncertainty_path = Path(mask_path).with_name(f"{result['stem']}_uncertainty.png")
        Image.fromarray(np.rint(full * 65535.0).astype(np.uint16)).save(uncertainty_path, format="PNG")
        return overlay, mask_path, self.probability_png(result, mask_path), str(uncertainty_path), stats

    def rethreshold(self, result, threshold, opacity=DEFAULT_OPACITY):
        """Re-threshold the cached probabilities of the last result (no model call): (overlay, mask PNG, stats)."""
        if not result:
            return gr.skip(), gr.skip(), gr.skip()
        try:
            return self.render(result, check_threshold(threshold), opacity)[:3]
        except (InputError, ValueError) as err:
            raise user_error(err) from None

    # ------------------------------------------------------------------------------------------ the page
    @guarded
    def segment_page(self, image_file, model_name, threshold, frame=1, num_samples=0, tta=False):
        """The page's Segment button: the cached result (model-resolution probabilities, preview, uncertainty) that
        the views render from. Posterior noise is seeded (0), so the same settings give the same page."""
        check_threshold(threshold)
        num_samples, tta = self.check_samples(num_samples, tta)
        return self.run_model(image_file, self.registry.normalize(model_name), check_frame(frame), num_samples, tta,
                              seed=0)

    def show_preview(self, image_file):
        """The upload as the model sees it (library intensity rule), shown as soon as a file is chosen, and the
        frame/slice selector, shown only for a DICOM or NIfTI file with several frames."""
        hidden = gr.update(value=1, maximum=2, visible=False)
        if not image_file:
            return None, hidden
        try:
            upload = read_upload_frame(image_file, frame=0, max_pixels=self.max_pixels)
            preview = preview_image(image_file, max_pixels=self.max_pixels)
        except (InputError, ValueError) as err:
            raise user_error(err) from None
        path = save_png(preview, self.new_output_folder() / f"{upload_stem(image_file)}_preview.png")
        if upload.num_frames < 2:
            return path, hidden
        what = "Slice" if upload.kind == "nifti" else "Frame"
        selector = gr.update(value=1, maximum=upload.num_frames, visible=True,
                             label=f"{what} (1 to {upload.num_frames}; segmentation runs on this one)")
        return path, selector

    def show_frame(self, image_file, frame):
        """Move the preview to another frame or slice (numbered from 1)."""
        if not image_file:
            return gr.skip()
        try:
            preview = preview_image(image_file, frame=check_frame(frame), max_pixels=self.max_pixels)
        except (InputError, ValueError) as err:
            raise user_error(err) from None
        return save_png(preview, self.new_output_folder() / f"{upload_stem(image_file)}_preview_{int(frame)}.png")

    def dicom_seg(self, result: dict, labels: np.ndarray, folder: Path):
        """(SEG file update, note update) for the page: a DICOM SEG of the mask for a single-frame DICOM input.

        A SEG of a multi-frame source must hold one segmentation frame per source frame (highdicom places frames
        by the source's frame numbers; without positions, as in cine ultrasound, a subset cannot be referenced),
        so a SEG of the one segmented frame would claim the other frames are empty. The page says so instead.
        """
        hidden = gr.update(value=None, visible=False)
        if result.get("kind") != "dicom":
            return hidden, gr.update(value="", visible=False)
        if result["num_frames"] > 1:
            return hidden, gr.update(visible=True, value=(
                f"No DICOM SEG for one frame of a {result['num_frames']}-frame file: a SEG must cover every frame. "
                "Segment every frame in the Batch tab (a SEG where the file allows one) or with "
                "`python -m gms_hub.predict FILE --output_format dicom-seg`."))
        from gms_hub.io.reading import read_medical_image

        names = [result["id2label"][k] for k in sorted(result["id2label"]) if k > 0]
        try:
            seg = write_dicom_seg(np.asarray(labels, dtype=np.uint8)[None], read_medical_image(result["path"]),
                                  folder / f"{result['stem']}_seg.dcm", labels=names, model_id=result["source_location"])
        except (MedicalImageError, ValueError) as err:
            return hidden, gr.update(visible=True, value=f"No DICOM SEG: {err}")
        return gr.update(value=str(seg), visible=True), gr.update(value="", visible=False)

    def update_view(self, result, threshold, opacity):
        """Re-render the page's result from cached probabilities: overlay, comparison, mask file, stats table,
        legend, DICOM SEG file and its note."""
        if not result:
            return (gr.skip(),) * 7
        try:
            overlay, mask_path, stats, labels = self.render(result, check_threshold(threshold), opacity)
        except (InputError, ValueError) as err:
            raise user_error(err) from None
        original = save_png(result["display"], Path(overlay).with_name(f"{result['stem']}_original.png"))
        classes, legend = (), gr.update(value="", visible=False)
        if "classes" in stats:
            colors = [tuple(int(v) for v in c) for c in label_colors(len(stats["classes"]))[1:]]
            classes = [ClassRow(c["name"], c["area_px"], c["area_percent"], color, c.get("area_mm2"))
                       for c, color in zip(stats["classes"], colors)]
            legend = gr.update(value=legend_html([c["name"] for c in stats["classes"]], colors), visible=True)
        frame = (stats["frame"], stats["num_frames"]) if "frame" in stats else None
        table = stats_table_html(stats, model_label=self.registry.label(stats["model"]), seconds=result.get("seconds"),
                                 area_mm2=stats.get("area_mm2"), mean_uncertainty=stats.get("mean_uncertainty"),
                                 classes=classes, frame=frame)
        seg_file, seg_note = self.dicom_seg(result, labels, Path(overlay).parent)
        return overlay, (original, overlay), mask_path, table, legend, seg_file, seg_note

    def heatmap_png(self, values, result: dict, name: str, colormap: str) -> str:
        height, width = result["display"].shape[:2]
        scale = max(1.0, self.heatmap_min_side / max(height, width))  # small images: keep the bar's text in proportion
        heatmap = heatmap_with_colorbar(values, (round(height * scale), round(width * scale)), colormap, label="")  # (h, w + bar, 4)
        return save_png(heatmap, self.new_output_folder() / f"{result['stem']}_{name}.png")

    def show_result(self, result, threshold, opacity):
        """After a segmentation: the views of `update_view`, the probability heat map (foreground probability) and
        the uncertainty map (when samples or TTA were asked for), each with its colour bar."""
        if not result:
            return (gr.skip(),) * 9
        views = self.update_view(result, threshold, opacity)
        probs = result["probs"] if result["probs"].ndim == 2 else 1.0 - result["probs"][0]  # (S, S) foreground
        heatmap = self.heatmap_png(probs, result, "heatmap", "viridis")
        uncertainty = None
        if result.get("uncertainty") is not None:
            uncertainty = self.heatmap_png(result["uncertainty"], result, "uncertainty", "magma")
        return (*views, heatmap, uncertainty)

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
        return header + model_card_markdown(source.kind, source.location, source.revision, online=self.registry.online)

    def available_examples(self):
        return [e for e in self.examples if self.examples_dir is not None and (self.examples_dir / e[0]).is_file()]

    def example_thumbnails(self):
        """(thumbnail PNG, label) for the gallery, rendered with the library's intensity rule (16-bit too)."""
        folder = self.output_dir / "examples"
        folder.mkdir(exist_ok=True)
        thumbs = []
        for name, _, label in self.available_examples():
            thumb = Image.fromarray(preview_image(self.examples_dir / name))
            thumb.thumbnail((160, 160))
            thumbs.append((str(folder / f"{Path(name).stem}.png"), label))
            thumb.save(thumbs[-1][0], format="PNG")
        return thumbs

    def load_example(self, evt: gr.SelectData):
        """A click on an example thumbnail: its file and its model."""
        name, key, _ = self.available_examples()[evt.index]
        return str(self.examples_dir / name), key, gr.update(value=1, visible=False)
