"""Volumes on the page: a NIfTI volume or a DICOM series (several files uploaded together, or a zip of them) is
segmented slice by slice into one result, shown one slice at a time with a slice slider, measured in mL per class
(`gms_hub.inference.volumes.volume_row`) and offered as files (the NIfTI mask with the scan's affine, or one DICOM
SEG for a series, plus `volumes.csv`, written by the library's `MaskWriter` and `write_volumes_csv`).

The slices go through the same preparation and forward pass as a single image (`Segmenter`), with the model's
context slices (`gms_hub.data.context.context_input`: a 2.5D model sees slices k-1, k, k+1). The probabilities
(model resolution) and the slices' previews are kept as `.npy` files in the result's own folder of the Space's
results folder, pruned with it (`space.retention`); moving the slice slider or the threshold reads them, the
model does not run again. Posterior samples and test-time augmentation segment the chosen slice only (each
sample is one more decode per slice). A multi-frame DICOM file keeps the frame selector of a single file.
Nothing shown here comes from a DICOM header except geometry (pixel and slice spacing).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import gradio as gr
import numpy as np

from gms_hub.data.context import context_input
from gms_hub.inference.volumes import volume_row, write_volumes_csv
from gms_hub.io.mask_files import MaskWriter, class_names
from gms_hub.io.medical import MedicalImageError
from gms_hub.io.reading import InputFile
from gms_hub.io.series import group_dicom_series, open_series

from .handlers import check_frame, guarded, save_png, user_error
from .page import frame_preview
from .results import MAX_VOLUME_VOXELS, InputError, check_threshold, open_upload, result_labels, upload_frame
from .surface import write_surface_obj
from .uploads import extract_series_zip, upload_paths
from .views import ResultViews

logger = logging.getLogger(__name__)

__all__ = ["VolumeViews"]

class VolumeViews:
    """The page's Segment button, result views and preview, extended to volumes; single images and single frames
    go to `ResultViews` (and so the 2D path is unchanged).

    Args:
        views (`ResultViews`): the single-image views (its segmenter reads, segments and renders).
    """

    def __init__(self, views: ResultViews):
        self.views = views
        self.segmenter = views.segmenter

    # ------------------------------------------------------------------ opening
    def open_volume(self, value, folder: Optional[Path] = None) -> Optional[InputFile]:
        """The upload as a volume (`InputFile` of a DICOM series or a 3D NIfTI), or `None` for a single image or a
        single DICOM file (those keep the single-file path).

        Raises:
            `InputError`: several files that are not one DICOM series, a bad zip, a series whose slices do not
            make one volume, or a volume over `GMS_MAX_VOLUME_VOXELS`.
        """
        paths = upload_paths(value)
        if not paths:
            return None
        if len(paths) == 1 and paths[0].lower().endswith(".zip"):
            folder = folder if folder is not None else self.segmenter.new_output_folder()
            return self._open_series(extract_series_zip(paths[0], folder / "upload"), Path(paths[0]).name)
        if len(paths) > 1:
            return self._open_series([Path(p) for p in paths], f"{len(paths)} files")
        if not paths[0].lower().endswith((".nii", ".nii.gz")):
            return None
        opened = open_upload(paths[0], max_pixels=self.segmenter.max_pixels, kind="nifti")
        return opened if opened.medical is not None and opened.medical.is_volume else None

    def _open_series(self, files: Sequence[Path], what: str) -> InputFile:
        series, others = group_dicom_series(files)
        if len(series) != 1 or others:
            found = f"{len(series)} DICOM series" + (f" and {len(others)} other file(s)" if others else "")
            raise InputError(f"The upload ({what}) holds {found}; several files are read as the slices of one DICOM "
                             "series. Upload one series (its files together, or a zip of them), or segment separate "
                             "files in the Batch tab.")
        try:
            ordered = series[0].order()
        except MedicalImageError as err:
            raise InputError(str(err)) from None
        rows, cols = int(ordered.datasets[0].Rows), int(ordered.datasets[0].Columns)
        voxels = len(ordered) * rows * cols
        if voxels > MAX_VOLUME_VOXELS:
            raise InputError(f"The series holds {len(ordered)} slices of {cols}x{rows} = {voxels / 1e6:.0f} million "
                             f"voxels; the limit here is {MAX_VOLUME_VOXELS / 1e6:g} million. Segment it on your "
                             "machine: `python -m gms_hub.predict --input FOLDER --output_dir masks/`.")
        try:
            return open_series(ordered, max_pixels=self.segmenter.max_pixels)
        except MedicalImageError as err:
            raise InputError(str(err)) from None

    def _context(self, key: str) -> int:
        return int(getattr(self.segmenter.registry.get(key).model, "context_slices", 0))

    # ------------------------------------------------------------------ the page's two upload boxes
    @staticmethod
    def page_upload(image_file, series_files):
        """What the page segments: the single-file box's file, else the series box's files. The two never both
        count: an upload into one box empties the other (`take_series`, `show_upload`).

        Example:
            >>> VolumeViews.page_upload(None, ["b.dcm", "a.dcm"]), VolumeViews.page_upload("x.png", ["a.dcm"])
            (['b.dcm', 'a.dcm'], 'x.png')
        """
        return image_file if upload_paths(image_file) else (upload_paths(series_files) or None)

    def take_series(self, series_files):
        """Files dropped into the series box: the single-file box is emptied and the preview shows the series
        (slice 1, and the slice selector). Returns (single-file box, preview, selector)."""
        preview, selector = self.show_preview(upload_paths(series_files) or None)
        return gr.update(value=None), preview, selector

    def show_upload(self, image_file, series_files):
        """The single-file box changed (upload, clear, example) or the series box was cleared: the preview of what
        the page now segments; a file in the single box empties the series box. Returns (preview, selector,
        series box)."""
        replace = bool(upload_paths(image_file)) and bool(upload_paths(series_files))
        preview, selector = self.show_preview(self.page_upload(image_file, series_files))
        return preview, selector, gr.update(value=None) if replace else gr.skip()

    def show_upload_frame(self, image_file, series_files, frame):
        """The preview's selector moved: `show_frame` of what the page segments."""
        return self.show_frame(self.page_upload(image_file, series_files), frame)

    def segment_upload(self, image_file, series_files, model_name, threshold, frame=1, num_samples=0, tta=False):
        """The page's Segment button with its two upload boxes: `segment_page` of what the page segments."""
        return self.segment_page(self.page_upload(image_file, series_files), model_name, threshold, frame,
                                 num_samples, tta)

    # ------------------------------------------------------------------ preview
    def show_preview(self, value):
        """The upload as the model sees it (slice 1 of a volume) and the slice selector, for one file or several."""
        paths = upload_paths(value)
        if len(paths) <= 1 and not (paths and paths[0].lower().endswith(".zip")):
            return self.preview_single(paths[0] if paths else None)
        try:
            opened = self.open_volume(paths)
            preview = frame_preview(upload_frame(opened, 0))
        except (InputError, ValueError) as err:
            raise user_error(err) from None
        path = save_png(preview, self.segmenter.new_output_folder() / f"{opened.name}_preview.png")
        return path, self._selector(opened.num_frames)

    def preview_single(self, path):
        from .preview import UploadPreview

        image, selector = UploadPreview(self.segmenter).show_preview(path)
        if isinstance(selector, dict) and selector.get("visible") and str(path).lower().endswith((".nii", ".nii.gz")):
            selector = self._selector(selector["maximum"])
        return image, selector

    @staticmethod
    def _selector(num_frames: int):
        return gr.update(value=1, maximum=num_frames, visible=True,
                         label=f"Slice (1 to {num_frames}; Segment runs on every slice, on this one only with "
                               "posterior samples or TTA)")

    def show_frame(self, value, frame):
        """Move the preview to another slice (numbered from 1) of one file or of a series."""
        paths = upload_paths(value)
        if len(paths) <= 1 and not (paths and paths[0].lower().endswith(".zip")):
            from .preview import UploadPreview

            return UploadPreview(self.segmenter).show_frame(paths[0] if paths else None, frame)
        try:
            opened = self.open_volume(paths)
            preview = frame_preview(upload_frame(opened, check_frame(frame)))
        except (InputError, ValueError) as err:
            raise user_error(err) from None
        return save_png(preview, self.segmenter.new_output_folder() / f"{opened.name}_preview_{int(frame)}.png")

    # ------------------------------------------------------------------ segmenting
    @guarded
    def segment_page(self, image_file, model_name, threshold, frame=1, num_samples=0, tta=False):
        """The page's Segment button: a volume gives every slice's probabilities (one result the slice slider and
        the threshold render from), anything else the single-frame result of `ResultViews.segment_page`."""
        segmenter = self.segmenter
        paths = upload_paths(image_file)
        check_threshold(threshold)
        num_samples, tta = segmenter.check_samples(num_samples, tta)
        if not paths:
            return self.views.segment_page(None, model_name, threshold, frame, num_samples, tta)
        maybe_volume = len(paths) > 1 or paths[0].lower().endswith((".zip", ".nii", ".nii.gz"))
        folder = segmenter.new_output_folder() if maybe_volume else None
        opened = self.open_volume(paths, folder)
        if opened is None:
            return self.views.segment_page(paths[0], model_name, threshold, frame, num_samples, tta)
        key = segmenter.registry.normalize(model_name)
        if num_samples > 0 or tta:  # uncertainty: the chosen slice only, with its neighbours for a 2.5D model
            return self.segment_one_slice(opened, key, check_frame(frame), num_samples, tta)
        return self.segment_volume(opened, key, folder)

    def segment_one_slice(self, opened: InputFile, key: str, index: int, num_samples: int, tta: bool) -> dict:
        context = self._context(key)
        upload = upload_frame(context_input(opened, context), index)
        result = self.segmenter.segment_frame(upload, key, opened.path, num_samples, tta, seed=0)
        if context:  # the preview shows the slice itself, not its neighbours in the colour channels
            result["display"] = np.repeat(result["display"][..., context:context + 1], 3, axis=-1)
        result["stem"] = opened.name
        return result

    def segment_volume(self, opened: InputFile, key: str, folder: Path) -> dict:
        """Every slice through the Space's preparation and forward pass (with context slices for a 2.5D model):
        probabilities and previews saved in `folder`, the result dict pointing at them."""
        segmenter, registry = self.segmenter, self.segmenter.registry
        started = time.perf_counter()
        context = self._context(key)
        frames = context_input(opened, context).frames
        probs, display, size = [], [], None
        for batch in frames.batches(8):
            for frame in batch:
                prepared = registry.prepare(key, frame, value_range=opened.value_range)
                probs.append(np.asarray(segmenter.forward(key, prepared.pixel_values, 0, False, 0), np.float32))
                shown = prepared.display  # (h, w, 3) uint8; a 2.5D input holds slices k-1, k, k+1
                display.append(shown[..., context:context + 1] if context or _is_grey(shown) else shown)
                size = prepared.size
        probs_path, display_path = folder / "probabilities.npy", folder / "display.npy"
        np.save(probs_path, np.stack(probs))  # (F, S, S) or (F, K+1, S, S)
        np.save(display_path, np.stack(display))  # (F, h, w, 1 or 3)
        loaded = registry.get(key)
        medical = opened.medical
        return {
            "volume": True, "probs_path": str(probs_path), "display_path": str(display_path), "folder": str(folder),
            "size": size, "num_frames": opened.num_frames, "stem": opened.name, "kind": opened.kind,
            "series": medical.datasets is not None, "id2label": registry.class_names(key),
            "spacing": opened.spacing, "slice_spacing": medical.slice_spacing,
            "voxel_mm3": medical.voxel_volume_mm3, "pixel_area": _pixel_area(opened.spacing),
            "model": key, "source": loaded.source.label, "source_location": loaded.source.location,
            "source_kind": loaded.source.kind, "device": loaded.device.type,
            "precision": "float16" if loaded.dtype.itemsize == 2 else "float32",
            "uncertainty": None, "seconds": time.perf_counter() - started, "_opened": opened,
        }

    # ------------------------------------------------------------------ rendering
    def slice_result(self, result: dict, index: int) -> dict:
        """Slice `index` of a volume result as a single-frame result (the dict `Segmenter.render` takes)."""
        try:
            probs = np.load(result["probs_path"], mmap_mode="r")
            display = np.load(result["display_path"], mmap_mode="r")
        except OSError:
            raise InputError("This result has expired (results are kept for a limited time). Segment again.") from None
        if not 0 <= index < len(probs):
            raise InputError(f"The volume has {len(probs)} slices; slice {index + 1} does not exist.")
        shown = np.asarray(display[index])
        return {**result, "probs": np.array(probs[index]), "frame": index,
                "display": np.repeat(shown, 3, axis=-1) if shown.shape[-1] == 1 else shown,
                "stem": f"{result['stem']}_slice{index + 1}"}

    def volume_labels(self, result: dict, threshold: float) -> np.ndarray:
        """(F, H, W) uint8 labels of every slice at `threshold` (arg-max for a multi-class model)."""
        probs = np.load(result["probs_path"], mmap_mode="r")
        return np.stack([np.asarray(result_labels({"probs": np.array(p), "size": result["size"]}, threshold),
                                    dtype=np.uint8) for p in probs])

    def write_volume_files(self, result: dict, labels: np.ndarray, folder: Path) -> Tuple[List[str], dict]:
        """The volume's files (NIfTI mask or DICOM SEG, and `volumes.csv`) in `folder`, and the `volume_row`."""
        opened = result.get("_opened")
        if opened is None:
            raise InputError("This result has expired (results are kept for a limited time). Segment again.")
        id2label = result["id2label"]
        num_classes = len(id2label) - 1
        names = class_names(num_classes, id2label)
        writer = MaskWriter(opened, folder, result["stem"], output_format="dicom-seg" if result["series"] else "auto",
                            num_classes=num_classes, names=names, model_id=result["source_location"])
        for index, slice_labels in enumerate(labels):
            writer.add(index, slice_labels)
        files = [str(writer.close())]
        row = volume_row(labels, names, result["voxel_mm3"])
        input_name = result["stem"] if result["series"] else opened.path.name
        files.append(str(write_volumes_csv([{"input": input_name, **row, "status": "ok"}], folder / "volumes.csv",
                                           names)))
        return files, row

    def volume_table(self, result: dict, row: dict, threshold: float) -> str:
        from .page import stats_table_html

        id2label = result["id2label"]
        names = class_names(len(id2label) - 1, id2label)
        voxel = result["voxel_mm3"]
        lines = []
        for name in names:
            ml = row[f"volume_ml_{name}"]
            components = row[f"components_{name}"]
            amount = f"{ml:.3f} mL" if voxel is not None else "mL unknown (no slice spacing)"
            lines.append((f"Volume: {name}", f"{amount}, {components} connected component(s)"))
        spacing = result.get("spacing")
        if spacing is not None and result.get("slice_spacing"):
            lines.append(("Voxel size", f"{spacing[1]:.3g} × {spacing[0]:.3g} × {result['slice_spacing']:.3g} mm"))
        height, width = result["size"]
        stats = {"model": result["model"], "source": result["source"], "source_kind": result["source_kind"],
                 "height": height, "width": width, "device": result["device"], "precision": result["precision"]}
        if len(names) == 1:
            stats["threshold"] = threshold
        return stats_table_html(stats, model_label=self.segmenter.registry.label(result["model"]),
                                seconds=result.get("seconds"), volume=[("Slices", str(result["num_frames"])), *lines])

    def slice_views(self, result: dict, threshold: float, opacity: float, index: int):
        """(overlay, (original, overlay), mask PNG) of slice `index`, and the slice's result."""
        one = self.slice_result(result, index)
        overlay, mask_path, _, _ = self.segmenter.render(one, threshold, opacity)
        original = save_png(one["display"], Path(overlay).with_name(f"{one['stem']}_original.png"))
        return overlay, (original, overlay), mask_path, one

    def show_slice(self, result, threshold, opacity, slice_number):
        """The slice slider: slice `slice_number`'s overlay, comparison, mask PNG and probability heat map, from
        the saved probabilities (no model call)."""
        if not result or not result.get("volume"):
            return (gr.skip(),) * 4
        try:
            overlay, compare, mask_path, one = self.slice_views(result, check_threshold(threshold), opacity,
                                                                check_frame(slice_number))
        except (InputError, ValueError) as err:
            raise user_error(err) from None
        return overlay, compare, mask_path, self._heatmap(one)

    def _heatmap(self, one: dict) -> str:
        probs = one["probs"] if one["probs"].ndim == 2 else 1.0 - one["probs"][0]
        return self.views.heatmap_png(probs, one, "heatmap", "viridis")

    def surface_view(self, result: dict, labels: np.ndarray, folder: Path):
        """The 3D view's update: the classes' surfaces (`space.surface`) in mm, or hidden when nothing is segmented."""
        spacing, slice_spacing = result.get("spacing"), result.get("slice_spacing")
        voxel = (slice_spacing, *spacing) if spacing is not None and slice_spacing else None
        names = class_names(len(result["id2label"]) - 1, result["id2label"])
        path = write_surface_obj(labels, names, folder / f"{result['stem']}_surface.obj", spacing=voxel)
        if path is None:
            return gr.update(value=None, visible="hidden")  # "hidden", not False: see app.py's surface
        unit = "mm" if voxel is not None else "voxels (the file gives no voxel size)"
        return gr.update(value=str(path), visible=True, label=f"3D surface of the mask ({unit}; drag to turn)")

    def update_page(self, result, threshold, opacity, slice_number=1):
        """Threshold or opacity moved: `ResultViews.update_view`'s seven views, then the volume files and the 3D
        surface."""
        if not result or not result.get("volume"):
            return (*self.views.update_view(result, threshold, opacity), gr.skip(), gr.skip())
        try:
            threshold = check_threshold(threshold)
            overlay, compare, mask_path, _ = self.slice_views(result, threshold, opacity, check_frame(slice_number))
            labels = self.volume_labels(result, threshold)
            files, row = self.write_volume_files(result, labels, Path(overlay).parent)
            surface = self.surface_view(result, labels, Path(overlay).parent)
        except (InputError, ValueError) as err:
            raise user_error(err) from None
        hidden = gr.update(value=None, visible=False)
        return (overlay, compare, mask_path, self.volume_table(result, row, threshold), gr.update(visible=False),
                hidden, gr.update(value="", visible=False), gr.update(value=files, visible=True), surface)

    def show_page(self, result, threshold, opacity, slice_number=1):
        """After Segment: `ResultViews.show_result`'s views (overlay, ..., heat map, uncertainty), the volume
        files, the slice slider (shown for a volume, at its middle slice) and the 3D surface (volumes only)."""
        hidden_slider = gr.update(visible=False, value=1)
        if not result:
            return (gr.skip(),) * 12
        if not result.get("volume"):
            hidden = gr.update(value=None, visible=False)
            return (*self.views.show_result(result, threshold, opacity), hidden, hidden_slider,
                    gr.update(value=None, visible="hidden"))
        middle = result["num_frames"] // 2 + 1
        views = self.update_page(result, threshold, opacity, middle)
        heatmap = self._heatmap(self.slice_result(result, middle - 1))
        slider = gr.update(visible=True, value=middle, maximum=result["num_frames"],
                           label=f"Slice of the segmented volume (1 to {result['num_frames']})")
        return (*views[:7], heatmap, None, views[7], slider, views[8])


def _is_grey(display: np.ndarray) -> bool:
    return bool((display == display[..., :1]).all())


def _pixel_area(spacing) -> Optional[float]:
    from gms_hub.io.medical import pixel_area_mm2

    return pixel_area_mm2(spacing)
