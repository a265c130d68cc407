"""Results per volume: mL per class, 3D connected components, the optional largest-component postprocess, and
`segment_volume`, which streams a volume through a model (with its context slices when it is 2.5D).

A volume is any input with more than one slice (`MedicalImage.is_volume`): a DICOM series, a multi-frame DICOM
file, a 3D NIfTI. `volume_row` measures its label volume (slices, rows, columns); `python -m gms_hub.predict`
writes one row per volume to `volumes.csv` beside `predictions.csv`. Components are counted with
`scipy.ndimage.label` in 3D with face connectivity (6 neighbours: voxels touching only at an edge or a corner
are separate components).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from scipy import ndimage

from ..io.safety import write_csv

logger = logging.getLogger(__name__)

__all__ = ["POSTPROCESS", "VOLUME_COLUMNS", "keep_largest_component", "segment_volume", "volume_columns",
           "volume_row", "write_volumes_csv"]

POSTPROCESS = ("none", "largest_component")
"""`--postprocess` choices: `none` (default, the model's masks as they are) or `largest_component` (per class,
keep only the largest 3D connected component of the volume)."""

VOLUME_COLUMNS = ["input", "slices", "voxel_mm3"]
"""The leading columns of `volumes.csv`; per class `<name>` follow `volume_ml_<name>`, `components_<name>` and
`largest_share_<name>` (see `volume_columns`), then `status`."""


def volume_columns(names: Sequence[str]) -> List[str]:
    """The columns of `volumes.csv` for classes named `names`.

    Example:
        >>> volume_columns(["liver"])
        ['input', 'slices', 'voxel_mm3', 'volume_ml_liver', 'components_liver', 'largest_share_liver', 'status']
    """
    per_class = [f"{what}_{name}" for name in names for what in ("volume_ml", "components", "largest_share")]
    return VOLUME_COLUMNS + per_class + ["status"]


def _components(binary: np.ndarray):
    labelled, count = ndimage.label(binary)  # default structure: face connectivity in 3D
    sizes = np.bincount(labelled.ravel())[1:] if count else np.zeros(0, dtype=np.int64)
    return labelled, count, sizes


def volume_row(volume: np.ndarray, names: Sequence[str], voxel_mm3: Optional[float]) -> Dict[str, Any]:
    """The measurements of one label volume: mL, number of 3D components and the largest one's share, per class.

    Args:
        volume (`np.ndarray`): (slices, rows, columns) integer labels, 0 = background, class k = value k.
        names (`Sequence[str]`): the names of classes 1..K.
        voxel_mm3 (`float`, *optional*): mm³ of one voxel (`MedicalImage.voxel_volume_mm3`); without it the mL
            columns stay empty.

    Returns:
        `dict`: `slices`, `voxel_mm3`, and per class `volume_ml_<name>` (rounded to 6 decimals: 0.001 mm³),
        `components_<name>`, `largest_share_<name>` (largest component's voxels / the class's voxels, empty
        for an absent class).

    Example:
        >>> volume_row(np.ones((2, 10, 10), np.uint8), ["organ"], 1.0)["volume_ml_organ"]
        0.2
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume_row needs a (slices, rows, columns) label volume, got shape {volume.shape}.")
    row: Dict[str, Any] = {"slices": int(volume.shape[0]), "voxel_mm3": "" if voxel_mm3 is None else round(voxel_mm3, 6)}
    for k, name in enumerate(names, start=1):
        binary = volume == k
        voxels = int(binary.sum())
        _, count, sizes = _components(binary)
        row[f"volume_ml_{name}"] = "" if voxel_mm3 is None else round(voxels * voxel_mm3 / 1000.0, 6)
        row[f"components_{name}"] = int(count)
        row[f"largest_share_{name}"] = round(float(sizes.max()) / voxels, 4) if voxels else ""
    return row


def keep_largest_component(volume: np.ndarray, num_classes: int) -> np.ndarray:
    """Per class, keep only the largest 3D connected component; the rest of the class becomes background.

    Ties keep the component `scipy.ndimage.label` numbers first. Off by default in predict
    (`--postprocess largest_component`): it removes true separate lesions as readily as false positives.

    Args:
        volume (`np.ndarray`): (slices, rows, columns) labels 0..num_classes.
        num_classes (`int`): foreground classes K.

    Returns:
        `np.ndarray`: a new label volume of the same shape and dtype.

    Example:
        >>> keep_largest_component(np.array([[[1, 0, 1, 1]]], np.uint8), 1)
        array([[[0, 0, 1, 1]]], dtype=uint8)
    """
    volume = np.asarray(volume)
    out = np.zeros_like(volume)
    for k in range(1, int(num_classes) + 1):
        labelled, count, sizes = _components(volume == k)
        if count:
            out[labelled == int(np.argmax(sizes)) + 1] = k
    return out


def write_volumes_csv(rows: List[Dict[str, Any]], path: Path, names: Sequence[str]) -> Path:
    """Write `volumes.csv`: one row per volume (`volume_row` plus `input` and `status`).

    Example:
        >>> write_volumes_csv([{"input": "ct.nii.gz", **volume_row(mask, ["organ"], 1.0), "status": "ok"}],
        ...                   Path("out/volumes.csv"), ["organ"])
        PosixPath('out/volumes.csv')
    """
    write_csv(path, rows, volume_columns(names))  # atomic, spreadsheet-safe cells
    logger.info("Wrote %d volume row(s) to %s", len(rows), path)
    return Path(path)


def segment_volume(model, scan, *, batch_size: int = 8, window=None, slice_axis: int = -1, **segment_kwargs) -> np.ndarray:
    """Segment every frame of a volume, streamed in batches, with the model's context slices (2.5D) if it has any.

    Args:
        model: a `GMS` (or anything with its `segment` and `context_slices`).
        scan (`str`, `os.PathLike` or `InputFile`): a NIfTI, a DICOM file, or an input opened with `read_input`
            or `gms_hub.io.series.open_series`.
        batch_size (`int`, defaults to 8): frames per forward pass.
        window, slice_axis: passed to `read_input` when `scan` is a path.
        segment_kwargs: passed to `model.segment` (e.g. `threshold`).

    Returns:
        `np.ndarray` (frames, H, W) uint8 labels, frame k of the scan at index k.

    Example:
        >>> labels = segment_volume(model, "ct.nii.gz")
        >>> volume_row(labels, ["liver"], read_input("ct.nii.gz").medical.voxel_volume_mm3)
    """
    from ..data.context import context_input
    from ..io.reading import InputFile, read_input

    opened = scan if isinstance(scan, InputFile) else read_input(scan, window=window, slice_axis=slice_axis)
    opened = context_input(opened, int(getattr(model, "context_slices", 0)))
    masks = []
    for frames in opened.batches(batch_size):
        result = model.segment(frames, value_range=opened.value_range, batch_size=batch_size, **segment_kwargs)
        masks.extend(np.asarray(m).astype(np.uint8) for m in result)
    return np.stack(masks)  # (F, H, W)
