"""A DICOM series is one volume: single-frame files grouped by Series Instance UID, ordered along the slice normal.

A CT or MR study usually arrives as a folder of single-frame DICOM files, one per slice. `group_dicom_series`
reads only their headers (`stop_before_pixels`) and gathers the files of each series; `order_series` (or
`SeriesFiles.order()`) puts them in
spatial order and checks their geometry; `read_series` opens the result as one `MedicalImage` whose frames are the
slices in that order, with the voxel-to-world affine (RAS, as NIfTI has it) and the headers a DICOM SEG references.

Ordering rule: each slice's Image Position (Patient) is projected on the slice normal, the cross product of the
row and column direction cosines of Image Orientation (Patient); slices are sorted by that distance. Only when no
file of the series carries position and orientation (some secondary captures) are they sorted by Instance Number,
and the slice spacing is then unknown (no mL). Geometry that does not make one volume (frames of different
sizes, pixel spacings or orientations, two slices at one position, a gap where slices are missing) is an error
that names the files; messages never carry a header value other than geometry.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from .medical import FrameSequence, MedicalImage, MedicalImageError, PathLike, check_masks

logger = logging.getLogger(__name__)

__all__ = [
    "DicomSeries", "SeriesFiles", "group_dicom_series", "lps_to_ras", "open_series", "order_series", "read_series",
    "write_series_nifti",
]

ORIENTATION_TOLERANCE = 1e-4  # direction cosines that differ by less are the same orientation
GAP_TOLERANCE = 0.1  # a step more than 10 % off the smallest one is a gap (missing slices) or uneven spacing


@dataclass
class DicomSeries:
    """The single-frame files of one DICOM series, in spatial order.

    Attributes:
        paths (`list[Path]`): the files, first slice first.
        datasets (`list[pydicom.Dataset]`): their headers, without pixel data (patient data: never log them).
        ordered_by (`str`): `"position"` (Image Position (Patient) along the slice normal) or `"instance_number"`
            (the documented fallback for files without position and orientation).
        slice_spacing (`float` or `None`): distance in mm between consecutive slices, `None` when unknown.
        affine (`np.ndarray` or `None`): (4, 4) voxel-to-world affine in RAS (NIfTI's convention) for the array
            `volume[i, j, k]` = column i, row j, slice k; `None` without position and orientation.
        name (`str`): the name outputs of the series get (`series<Series Number>`, or `series<n>` in folder order).
    """

    paths: List[Path]
    datasets: List[Dataset] = field(repr=False)
    ordered_by: str = "position"
    slice_spacing: Optional[float] = None
    affine: Optional[np.ndarray] = field(default=None, repr=False)
    name: str = "series"

    @property
    def folder(self) -> Path:
        """The folder the files share (their common parent), used as the series' path in reports."""
        return Path(os.path.commonpath([str(p.parent) for p in self.paths]))

    def __len__(self) -> int:
        return len(self.paths)


def _error(paths: Sequence[Path], message: str) -> MedicalImageError:
    names = ", ".join(f"'{p.name}'" for p in list(paths)[:6]) + (" ..." if len(paths) > 6 else "")
    return MedicalImageError(f"{names}: {message}")


def read_header(path: PathLike) -> Optional[Dataset]:
    """The header of a DICOM file without its pixel data, or `None` when it is not readable DICOM."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # not DICOM, truncated: left to the single-file reader, which says what is wrong
        return None


def _is_single_frame_image(ds: Dataset) -> bool:
    frames = ds.get("NumberOfFrames")
    return "Rows" in ds and "Columns" in ds and (frames is None or int(frames) == 1) and "SeriesInstanceUID" in ds


@dataclass
class SeriesFiles:
    """The files of one series as found in a folder, not yet ordered or checked (`order_series` does both).

    Attributes:
        name (`str`): the name its outputs get: `series<Series Number>` when the series in the folder have
            distinct numbers, else `series<n>` counted from 1 in folder order.
        paths (`list[Path]`): the files, in the order given.
        datasets (`list[pydicom.Dataset]`): their headers without pixel data (patient data: never log them).
    """

    name: str
    paths: List[Path]
    datasets: List[Dataset] = field(repr=False)

    def order(self) -> DicomSeries:
        """`order_series` of these files, named `name`."""
        return order_series(self.paths, self.datasets, name=self.name)


def group_dicom_series(paths: Sequence[PathLike]) -> Tuple[List[SeriesFiles], List[Path]]:
    """Gather single-frame DICOM files into series; everything else stays a file of its own.

    Only headers are read. Files are grouped by Series Instance UID; a group of two or more single-frame images
    that can be ordered (`_could_be_slices`: a position, or distinct Instance Numbers) is a series; a group of one,
    or of files with neither, stays single files, as do multi-frame files, NIfTI, ordinary images and files
    whose header cannot be read (their reader reports them). Order and check each series with
    `SeriesFiles.order()`, which raises for geometry that does not make one volume.

    Args:
        paths (`Sequence[str | os.PathLike]`): input files, e.g. `gms_hub.io.reading.list_input_files(folder)`.

    Returns:
        `tuple(list[SeriesFiles], list[Path])`: the series (in the order of their first file) and the other
        files (in the given order).

    Example:
        >>> series, others = group_dicom_series(list_input_files("study/"))
        >>> [(s.name, len(s.order())) for s in series]
        [('series2', 120), ('series3', 64)]
    """
    from .reading import detect_format

    groups: "OrderedDict[str, List[Tuple[int, Path, Dataset]]]" = OrderedDict()
    singles: List[Tuple[int, Path]] = []
    for index, path in enumerate(Path(p) for p in paths):
        ds = read_header(path) if detect_format(path) == "dicom" else None
        if ds is None or not _is_single_frame_image(ds):
            singles.append((index, path))
            continue
        groups.setdefault(str(ds.SeriesInstanceUID), []).append((index, path, ds))
    series: List[SeriesFiles] = []
    for members in groups.values():
        if len(members) == 1 or not _could_be_slices([ds for _, _, ds in members]):
            singles.extend(member[:2] for member in members)
        else:
            series.append(SeriesFiles("series", [p for _, p, _ in members], [d for _, _, d in members]))
    _name_series(series)
    return series, [path for _, path in sorted(singles, key=lambda item: item[0])]


def _could_be_slices(datasets: List[Dataset]) -> bool:
    """Whether files sharing a Series Instance UID can be ordered as slices: some carry Image Position (Patient),
    or their Instance Numbers differ. Files with neither (copies of one image, screenshots exported one by one)
    stay single files, each segmented on its own."""
    if any("ImagePositionPatient" in ds for ds in datasets):
        return True
    numbers = [ds.get("InstanceNumber") for ds in datasets]
    return None not in numbers and len({str(n) for n in numbers}) == len(numbers)


def _name_series(series: List[SeriesFiles]) -> None:
    """`series<Series Number>` when every series has a distinct one, else `series<n>` counted from 1."""
    numbers = [s.datasets[0].get("SeriesNumber") for s in series]
    distinct = all(n is not None and str(n).strip() for n in numbers) and len({str(n) for n in numbers}) == len(numbers)
    for index, (item, number) in enumerate(zip(series, numbers), start=1):
        item.name = f"series{int(number)}" if distinct else f"series{index}"


def _same(values: List[Any], tolerance: float = 0.0) -> bool:
    first = np.asarray(values[0], dtype=float)
    return all(np.asarray(v, dtype=float).shape == first.shape and np.allclose(v, first, atol=tolerance, rtol=0)
               for v in values[1:])


def _odd_ones(paths: List[Path], values: List[Any], tolerance: float = 0.0) -> List[Path]:
    """The files whose value differs from the first file's, with the first file leading."""
    first = np.asarray(values[0], dtype=float)
    odd = [p for p, v in zip(paths, values)
           if np.asarray(v, dtype=float).shape != first.shape or not np.allclose(v, first, atol=tolerance, rtol=0)]
    return [paths[0]] + odd


def order_series(
    paths: Sequence[PathLike], datasets: Optional[Sequence[Dataset]] = None, *, name: str = "series"
) -> DicomSeries:
    """Put the single-frame files of one series in spatial order and check that they make one volume.

    Args:
        paths (`Sequence[str | os.PathLike]`): the files of one series, in any order.
        datasets (`Sequence[pydicom.Dataset]`, *optional*): their headers, read (without pixels) when omitted.
        name (`str`, defaults to `"series"`): the name outputs of the series get.

    Returns:
        `DicomSeries`, first slice first.

    Raises:
        `MedicalImageError`: the files differ in size, pixel spacing or orientation, two lie at one position,
        slices are missing (a step larger than the others), or only some carry a position; the message names
        the files.

    Example:
        >>> series = order_series(sorted(Path("ct/").glob("*.dcm")))
        >>> series.ordered_by, series.slice_spacing
        ('position', 2.5)
    """
    paths = [Path(p) for p in paths]
    datasets = list(datasets) if datasets is not None else [read_header(p) for p in paths]
    unreadable = [p for p, d in zip(paths, datasets) if d is None]
    if unreadable:
        raise _error(unreadable, "not readable DICOM headers; remove them from the series or export them again.")
    sizes = [(int(d.Rows), int(d.Columns)) for d in datasets]
    if not _same(sizes):
        raise _error(_odd_ones(paths, sizes), f"one series holds frames of different sizes ({sorted(set(sizes))} "
                     "rows x columns); a volume needs one size. Put each size in its own folder.")
    spacings = [tuple(float(v) for v in d.PixelSpacing) if "PixelSpacing" in d else () for d in datasets]
    if not _same(spacings, 1e-6):
        raise _error(_odd_ones(paths, spacings, 1e-6), "the files of one series have different Pixel Spacing; a "
                     "volume needs one. Resample the series or segment the files one by one.")
    has_geometry = ["ImagePositionPatient" in d and "ImageOrientationPatient" in d for d in datasets]
    if not any(has_geometry):
        return _order_by_instance_number(paths, datasets, name)
    if not all(has_geometry):
        missing = [p for p, ok in zip(paths, has_geometry) if not ok]
        raise _error(missing, "these files lack Image Position/Orientation (Patient) while the rest of their "
                     "series has them, so their place in the volume is unknown. Export the series again.")
    orientations = [[float(v) for v in d.ImageOrientationPatient] for d in datasets]
    if not _same(orientations, ORIENTATION_TOLERANCE):
        raise _error(_odd_ones(paths, orientations, ORIENTATION_TOLERANCE), "the files of one series have "
                     "different Image Orientation (Patient) (a localizer or a reformatted plane mixed in?). Put "
                     "each orientation in its own folder.")
    row, col = np.asarray(orientations[0][:3]), np.asarray(orientations[0][3:])
    normal = np.cross(row, col)  # slice normal
    positions = np.asarray([[float(v) for v in d.ImagePositionPatient] for d in datasets])  # (F, 3)
    order = np.argsort(positions @ normal, kind="stable")
    paths, datasets, positions = [paths[i] for i in order], [datasets[i] for i in order], positions[order]
    spacing = _check_steps(paths, positions @ normal)
    affine = _affine(row, col, normal * spacing, positions[0], spacings[0])
    return DicomSeries(paths=paths, datasets=datasets, ordered_by="position", slice_spacing=spacing, affine=affine,
                       name=name)


def _check_steps(paths: List[Path], along: np.ndarray) -> float:
    """The slice spacing, once no two slices share a position and no slice is missing (even steps)."""
    steps = np.diff(along)  # (F - 1,), sorted ascending so >= 0
    duplicates = [(paths[i], paths[i + 1]) for i in np.flatnonzero(steps < 1e-3)]
    if duplicates:
        pairs = [p for pair in duplicates for p in pair]
        raise _error(pairs, f"{len(duplicates)} pair(s) of slices lie at the same position (duplicate files, or "
                     "two acquisitions in one series). Remove the duplicates or split the series.")
    smallest = float(steps.min())
    gaps = np.flatnonzero(steps > smallest * (1 + GAP_TOLERANCE))
    if gaps.size:
        i = int(gaps[0])
        raise _error([paths[i], paths[i + 1]], f"the step between these slices is {steps[i]:.3g} mm where the "
                     f"series steps by {smallest:.3g} mm: {len(gaps)} gap(s), slices are missing or the spacing is "
                     "uneven. Export the complete series.")
    return float(steps.mean())


def _affine(row: np.ndarray, col: np.ndarray, step: np.ndarray, origin: np.ndarray,
            pixel_spacing: Tuple[float, ...]) -> Optional[np.ndarray]:
    """The RAS affine of `volume[i, j, k]` (column i, row j, slice k)."""
    if len(pixel_spacing) != 2:
        return None
    row_spacing, col_spacing = pixel_spacing
    lps = np.eye(4)
    lps[:3, 0] = row * col_spacing  # along a row: the column index i grows
    lps[:3, 1] = col * row_spacing  # down a column: the row index j grows
    lps[:3, 2] = step
    lps[:3, 3] = origin
    return lps_to_ras(lps)


def lps_to_ras(affine: np.ndarray) -> np.ndarray:
    """DICOM's patient coordinates (LPS: x to the left, y to the back) to NIfTI's RAS: negate x and y.

    Example:
        >>> lps_to_ras(np.eye(4))[:3, :3].diagonal()
        array([-1., -1.,  1.])
    """
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=float)


def _order_by_instance_number(paths: List[Path], datasets: List[Dataset], name: str) -> DicomSeries:
    """The documented fallback: no file has a position, so Instance Number orders the slices."""
    numbers = [d.get("InstanceNumber") for d in datasets]
    if any(n is None for n in numbers) or len({int(n) for n in numbers}) != len(numbers):
        bad = [p for p, n in zip(paths, numbers) if n is None or numbers.count(n) > 1]
        raise _error(bad or paths, "the series has neither Image Position (Patient) nor distinct Instance Numbers, "
                     "so its slice order is unknown. Segment the files one by one or export the series again.")
    order = np.argsort([int(n) for n in numbers], kind="stable")
    logger.warning("%d files of one series carry no Image Position/Orientation (Patient); ordered by Instance "
                   "Number, slice spacing unknown (no mL).", len(paths))
    return DicomSeries(paths=[paths[i] for i in order], datasets=[datasets[i] for i in order],
                       ordered_by="instance_number", name=name)


def read_series(series: DicomSeries, *, window: Optional[Tuple[float, float]] = None) -> MedicalImage:
    """Open a DICOM series as one volume: frame k is slice k in spatial order, decoded on demand.

    Every slice goes through the single-file reader (`gms_hub.io.dicom.read_dicom`), so the intensity rules
    (rescale, window, MONOCHROME1) are those of a single file.

    Args:
        series (`DicomSeries`): from `group_dicom_series` or `order_series`.
        window (`tuple(float, float)`, *optional*): (center, width) overriding the files' own window.

    Returns:
        `MedicalImage` with `kind="dicom"`, `path` the series' folder, `shape` (slices, rows, columns), the RAS
        `affine`, `slice_spacing` and `datasets` (one header per frame, for the DICOM SEG).

    Example:
        >>> image = read_series(order_series(sorted(Path("ct/").glob("*.dcm"))))
        >>> image.num_frames, image.slice_spacing
        (120, 2.5)
    """
    from .dicom import pixel_spacing, read_dicom

    def read_batch(start: int, stop: int) -> List[np.ndarray]:
        frames = []
        for path in series.paths[start:stop]:
            image = read_dicom(path, window=window)
            if len(image.shape) != 3:
                raise _error([path], "a colour slice in a series; a volume is grayscale. Segment it on its own.")
            frames.append(image.frames[0])
        return frames

    first = series.datasets[0]
    return MedicalImage(
        path=series.folder / series.name, kind="dicom", frames=FrameSequence(len(series), read_batch),
        spacing=pixel_spacing(first), shape=(len(series), int(first.Rows), int(first.Columns)),
        affine=series.affine, dataset=first, slice_spacing=series.slice_spacing, datasets=list(series.datasets),
    )


def open_series(series: DicomSeries, *, window: Optional[Tuple[float, float]] = None, max_pixels: Optional[int] = None):
    """`read_series` wrapped as the `gms_hub.io.reading.InputFile` the predict CLI and `MaskWriter` take, with the
    frame size limits of `read_input`.

    Example:
        >>> scan = open_series(series)
        >>> scan.kind, scan.num_frames
        ('dicom', 120)
    """
    from .reading import DEFAULT_MAX_PIXELS, InputFile, _check_frame_size

    image = read_series(series, window=window)
    _check_frame_size(image, DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels)
    return InputFile(path=image.path, kind="dicom", frames=image.frames, value_range=image.value_range,
                     spacing=image.spacing, medical=image)


def write_series_nifti(masks: Union[np.ndarray, Sequence[np.ndarray]], reference: MedicalImage, path: PathLike) -> Path:
    """Write a DICOM series' masks as a uint8 NIfTI whose affine puts every voxel where its DICOM pixel lies.

    The array is stored as `volume[i, j, k]` = column i, row j, slice k (the layout of dcm2niix), with the RAS
    affine of `read_series`, so viewers overlay it on a NIfTI conversion of the same series.

    Args:
        masks (`np.ndarray` or sequence of `np.ndarray`): (slices, rows, columns) labels in spatial order.
        reference (`MedicalImage`): the series, from `read_series`.
        path (`str` or `os.PathLike`): the `.nii.gz` to write.

    Returns:
        `Path` of the written file.

    Example:
        >>> write_series_nifti(masks, image, "out/series2_mask.nii.gz")
        PosixPath('out/series2_mask.nii.gz')
    """
    import nibabel as nib

    if reference.affine is None:
        raise MedicalImageError(f"'{reference.path.name}': the series has no Image Position/Orientation (Patient), "
                                "so a NIfTI would have no geometry. Write PNG masks or a DICOM SEG instead.")
    array = check_masks(masks, reference, "write_series_nifti")  # (F, H, W)
    volume = np.ascontiguousarray(np.transpose(array, (2, 1, 0)))  # (W, H, F): column, row, slice
    image = nib.Nifti1Image(volume, reference.affine)
    image.set_qform(reference.affine, code=1)  # 1 = scanner coordinates
    image.set_sform(reference.affine, code=1)
    image.header.set_xyzt_units("mm")
    path = Path(path)
    from .safety import atomic_path

    with atomic_path(path) as temporary:  # the temporary name keeps `.nii.gz`, so nibabel still compresses
        nib.save(image, temporary)
    logger.info("Wrote a %s uint8 mask of a DICOM series to %s", volume.shape, path)
    return path
