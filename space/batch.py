"""The Space's batch tab and `/segment_batch`: many files in, a zip of masks and a CSV of the numbers out.

Images give a PNG mask each; a NIfTI file gives one NIfTI mask with its geometry and a DICOM file one DICOM SEG
that references it (PNGs per frame, with a note, where a SEG cannot reference the source), all written by the
library's `gms_hub.io.mask_files.MaskWriter`, as `python -m gms_hub.predict` writes them. The CSV has one row per
frame (DICOM frames from 1, NIfTI slices by their voxel index, as the predict CLI counts them) and one row for a
file that could not be segmented, with the reason. A 2.5D model (`context_slices = 1`) sees each slice of a volume
with its neighbours as the predict CLI gives them (`gms_hub.data.context.context_input`); a single image is its
own neighbour.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple, Union

import gradio as gr

from gms_hub.data.context import context_input
from gms_hub.io.mask_files import MaskWriter, class_names
from gms_hub.io.safety import atomic_path, describe_error, output_stems, write_csv

from .config import UnknownModelError
from .handlers import Segmenter, upload_kind, user_error
from .registry import ModelUnavailableError
from .results import InputError, check_threshold, mask_stats, open_upload, result_labels, upload_frame

logger = logging.getLogger(__name__)

__all__ = ["BATCH_COLUMNS", "BatchHandler", "write_batch_outputs"]

BATCH_COLUMNS = (
    "file", "frame", "mask", "model", "source_kind", "threshold", "area_px", "area_percent", "area_mm2", "height",
    "width", "seconds", "note", "error",
)
"""Columns of the batch CSV, one row per frame (`error` is empty when it was segmented); a multi-class model adds
`area_px_<class>` and `area_mm2_<class>` after `area_mm2`."""

TABLE_COLUMNS = ("file", "frame", "area_px", "area_percent", "area_mm2", "error")
"""Columns of the page's results table (and of the rows `/segment_batch` returns)."""

PathLike = Union[str, os.PathLike]


def write_batch_outputs(rows: Sequence[Dict], masks: Mapping[str, PathLike], folder: PathLike) -> Tuple[str, str]:
    """Write the batch results: a zip of the masks and a CSV of the rows.

    Args:
        rows (`Sequence[dict]`): one dict per frame (or failed file) with the keys of `BATCH_COLUMNS` (missing =
            empty); other keys (per-class areas) become columns after `area_mm2`, in order of appearance.
        masks (`Mapping[str, PathLike]`): name inside the zip -> mask file written for it.
        folder (`str` or `os.PathLike`): where `masks.zip` and `stats.csv` are written.

    Returns:
        `tuple(str, str)`: paths of the zip and the CSV.

    Example:
        >>> write_batch_outputs([{"file": "a.png", "area_px": 3}], {"a_mask.png": "/tmp/a_mask.png"}, "/tmp/out")
        ('/tmp/out/masks.zip', '/tmp/out/stats.csv')
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    zip_path, csv_path = folder / "masks.zip", folder / "stats.csv"
    # PNGs and .nii.gz are already compressed; storing them keeps the zip fast to write.
    with atomic_path(zip_path) as temporary, zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, mask_path in masks.items():
            archive.write(mask_path, arcname=name)
    extra = list(dict.fromkeys(key for row in rows for key in row if key not in BATCH_COLUMNS))
    at = BATCH_COLUMNS.index("area_mm2") + 1
    columns = [*BATCH_COLUMNS[:at], *extra, *BATCH_COLUMNS[at:]]
    write_csv(csv_path, rows, columns)  # cells starting with = + - @ are escaped for spreadsheets
    return str(zip_path), str(csv_path)


class BatchHandler:
    """`segment_batch`, bound to the segmenter the single-image endpoints use (registry, forward pass, results
    folder) and the limits.

    Args:
        segmenter (`Segmenter`): reads, segments and renders one frame.
        max_files (`int`, defaults to 50): most files per batch.
        max_frames (`int`, defaults to 1000): most frames (or slices) of one file.
    """

    def __init__(self, segmenter: Segmenter, max_files: int = 50, max_frames: int = 1000):
        self.segmenter, self.max_files, self.max_frames = segmenter, int(max_files), int(max_frames)

    def segment_batch(self, image_files, model_name, threshold, progress=gr.Progress()):
        """Segment several images, DICOM files and NIfTI volumes (every frame and slice) with one model.

        Args:
            image_files (`list[str]`): paths of the uploaded files (PNG, JPEG, BMP, TIFF, DICOM, NIfTI), at most 50.
            model_name (`str`): one of bus, busi, glas, ham10000, kvasir-instrument, or a name configured in GMS_MODELS.
            threshold (`float`): probability above which a pixel is foreground.

        Returns:
            zip of the masks (`<name>_mask.png` per image, `<name>_mask.nii.gz` per NIfTI, `<name>_seg.dcm` per
            DICOM), CSV of the stats (one row per frame; a file that cannot be read gets its message in `error`),
            and rows [file, frame, area_px, area_percent, area_mm2, error].
        """
        files = [f for f in (image_files or []) if f]
        if not files:
            raise gr.Error("No images were uploaded. Choose one or more image, DICOM or NIfTI files.",
                           print_exception=False)
        if len(files) > self.max_files:
            raise gr.Error(f"{len(files)} files were uploaded; the limit is {self.max_files} per batch. Split them.",
                           print_exception=False)
        registry = self.segmenter.registry
        try:
            threshold = check_threshold(threshold)
            key = registry.normalize(model_name)
            registry.get(key)  # fail once, before the loop, when no model loads
        except (InputError, UnknownModelError, ModelUnavailableError) as err:
            raise user_error(err) from None
        folder = self.segmenter.new_output_folder()
        rows: List[Dict] = []
        masks: Dict[str, str] = {}
        stems = output_stems(files, max_length=64)  # the predict CLI's collision-free naming rule
        for index, (image_file, stem) in enumerate(zip(files, stems)):
            name = Path(str(image_file)).name
            kind = upload_kind(image_file)  # decided once here, carried to the mask format
            base = {"file": name, "model": key, "threshold": threshold}
            try:
                file_rows, file_masks = self._segment_file(image_file, kind, key, threshold, stem, folder, base,
                                                           lambda done: progress((index + done) / len(files),
                                                                                 desc=f"Segmenting {name}"))
            except InputError as err:
                rows.append({**base, "error": str(err)})
                continue
            except Exception as err:  # one bad file must not lose the others; its text may quote a header value
                logger.error("Batch segmentation of %s failed (%s)", name, describe_error(err))
                rows.append({**base, "error": f"'{name}' could not be segmented ({describe_error(err)})."})
                continue
            rows.extend(file_rows)
            masks.update(file_masks)
        progress(1.0, desc="Writing the zip")
        zip_path, csv_path = write_batch_outputs(rows, masks, folder)
        table = [[row.get(column, "") for column in TABLE_COLUMNS] for row in rows]
        return zip_path, csv_path, table

    def _segment_file(self, image_file, kind, key, threshold, stem, folder, base, report):
        """Every frame of one upload of `kind` (`upload_kind`): (its CSV rows, {name in the zip: mask file})."""
        segmenter, registry = self.segmenter, self.segmenter.registry
        opened = open_upload(image_file, max_pixels=segmenter.max_pixels, kind=kind)  # not sniffed again
        try:  # a 2.5D model: slice k of a volume with k-1 and k+1 as channels, as the predict CLI reads it
            opened = context_input(opened, int(getattr(registry.get(key).model, "context_slices", 0)))
        except ValueError as err:  # a colour volume cannot carry context
            raise InputError(str(err)) from None
        if opened.num_frames > self.max_frames:
            raise InputError(f"'{opened.path.name}' has {opened.num_frames} frames; a batch segments at most "
                             f"{self.max_frames} per file. Use `python -m gms_hub.predict` for larger volumes.")
        id2label = registry.class_names(key)
        num_classes = len(id2label) - 1
        writer = MaskWriter(
            opened, folder, stem, output_format="dicom-seg" if kind == "dicom" else "auto",
            num_classes=num_classes, names=class_names(num_classes, id2label),
            model_id=registry.get(key).source.location, png_suffix="_mask",
        )
        rows = []
        for frame in range(opened.num_frames):
            report(frame / opened.num_frames)
            result = segmenter.segment_frame(upload_frame(opened, frame), key, image_file)
            labels = result_labels(result, threshold)  # (H, W) bool, or uint8 0..K for a multi-class model
            row = writer.add(frame, labels)
            row["mask"] = row.pop("mask_file")
            area = mask_stats(labels > 0)
            rows.append({**base, **row, "source_kind": result["source_kind"],
                         "area_percent": area["area_percent"], "height": area["height"], "width": area["width"],
                         "seconds": round(result["seconds"], 3)})
        if writer.file_name is None:
            return rows, {row["mask"]: str(folder / row["mask"]) for row in rows}
        try:
            written = writer.close()
        except (ValueError, OSError) as err:
            if writer.output != "dicom-seg":
                raise
            names = writer.write_pngs()  # the masks still go out, as PNGs, with the reason
            for row, png in zip(rows, names):
                row.update(mask=png, note=f"PNG instead of a DICOM SEG: {err}")
            return rows, {png: str(folder / png) for png in names}
        return rows, {written.name: str(written)}
