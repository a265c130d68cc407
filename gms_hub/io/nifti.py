"""NIfTI in (nibabel, slices read one batch at a time) and NIfTI masks out, with the input's shape and affine."""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple, Union

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from .medical import FrameSequence, MedicalImage, MedicalImageError, PathLike, check_masks, normalise

logger = logging.getLogger(__name__)

RANGE_BATCH = 16  # slices per read while scanning the volume for its min..max


def _error(path: Path, message: str) -> MedicalImageError:
    return MedicalImageError(f"'{path.name}': {message}")


def _data_shape(path: Path, shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """Drop trailing singleton axes beyond the third (a (X, Y, Z, 1) file is a 3D volume); 4D+ is an error."""
    squeezed = tuple(shape)
    while len(squeezed) > 3 and squeezed[-1] == 1:
        squeezed = squeezed[:-1]
    if len(squeezed) > 3:
        raise _error(path, f"the image is {len(squeezed)}D {squeezed}; GMS segments 2D images and 3D volumes. "
                     "Extract one volume first, e.g. `nibabel.funcs.four_to_three` or `fslroi in out 0 1`.")
    if len(squeezed) < 2:
        raise _error(path, f"the image has shape {squeezed}; expected a 2D image or a 3D volume.")
    return squeezed


def read_nifti(
    path: PathLike, *, window: Optional[Tuple[float, float]] = None, slice_axis: int = -1
) -> MedicalImage:
    """Open a NIfTI image; slices are read on demand. See `gms_hub.io.reading.read_medical_image`.

    A 3D volume gives one frame per index along `slice_axis`, frame `k` being `data[..., k]` for the default
    last axis (rows follow the first remaining axis, as stored; no reorientation). Intensities use one range
    for the whole volume so slices stay comparable: `window` (center, width) maps center ± width/2 to 0..1,
    else the header's display range `cal_min..cal_max` when set, else the volume's min..max (found with one
    streamed pass). Scale factors (`scl_slope`, `scl_inter`) are applied; NaN voxels become 0.

    Args:
        path (`str` or `os.PathLike`): a `.nii` or `.nii.gz` file (NIfTI-1 or NIfTI-2).
        window (`tuple(float, float)`, *optional*): (center, width) in the image's units.
        slice_axis (`int`, defaults to -1): axis of a 3D volume to slice along.

    Returns:
        `MedicalImage` with `kind="nifti"`, its affine, header, shape and slice axis.

    Example:
        >>> image = read_nifti("ct.nii.gz", slice_axis=2)
        >>> image.num_frames, image.spacing
        (300, (0.7, 0.7))
    """
    path = Path(path)
    opened = _open_header(path)
    data_shape = _check_volume(path, opened)
    axis = _frame_axis(len(data_shape), slice_axis)
    num_frames = data_shape[axis] if axis is not None else 1
    slices = _Slices(path, opened, data_shape, axis, num_frames, window)
    return MedicalImage(
        path=path, kind="nifti", frames=FrameSequence(num_frames, slices.read_batch),
        spacing=_in_plane_spacing(opened.zooms, len(data_shape), axis), shape=opened.shape, affine=opened.affine,
        slice_axis=axis, header=opened.header,
        slice_spacing=opened.zooms[axis] if axis is not None and opened.zooms[axis] > 0 else None,
    )


class _Header(NamedTuple):
    image: Any  # nibabel image, voxels still on disk
    header: Any
    shape: Tuple[int, ...]
    dtype: np.dtype
    zooms: Tuple[float, ...]
    affine: np.ndarray


def _open_header(path: Path) -> _Header:
    """Read the header only (the voxels stay on disk), or say that it cannot be read."""
    try:
        image = nib.load(path, keep_file_open=True)  # an open gzip stream reads consecutive slabs without rewinding
        header = image.header
        return _Header(
            image=image, header=header, shape=tuple(int(s) for s in image.shape), dtype=header.get_data_dtype(),
            zooms=tuple(float(z) for z in header.get_zooms()), affine=np.asarray(image.affine, dtype=np.float64),
        )
    except (ImageFileError, HeaderDataError, ValueError, EOFError, OSError, zlib.error) as err:
        raise _error(path, f"the NIfTI header cannot be read ({type(err).__name__}: {err}). The file is corrupt or "
                     "not NIfTI; export it again (e.g. with dcm2niix or nibabel).") from None


def _check_volume(path: Path, opened: _Header) -> Tuple[int, ...]:
    """The data shape (`_data_shape`) once the file is known to be a complete, grayscale, non-empty NIfTI."""
    shape, dtype = opened.shape, opened.dtype
    if not isinstance(opened.image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise _error(path, f"nibabel reads it as {type(opened.image).__name__}, not NIfTI. Convert it to .nii.gz.")
    if dtype.fields is not None:
        raise _error(path, f"the voxels are of structured type {dtype} (RGB NIfTI); save a grayscale volume instead.")
    data_shape = _data_shape(path, shape)
    if 0 in data_shape:
        raise _error(path, f"the image has shape {shape}, with no voxels along one axis. Export a non-empty image.")
    if not str(path).lower().endswith(".gz"):
        needed = int(opened.header.get_data_offset()) + int(np.prod(shape)) * dtype.itemsize
        if path.stat().st_size < needed:
            raise _error(path, f"the file is truncated ({path.stat().st_size} of {needed} bytes). Export it again.")
    return data_shape


def _frame_axis(ndim: int, slice_axis: int) -> Optional[int]:
    """The axis frames are taken along: `slice_axis` (normalised) for a 3D volume, `None` for a 2D image."""
    if ndim != 3:
        return None
    if not -3 <= slice_axis <= 2:
        raise ValueError(f"slice_axis must be in -3..2 for a 3D volume, got {slice_axis}.")
    return slice_axis % 3


def _in_plane_spacing(zooms: Tuple[float, ...], ndim: int, axis: Optional[int]) -> Optional[Tuple[float, float]]:
    """(rows, columns) voxel size in mm of one frame, or `None` when the header's zooms are not positive."""
    in_plane = [a for a in range(ndim) if a != axis]
    spacing = (zooms[in_plane[0]], zooms[in_plane[1]])
    return spacing if all(z > 0 for z in spacing) else None


class _Slices:
    """Reads frames of an opened NIfTI on demand, mapped to [0, 1] with one intensity range for the volume."""

    def __init__(self, path: Path, opened: _Header, data_shape: Tuple[int, ...], axis: Optional[int],
                 num_frames: int, window: Optional[Tuple[float, float]]):
        self.path, self.header, self.shape, self.dataobj = path, opened.header, opened.shape, opened.image.dataobj
        self.data_shape, self.axis, self.num_frames, self.window = data_shape, axis, num_frames, window
        self.value_range: Optional[Tuple[float, float]] = None  # found on the first read

    def read_slab(self, start: int, stop: int) -> np.ndarray:
        """Frames start..stop-1 as float, (n, H, W)."""
        try:
            if self.axis is None:
                return np.asarray(self.dataobj, dtype=np.float64).reshape(self.data_shape)[None]
            index = [slice(None)] * len(self.shape)
            index[self.axis] = slice(start, stop)
            for extra in range(3, len(self.shape)):  # trailing singleton axes
                index[extra] = 0
            return np.moveaxis(np.asarray(self.dataobj[tuple(index)]), self.axis, 0)
        except (EOFError, OSError, ValueError, zlib.error) as err:
            detail = " ".join(str(err).split())
            raise _error(self.path, f"slices {start}..{stop - 1} cannot be read ({type(err).__name__}: {detail}); the "
                         "file is truncated or corrupt. Export it again.") from None

    def intensity_range(self) -> Tuple[float, float]:
        """`window`, else the header's `cal_min..cal_max` when set, else the volume's finite min..max."""
        if self.value_range is None:
            cal_min, cal_max = float(self.header.get("cal_min", 0)), float(self.header.get("cal_max", 0))
            if self.window is not None:
                lo, hi = self.window[0] - self.window[1] / 2.0, self.window[0] + self.window[1] / 2.0
            elif cal_max > cal_min:
                lo, hi = cal_min, cal_max
            else:
                lo, hi = self._scan_range()
            self.value_range = (lo, hi)
        return self.value_range

    def _scan_range(self) -> Tuple[float, float]:
        """The finite min..max of the whole volume, in one streamed pass (0..0 when nothing is finite)."""
        lo, hi = np.inf, -np.inf
        for start in range(0, self.num_frames, RANGE_BATCH):
            slab = self.read_slab(start, min(start + RANGE_BATCH, self.num_frames))
            finite = slab[np.isfinite(slab)]
            if finite.size:
                lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
        if lo > hi:
            lo = hi = 0.0
        return lo, hi

    def read_batch(self, start: int, stop: int) -> List[np.ndarray]:
        lo, hi = self.intensity_range()
        slab = self.read_slab(start, stop)
        return [np.nan_to_num(normalise(frame, lo, hi), nan=0.0) for frame in slab]


def read_nifti_labels(path: PathLike, *, slice_axis: int = -1) -> np.ndarray:
    """The stored values of a NIfTI label image (a mask), one (H, W) array per slice, sliced as `read_nifti` slices.

    No intensity rule applies (labels are labels); scale factors do, and the values must then be integers.

    Args:
        path (`str` or `os.PathLike`): a `.nii` or `.nii.gz` mask.
        slice_axis (`int`, defaults to -1): axis of a 3D volume to slice along (that of its image).

    Returns:
        `np.ndarray` (num_frames, H, W) of the stored integer dtype (int64 where the file stores floats).

    Example:
        >>> read_nifti_labels("ct_mask.nii.gz").shape  # frame k lies on frame k of read_nifti("ct.nii.gz")
        (300, 512, 512)
    """
    path = Path(path)
    image = read_nifti(path, slice_axis=slice_axis)  # the header checks and the slicing rule of the image reader
    try:
        data = np.asanyarray(nib.load(path).dataobj).reshape(_data_shape(path, image.shape))
    except (EOFError, OSError, ValueError, zlib.error) as err:
        raise _error(path, f"the voxels cannot be read ({type(err).__name__}); the file is truncated or corrupt. "
                     "Export it again.") from None
    frames = data[None] if image.slice_axis is None else np.moveaxis(data, image.slice_axis, 0)  # (F, H, W)
    if frames.dtype.kind == "f":
        if not np.array_equal(frames, np.round(frames)):
            raise _error(path, "the mask holds non-integer values; a mask holds class values (0 = background).")
        frames = frames.astype(np.int64)
    return frames


def write_nifti_mask(
    masks: Union[np.ndarray, Sequence[np.ndarray]], reference: MedicalImage, path: PathLike
) -> Path:
    """Write masks as a uint8 NIfTI with the reference's shape, affine and header geometry.

    The per-frame masks are stacked back along the reference's slice axis, so a 3D input gives a 3D mask and
    voxel (i, j, k) of the mask lies on voxel (i, j, k) of the input.

    Args:
        masks (`np.ndarray` or sequence of `np.ndarray`): (num_frames, H, W) label maps in frame order.
        reference (`MedicalImage`): the NIfTI image the masks were predicted from.
        path (`str` or `os.PathLike`): output `.nii`/`.nii.gz` file, or a folder to write `<name>_mask.nii.gz` into.

    Returns:
        `Path` of the written file.

    Example:
        >>> write_nifti_mask(masks, image, "out/")
        PosixPath('out/ct_mask.nii.gz')
    """
    if reference.kind != "nifti" or reference.header is None:
        raise ValueError(f"A NIfTI mask needs a NIfTI reference; '{reference.path.name}' is {reference.kind}. "
                         "Write PNG masks or a DICOM SEG instead.")
    array = check_masks(masks, reference, "write_nifti_mask")  # (F, H, W)
    if reference.slice_axis is None:
        volume = array[0]
    else:
        volume = np.moveaxis(array, 0, reference.slice_axis)
    if int(np.prod(volume.shape)) != int(np.prod(reference.shape)):
        raise ValueError(f"Masks stack to {volume.shape} but '{reference.path.name}' is {reference.shape}; "
                         "write one mask per frame at the frame's size.")
    volume = np.ascontiguousarray(volume).reshape(reference.shape)
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    header["cal_min"], header["cal_max"] = 0, 0
    header.set_slope_inter(1.0, 0.0)
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    output = image_class(volume, reference.affine, header=header)
    path = Path(path)
    if path.is_dir():
        path = path / f"{reference.name}_mask.nii.gz"
    from .safety import atomic_path

    with atomic_path(path) as temporary:  # the temporary name keeps `.nii.gz`, so nibabel still compresses
        nib.save(output, temporary)
    logger.info("Wrote a %s uint8 mask to %s", volume.shape, path)
    return path
