"""Writing the masks of one input file in the format that fits it, with one area row per frame.

`MaskWriter` is the one writer behind `python -m gms_hub.predict` and the Space's batch tab: PNG files per frame
(0/255 for a binary model, class indices 0..K for a multi-class one), or one file for the whole input (a NIfTI
mask with the input's geometry, a DICOM SEG that references the source), written once every frame has come back.
Rows name files and numbers only, never a value from a DICOM header.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
from PIL import Image

from .medical import frame_stem, pixel_area_mm2
from .reading import InputFile
from .safety import atomic_path

logger = logging.getLogger(__name__)

__all__ = [
    "OUTPUT_FORMATS", "MaskWriter", "area_row", "choose_output", "class_names", "frame_number", "write_label_png",
    "write_mask_png",
]

OUTPUT_FORMATS = ("auto", "png", "nifti", "dicom-seg")
"""`auto` picks NIfTI for NIfTI inputs and PNG otherwise; `nifti` and `dicom-seg` need an input of that kind."""

PathLike = Union[str, os.PathLike]


def write_mask_png(mask: np.ndarray, path: PathLike) -> str:
    """Write a bool (H, W) mask as a lossless 8-bit PNG with values 0 and 255; returns the path.

    Example:
        >>> write_mask_png(np.ones((3, 5), bool), "mask.png")
        'mask.png'
    """
    with atomic_path(path) as temporary:  # a kill mid-write leaves no half-written mask under the real name
        Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255).save(temporary, format="PNG")
    return str(path)


def choose_output(requested: str, kind: str, name: str, series: bool = False) -> str:
    """The format a file of `kind` is written in, or a `ValueError` saying why `requested` does not fit it.

    Args:
        requested (`str`): one of `OUTPUT_FORMATS`.
        kind (`str`): the input's kind, `"image"`, `"dicom"` or `"nifti"` (`InputFile.kind`).
        name (`str`): the input's file name, for the message.
        series (`bool`, defaults to `False`): the input is a DICOM series with its geometry
            (`gms_hub.io.series`), which may also be written as NIfTI.

    Returns:
        `str`: `"png"`, `"nifti"` or `"dicom-seg"`.

    Example:
        >>> choose_output("auto", "nifti", "ct.nii.gz"), choose_output("auto", "dicom", "ct.dcm")
        ('nifti', 'png')
    """
    if requested not in OUTPUT_FORMATS:
        raise ValueError(f"Output format {requested!r} is none of {', '.join(OUTPUT_FORMATS)}.")
    if requested == "auto":
        return "nifti" if kind == "nifti" else "png"
    if requested == "nifti" and kind != "nifti" and not series:
        raise ValueError(f"--output_format nifti needs a NIfTI input or a DICOM series with positions; '{name}' is "
                         f"{kind}. Use --output_format auto or png.")
    if requested == "dicom-seg" and kind != "dicom":
        raise ValueError(f"--output_format dicom-seg needs a DICOM input; '{name}' is {kind}. "
                         "Use --output_format auto or png.")
    return requested


def class_names(num_classes: int, id2label: Optional[Mapping[Any, str]] = None) -> List[str]:
    """Names of the foreground classes 1..K in label order (binary: `id2label[1]` or `"foreground"`).

    Example:
        >>> class_names(2, {0: "background", 1: "benign"})
        ['benign', 'class_2']
    """
    labels = {int(k): str(v) for k, v in (id2label or {}).items()}
    return [labels.get(k, "foreground" if num_classes == 1 else f"class_{k}") for k in range(1, num_classes + 1)]


def frame_number(kind: str, num_frames: int, index: int) -> Optional[int]:
    """A frame as users count it: DICOM frames from 1, NIfTI slices by their voxel index; `None` for an image.

    Example:
        >>> frame_number("dicom", 4, 0), frame_number("nifti", 5, 0), frame_number("image", 1, 0)
        (1, 0, None)

    A single-frame DICOM keeps its frame number 1; any other single-frame input has none.
    """
    if num_frames == 1 and kind != "dicom":
        return None
    return index + 1 if kind == "dicom" else index


def write_label_png(labels: np.ndarray, path: PathLike, num_classes: int = 1) -> str:
    """Write a mask PNG: values 0/255 for a binary model (`write_mask_png`), class indices 0..K otherwise.

    Args:
        labels (`np.ndarray`): (H, W) bool or integer labels.
        path (`str` or `os.PathLike`): the `.png` to write.
        num_classes (`int`, defaults to 1): foreground classes of the model.

    Returns:
        `str`: the path written.

    Example:
        >>> write_label_png(np.eye(4, dtype=np.uint8) * 2, "labels.png", num_classes=2)
        'labels.png'
    """
    labels = np.asarray(labels)
    if num_classes == 1:
        return write_mask_png(labels.astype(bool), path)
    with atomic_path(path) as temporary:
        Image.fromarray(labels.astype(np.uint8), mode="L").save(temporary, format="PNG")  # index PNG, values 0..K
    return str(path)


def area_row(
    labels: np.ndarray, num_classes: int, names: Sequence[str], pixel_area: Optional[float] = None
) -> Dict[str, Any]:
    """Areas of one frame's label map: `area_px`, `area_mm2` (empty without spacing), and per class for K > 1.

    Args:
        labels (`np.ndarray`): (H, W) labels, 0 = background.
        num_classes (`int`): foreground classes K.
        names (`Sequence[str]`): the K class names (`class_names`), for the `area_px_<name>` columns.
        pixel_area (`float`, *optional*): mm² of one pixel (`gms_hub.io.medical.pixel_area_mm2`).

    Returns:
        `dict`: `area_px`, `area_mm2`, and for K > 1 `area_px_<name>`, `area_mm2_<name>` per class.

    Example:
        >>> area_row(np.array([[0, 1], [2, 2]]), 2, ["a", "b"], 0.5)["area_mm2_b"]
        1.0
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=num_classes + 1)
    row: Dict[str, Any] = {"area_px": int(counts[1:].sum())}
    row["area_mm2"] = "" if pixel_area is None else round(row["area_px"] * pixel_area, 4)
    if num_classes > 1:
        for k, name in enumerate(names, start=1):
            row[f"area_px_{name}"] = int(counts[k])
            row[f"area_mm2_{name}"] = "" if pixel_area is None else round(int(counts[k]) * pixel_area, 4)
    return row


class MaskWriter:
    """The masks of one input file: PNGs as frames come back, or one NIfTI / DICOM SEG file at `close()`.

    Args:
        opened (`InputFile`): the input, from `gms_hub.io.reading.read_input`.
        output_dir (`str` or `os.PathLike`): where the masks go.
        stem (`str`): the file's output name (`ct` for `ct.nii.gz`); frames of a PNG output add `_frame<n>`
            (DICOM) or `_slice<n>` (NIfTI).
        output_format (`str`, defaults to `"auto"`): one of `OUTPUT_FORMATS` (see `choose_output`).
        num_classes (`int`, defaults to 1): foreground classes of the model.
        names (`Sequence[str]`, *optional*): class names (`class_names`); the default names them generically.
        model_id (`str`, defaults to `""`): the model's Hub id or path, recorded in a DICOM SEG.
        png_suffix (`str`, defaults to `""`): added to PNG names (`"_mask"` gives `us_mask.png`).
        claim (`Callable[[str], Path]`, *optional*): turns an output's file name into the path to write, raising
            when that is unsafe (`gms_hub.io.safety.OutputManifest.claim`); default: the name in `output_dir`.

    Example:
        >>> scan = read_input("ct.nii.gz")
        >>> writer = MaskWriter(scan, "out/", "ct")
        >>> rows = [writer.add(i, mask) for i, mask in enumerate(model.segment(list(scan.frames), value_range=scan.value_range))]
        >>> writer.close()
        PosixPath('out/ct_mask.nii.gz')
    """

    def __init__(
        self,
        opened: InputFile,
        output_dir: PathLike,
        stem: str,
        *,
        output_format: str = "auto",
        num_classes: int = 1,
        names: Optional[Sequence[str]] = None,
        model_id: str = "",
        png_suffix: str = "",
        claim: Optional[Callable[[str], Path]] = None,
    ):
        self.opened, self.output_dir, self.stem = opened, Path(output_dir), stem
        medical = opened.medical
        series = medical is not None and medical.datasets is not None and medical.affine is not None
        self.output = choose_output(output_format, opened.kind, opened.path.name, series=series)
        self.num_classes = int(num_classes)
        self.names = list(names) if names is not None else class_names(self.num_classes)
        self.model_id, self.png_suffix = str(model_id), png_suffix
        self.claim = claim if claim is not None else (lambda name: self.output_dir / name)
        self.pixel_area = pixel_area_mm2(opened.spacing)
        self.volume: Optional[np.ndarray] = None  # (F, H, W) uint8, held for a file-level output only

    def frame_stem(self, index: int) -> str:
        """The output name of frame `index` (counted from 0) of a PNG output."""
        return frame_stem(self.stem, self.opened.kind, index, self.opened.num_frames)

    @property
    def file_name(self) -> Optional[str]:
        """The name of the file-level output (`<stem>_mask.nii.gz`, `<stem>_seg.dcm`); `None` for PNGs."""
        return {"nifti": f"{self.stem}_mask.nii.gz", "dicom-seg": f"{self.stem}_seg.dcm"}.get(self.output)

    def png_name(self, index: int) -> str:
        return f"{self.frame_stem(index)}{self.png_suffix}.png"

    def add(self, index: int, labels: np.ndarray) -> Dict[str, Any]:
        """Take frame `index`'s labels (H, W) (bool, or 0..K): write its PNG now or hold it for `close()`.

        Returns:
            `dict`: the frame's row: `frame` (`frame_number`, empty for an image), `mask_file`, and `area_row`.
        """
        labels = np.asarray(labels).astype(np.uint8)  # (H, W): 0/1 binary, 0..K multi-class
        if self.output == "png":
            mask_file = self.png_name(index)
            write_label_png(labels, self.claim(mask_file), self.num_classes)
        else:
            if self.volume is None:
                self.volume = np.zeros((self.opened.num_frames, *labels.shape), dtype=np.uint8)  # (F, H, W)
            self.volume[index] = labels
            mask_file = self.file_name
        number = frame_number(self.opened.kind, self.opened.num_frames, index)
        row = {"frame": "" if number is None else number, "mask_file": mask_file}
        row.update(area_row(labels, self.num_classes, self.names, self.pixel_area))
        return row

    def close(self) -> Optional[Path]:
        """Write the file-level output (NIfTI mask or DICOM SEG) from the frames added; `None` for PNGs.

        Raises:
            `ValueError` (a `MedicalImageError` for a source a SEG cannot reference) or `OSError`; the frames stay
            held, so `write_pngs()` can still save them.
        """
        if self.output == "png" or self.volume is None:
            return None
        path = self.claim(self.file_name)
        if self.output == "nifti" and self.opened.kind == "dicom":
            from .series import write_series_nifti

            written = write_series_nifti(self.volume, self.opened.medical, path)
        elif self.output == "nifti":
            from .nifti import write_nifti_mask

            written = write_nifti_mask(self.volume, self.opened.medical, path)
        else:
            from .dicom import write_dicom_seg

            written = write_dicom_seg(self.volume, self.opened.medical, path, labels=self.names, model_id=self.model_id)
        self.volume = None
        return written

    def write_pngs(self) -> List[str]:
        """Write the held frames as PNGs instead (when the file-level output cannot be written): their names."""
        if self.volume is None:
            return []
        names = []
        for index, labels in enumerate(self.volume):
            names.append(self.png_name(index))
            write_label_png(labels, self.claim(names[-1]), self.num_classes)
        self.volume = None
        return names
