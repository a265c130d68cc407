"""The page's result: the Segment button's cached result, and the views rendered from it (overlay, before/after,
mask file, stats table, legend, DICOM SEG, probability heat map, uncertainty map), re-rendered without the model
when the threshold or the opacity moves."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np

from gms_hub.io.dicom import write_dicom_seg
from gms_hub.io.medical import MedicalImageError
from gms_hub.io.visualize import label_colors

from .handlers import Segmenter, check_frame, guarded, save_png, user_error
from .page import DEFAULT_OPACITY, ClassRow, heatmap_with_colorbar, legend_html, stats_table_html
from .results import InputError, check_threshold

__all__ = ["ResultViews", "dicom_seg_views"]


class ResultViews:
    """The page's Segment button and the views of its result.

    Args:
        segmenter (`Segmenter`): reads, segments and renders one upload.
        heatmap_min_side (`int`, defaults to 384): heat maps are drawn at least this large, so the bar's text reads.
    """

    def __init__(self, segmenter: Segmenter, heatmap_min_side: int = 384):
        self.segmenter, self.heatmap_min_side = segmenter, heatmap_min_side

    @guarded
    def segment_page(self, image_file, model_name, threshold, frame=1, num_samples=0, tta=False):
        """The page's Segment button: the cached result (model-resolution probabilities, preview, uncertainty) that
        the views render from. Posterior noise is seeded (0), so the same settings give the same page."""
        segmenter = self.segmenter
        check_threshold(threshold)
        num_samples, tta = segmenter.check_samples(num_samples, tta)
        return segmenter.run_model(image_file, segmenter.registry.normalize(model_name), check_frame(frame),
                                   num_samples, tta, seed=0)

    def rethreshold(self, result, threshold, opacity=DEFAULT_OPACITY):
        """Re-threshold the cached probabilities of the last result (no model call): (overlay, mask PNG, stats)."""
        if not result:
            return gr.skip(), gr.skip(), gr.skip()
        try:
            return self.segmenter.render(result, check_threshold(threshold), opacity)[:3]
        except (InputError, ValueError) as err:
            raise user_error(err) from None

    def update_view(self, result, threshold, opacity):
        """Re-render the page's result from cached probabilities: overlay, comparison, mask file, stats table,
        legend, DICOM SEG file and its note."""
        if not result:
            return (gr.skip(),) * 7
        try:
            overlay, mask_path, stats, labels = self.segmenter.render(result, check_threshold(threshold), opacity)
        except (InputError, ValueError) as err:
            raise user_error(err) from None
        original = save_png(result["display"], Path(overlay).with_name(f"{result['stem']}_original.png"))
        legend, table = self.legend_and_table(result, stats)
        seg_file, seg_note = dicom_seg_views(result, labels, Path(overlay).parent)
        return overlay, (original, overlay), mask_path, table, legend, seg_file, seg_note

    def legend_and_table(self, result: dict, stats: dict):
        """(legend update, stats table HTML): the legend shows only for a multi-class model."""
        classes, legend = (), gr.update(value="", visible=False)
        if "classes" in stats:
            colors = [tuple(int(v) for v in c) for c in label_colors(len(stats["classes"]))[1:]]
            classes = [ClassRow(c["name"], c["area_px"], c["area_percent"], color, c.get("area_mm2"))
                       for c, color in zip(stats["classes"], colors)]
            legend = gr.update(value=legend_html([c["name"] for c in stats["classes"]], colors), visible=True)
        frame = (stats["frame"], stats["num_frames"]) if "frame" in stats else None
        table = stats_table_html(stats, model_label=self.segmenter.registry.label(stats["model"]),
                                 seconds=result.get("seconds"), area_mm2=stats.get("area_mm2"),
                                 mean_uncertainty=stats.get("mean_uncertainty"), classes=classes, frame=frame)
        return legend, table

    def heatmap_png(self, values, result: dict, name: str, colormap: str) -> str:
        height, width = result["display"].shape[:2]
        scale = max(1.0, self.heatmap_min_side / max(height, width))  # small images: keep the bar's text in proportion
        heatmap = heatmap_with_colorbar(values, (round(height * scale), round(width * scale)), colormap, label="")  # (h, w + bar, 4)
        return save_png(heatmap, self.segmenter.new_output_folder() / f"{result['stem']}_{name}.png")

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


def dicom_seg_views(result: dict, labels: np.ndarray, folder: Path):
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
            "`python -m gms_hub.predict --input FILE --output_dir OUT --output_format dicom-seg`."))
    from gms_hub.io.reading import read_medical_image

    names = [result["id2label"][k] for k in sorted(result["id2label"]) if k > 0]
    try:
        seg = write_dicom_seg(np.asarray(labels, dtype=np.uint8)[None], read_medical_image(result["path"]),
                              folder / f"{result['stem']}_seg.dcm", labels=names, model_id=result["source_location"])
    except (MedicalImageError, ValueError) as err:
        return hidden, gr.update(visible=True, value=f"No DICOM SEG: {err}")
    return gr.update(value=str(seg), visible=True), gr.update(value="", visible=False)
